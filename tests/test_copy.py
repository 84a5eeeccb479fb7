"""The copy head (model.copy=true): a pointer over the question's tokens mixed into the LM head.

Its step scores are the mixture's log-probabilities, which every consumer of step scores reads
through a log_softmax (beam search, the cross-entropies) or a softmax (the reference decoder):
these tests check the mixture is a distribution, what it reduces to at either end of the gate, that
it learns to copy tokens the LM head never produced, and that a checkpoint keeps it. That the KV
cache gives the same scores with it: tests/test_model.py and tests/test_decoding.py (copy-head ids).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cli import run_cli
from kgqa.build import restore
from kgqa.checkpoints import load_checkpoint
from kgqa.model import UniLM, build_backbone, trie_cross_entropy
from kgqa.trusted import CONF
from test_model import ARCHS, batch, make_model
from test_workflow import SMALL_TOY

ROWS = [(5, 4), (2, 3), (7, 5), (4, 0)]  # (question, target) lengths; 2: "[CLS] [SEP]", nothing to copy


def lm_head_only(model: UniLM) -> UniLM:
    """The same weights without the copy head: its forward gives the LM head's logits."""
    plain = UniLM(model.backbone).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("copy_head.")})
    return plain


def set_gate(model: UniLM, bias: float) -> None:
    with torch.no_grad():
        model.copy_head.gate.weight.zero_()
        model.copy_head.gate.bias.fill_(bias)


@pytest.mark.parametrize("arch", ARCHS)
def test_mixture_is_a_distribution_between_the_lm_head_and_the_pointer(arch):
    model = make_model(arch, copy=True)
    ids, seg, valid = batch(ROWS)
    with torch.no_grad():
        scores, logits = model(ids, seg, valid), lm_head_only(model)(ids, seg, valid)
    at = valid & (seg == 1)
    torch.testing.assert_close(scores.exp().sum(-1)[valid], torch.ones(int(valid.sum())), atol=1e-5, rtol=0)
    assert (scores[at] - F.log_softmax(logits[at], -1)).abs().amax() > 0.1  # the pointer takes part
    empty = 1  # the row whose question has nothing to copy: the LM head alone
    torch.testing.assert_close(scores[empty][at[empty]], F.log_softmax(logits[empty][at[empty]], -1))

    set_gate(model, 100.0)  # g = 1: softmax of the logits
    with torch.no_grad():
        torch.testing.assert_close(model(ids, seg, valid)[at], F.log_softmax(logits[at], -1), atol=1e-5, rtol=0)

    set_gate(model, -100.0)  # g = 0: the pointer alone, all on the question's tokens but [CLS] and [SEP]
    with torch.no_grad():
        probs = model(ids, seg, valid).exp()
    for b, (q, t) in enumerate(ROWS):
        if q > 2 and t:
            copied = ids[b, 1 : q - 1].unique()
            torch.testing.assert_close(probs[b, q - 1 : q + t, copied].sum(-1), torch.ones(t + 1), atol=1e-5, rtol=0)


def test_mixture_is_finite_with_finite_gradients_in_bfloat16():
    """Under bf16 autocast the mixture is still computed in float32: a distribution, and training
    (the cross-entropy over it, with label smoothing, which reads every token's score) gets finite gradients."""
    model = make_model("roformer", copy=True).train()
    ids, seg, valid = batch(ROWS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model(ids, seg, valid)
        loss = model.loss(ids, seg, valid, label_smoothing=0.1)
    assert scores.dtype == torch.float32 and scores[valid].isfinite().all()
    torch.testing.assert_close(scores.exp().sum(-1)[valid], torch.ones(int(valid.sum())), atol=1e-4, rtol=0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(g.isfinite().all() for g in grads) and model.copy_head.gate.weight.grad.abs().sum() > 0


def test_trie_loss_renormalises_the_mixture_over_the_allowed_tokens():
    """trie_cross_entropy takes the copy head's log-probabilities as it takes logits: −log of the target's
    mixture probability over the allowed tokens' total."""
    model = make_model("bert", copy=True)
    ids, seg, valid = batch(ROWS)
    at = (seg[:, 1:] == 1) & valid[:, 1:]
    with torch.no_grad():
        scores = model(ids, seg, valid)[:, :-1][at]
    probs, targets = scores.exp(), ids[:, 1:][at]
    positions = torch.arange(len(targets))
    others = torch.randint(4, probs.shape[1], (len(targets), 3), generator=torch.Generator().manual_seed(0))
    allowed = torch.cat([torch.stack([positions, targets], 1), torch.stack([positions.repeat_interleave(3), others.ravel()], 1)])
    mask = torch.zeros_like(probs, dtype=torch.bool)
    mask[allowed[:, 0], allowed[:, 1]] = True
    expected = -(probs[positions, targets] / (probs * mask).sum(-1)).log().mean()
    torch.testing.assert_close(trie_cross_entropy(scores, targets, allowed), expected)


# --- learning to copy ------------------------------------------------------------------------
CLS, SEP = 1, 2
SEEN, UNSEEN = range(4, 34), range(34, 64)  # tokens of the training questions, of the held-out ones
CONTENT, SPAN = 6, slice(2, 5)  # question tokens; the target copies these of them, then [SEP]


def copy_task(tokens: range, n: int, g: torch.Generator):
    """Rows "[CLS] x1..x6 [SEP] x3 x4 x5 [SEP]" of random tokens: ids, segments, valid."""
    content = torch.tensor(tokens)[torch.randint(len(tokens), (n, CONTENT), generator=g)]
    target = torch.cat([content[:, SPAN], torch.full((n, 1), SEP)], 1)
    ids = torch.cat([torch.full((n, 1), CLS), content, torch.full((n, 1), SEP), target], 1)
    seg = torch.cat([torch.zeros(n, CONTENT + 2, dtype=torch.long), torch.ones_like(target)], 1)
    return ids, seg, torch.ones_like(ids, dtype=torch.bool)


def teacher_forced_accuracy(model: UniLM, rows) -> float:
    ids, seg, valid = rows
    with torch.no_grad():
        predicted = model(ids, seg, valid)[:, :-1].argmax(-1)
    target = seg[:, 1:] == 1
    return (predicted[target] == ids[:, 1:][target]).float().mean().item()


def train_on_copy_task(copy: bool) -> tuple[float, float]:
    """A 1-layer BERT trained 150 steps on SEEN tokens: accuracy on fresh SEEN rows and on UNSEEN rows."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    backbone = build_backbone("bert", 64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = UniLM(backbone, copy=copy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(*copy_task(SEEN, 32, g)).backward()
        optimizer.step()
    model.eval()
    return teacher_forced_accuracy(model, copy_task(SEEN, 200, g)), teacher_forced_accuracy(model, copy_task(UNSEEN, 200, g))


def test_copy_head_copies_tokens_never_seen_as_targets():
    """The answer is a piece of the question made of tokens no training row holds: the LM head alone
    learns the training rows but on held-out rows gets only the final [SEP] (a quarter of the
    targets); the copy head points at the span and gets them."""
    seen, unseen = train_on_copy_task(copy=False)
    assert seen >= 0.9 and unseen <= 0.3
    _, unseen = train_on_copy_task(copy=True)
    assert unseen >= 0.9


# --- checkpoints -----------------------------------------------------------------------------
def test_checkpoint_restores_its_copy_head(tmp_path):
    """kgqa.build.restore (what kgqa-eval and kgqa-predict load through) re-creates the copy head from the
    run's config in the checkpoint, with its trained weights, though the eval config says nothing of it."""
    run_dir = tmp_path / "run"
    run_cli("train", "model.copy=true", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", "logger=csv",
            "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
            *SMALL_TOY, f"hydra.run.dir={run_dir}")
    eval_cfg = OmegaConf.create({"ckpt": str(run_dir), "decode": OmegaConf.load(CONF / "decode" / "beam.yaml")})
    cfg, _, module = restore(str(run_dir), eval_cfg)
    assert cfg.model["copy"] is True and cfg.factors["copy"] is True  # (cfg.model.copy is DictConfig's method)
    assert module.model.copy_head is not None
    saved = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["state_dict"]
    head = {k: v for k, v in saved.items() if ".copy_head." in k}
    assert head and all(torch.equal(module.state_dict()[k], v) for k, v in head.items())
