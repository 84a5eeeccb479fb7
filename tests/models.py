"""Real models with known preferences, for tests that need a decoder to favour certain tokens."""
from __future__ import annotations

import torch

from kgqa.model import UniLM, build_backbone

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def unigram_unilm(vocab_size: int, log_probs: dict[int, float], arch: str = "roformer") -> UniLM:
    """A real UniLM whose next-token scores are lm_bias whatever the input: token → given value, others 0.

    transform = Linear → GELU → LayerNorm: with the Linear zeroed, GELU(0) = 0 and the LayerNorm
    of a zero vector is its bias (0), so logits = 0 · E^T + lm_bias = lm_bias.
    """
    torch.manual_seed(0)
    model = UniLM(build_backbone(arch, vocab_size, **TINY)).eval()
    with torch.no_grad():
        model.transform[0].weight.zero_()
        model.transform[0].bias.zero_()
        model.lm_bias.zero_()
        for token, value in log_probs.items():
            model.lm_bias[token] = value
    return model
