"""UniLM seq2seq on a transformers encoder.

One encoder reads "[CLS] question [SEP] target": attention is bidirectional over the
question (segment 0) and causal over the target (segment 1); an LM head tied to the
input embeddings predicts each next target token.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedModel, RoFormerConfig, RoFormerModel

ARCHITECTURES = {"bert": (BertConfig, BertModel), "roformer": (RoFormerConfig, RoFormerModel)}


def build_backbone(arch: str, vocab_size: int, pretrained: str | None = None, **size) -> PreTrainedModel:
    """A randomly initialised encoder of the given size, or pretrained weights via from_pretrained."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    config_cls, model_cls = ARCHITECTURES[arch]
    no_pooler = {"add_pooling_layer": False} if arch == "bert" else {}  # the pooler is unused
    if pretrained:
        return model_cls.from_pretrained(pretrained, trust_remote_code=False, **no_pooler)
    if arch == "roformer":
        size.setdefault("embedding_size", size["hidden_size"])
    config = config_cls(vocab_size=vocab_size, type_vocab_size=2, **size)
    return model_cls(config, **no_pooler)


def unilm_attention_mask(segment_ids: torch.Tensor, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, T, T] mask: 0 where query i may attend key j, -inf elsewhere.

    transformers 5 encoders take a 4D float mask as is; a 3D mask raises and a 4D bool
    mask is read differently by some attention implementations (eager RoFormer).
    """
    T = segment_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    is_target = segment_ids.bool()
    allowed = ~is_target[:, None, :] | (is_target[:, :, None] & causal)  # key in question, or causal within target
    allowed &= valid[:, None, :]
    allowed |= torch.eye(T, dtype=torch.bool, device=segment_ids.device)  # padding rows see themselves: no NaN
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))[:, None]


class UniLM(nn.Module):
    def __init__(self, backbone: PreTrainedModel):
        super().__init__()
        self.backbone = backbone
        cfg = backbone.config
        width = backbone.get_input_embeddings().embedding_dim
        self.transform = nn.Sequential(nn.Linear(cfg.hidden_size, width), nn.GELU(), nn.LayerNorm(width, eps=cfg.layer_norm_eps))
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self._takes_positions = "position_ids" in inspect.signature(backbone.forward).parameters

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V]. Padding may sit anywhere (left-padded questions at decode time):
        absolute positions count valid tokens only; rotary ones are shift-invariant."""
        embeddings = self.backbone.get_input_embeddings()
        mask = unilm_attention_mask(segment_ids, valid, embeddings.weight.dtype)
        extra = {"position_ids": (valid.long().cumsum(-1) - 1).clamp(min=0)} if self._takes_positions else {}
        hidden = self.backbone(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=mask, **extra).last_hidden_state
        return F.linear(self.transform(hidden), embeddings.weight, self.lm_bias)

    def loss(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Teacher-forced cross-entropy on target tokens only (each predicts the next)."""
        logits = self(input_ids, segment_ids, valid)[:, :-1]
        predicts_target = (segment_ids[:, 1:] == 1) & valid[:, 1:]
        return F.cross_entropy(logits[predicts_target], input_ids[:, 1:][predicts_target], label_smoothing=label_smoothing)
