"""The quick repair (kgqa-repair): a trained run's model fine-tuned on corrections, keeping what it got right.

Three mechanisms, each a setting of conf/repair.yaml:
- replay: the corrections are mixed with the parent's own training pairs;
- distillation (`RepairModule`, model.distill): the replayed pairs also hold the model to the parent's step
  distributions over the tokens the trie allows (the choices decoding makes), so a change the corrections do
  not ask for costs loss;
- training until fixed (`CorrectionsFixed` with Lightning's EarlyStopping): the corrections are decoded
  after each epoch, and the repair stops once the share `stop_at` of them is answered right.
"""
from __future__ import annotations

import copy

import lightning as L
import numpy as np
import torch

from kgqa.data.kgclue import QAExample
from kgqa.data.triples import Triple
from kgqa.model import UniLM, in_vocabulary
from kgqa.module import KgqaModule

CORRECTION_ID = "correction/"  # the id prefix of a correction's training pair


def repair_pairs(corrections, kb, train: list[QAExample], replay: int, seed: int) -> list[QAExample]:
    """The corrections as training pairs, and `replay` of the parent's training pairs per correction."""
    pairs = [QAExample(f"{CORRECTION_ID}{i}", c.question, Triple(c.key, kb.answer(kb.key_id(c.key))))
             for i, c in enumerate(corrections)]
    drawn = np.random.default_rng(seed).choice(len(train), size=min(len(train), replay * len(pairs)), replace=False)
    return pairs + [train[i] for i in drawn.tolist()]


def allowed_kl(parent: torch.Tensor, student: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """The mean over positions of KL(parent ‖ student) of step scores [N, V], each renormalised over the
    position's allowed tokens (`allowed`: (position, token) pairs; None: every token)."""
    mask = torch.ones_like(parent, dtype=torch.bool)
    if allowed is not None:
        mask = torch.zeros_like(mask)
        mask[allowed[:, 0], allowed[:, 1]] = True
    keep = mask.any(1)
    mask, parent, student = mask[keep], parent[keep].float(), student[keep].float()
    p = torch.log_softmax(parent.masked_fill(~mask, float("-inf")), -1)
    q = torch.log_softmax(student.masked_fill(~mask, float("-inf")), -1)
    return torch.where(mask, p.exp() * (p - q), 0.0).sum() / max(len(p), 1)


class RepairModule(KgqaModule):
    """KgqaModule whose training, with `distill` > 0, adds KL(parent ‖ model) on the replayed pairs (weight
    `distill`) to the gold keys' loss. (Replaying the KL alone, without the replayed gold keys, fixed more
    corrections but broke more right answers: experiments/RESULTS.md.) The parent is the model as loaded,
    copied when the fit starts."""

    def __init__(self, *args, distill: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.parent: tuple[UniLM, ...] = ()  # a tuple: not a submodule, so neither trained nor saved
        self.datamodule = None  # the KgqaDataModule training batches come from

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.datamodule = self.trainer.datamodule

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.hparams.distill:
            self.parent = (copy.deepcopy(self.model).eval().requires_grad_(False),)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        replayed = [e for e in batch["examples"] if not str(e.id).startswith(CORRECTION_ID)]
        if self.parent and replayed:
            kl = self.parent_kl(self.batch_of(replayed))
            self.log("train/parent_kl", kl, batch_size=len(replayed))
            loss = loss + self.hparams.distill * kl
        return loss

    def batch_of(self, examples: list[QAExample]) -> dict:
        return self.datamodule.transfer_batch_to_device(self.datamodule.train_collate(examples), self.device, 0)

    def parent_kl(self, batch: dict) -> torch.Tensor:
        """KL(parent ‖ model) at the target positions, over the tokens the trie allows there."""
        inputs = (batch["input_ids"], batch["segment_ids"], batch["valid"])
        student = self.model.target_scores(*inputs)[0]
        with torch.no_grad():
            parent = self.parent[0].target_scores(*inputs)[0]
        allowed = batch.get("allowed")
        if self.loss_vocabulary is not None:
            student, parent = student[:, self.loss_vocabulary], parent[:, self.loss_vocabulary]
            if allowed is not None:
                allowed = torch.stack([allowed[:, 0], in_vocabulary(self.loss_vocabulary, allowed[:, 1])], 1)
        return allowed_kl(parent, student, allowed)


class CorrectionsFixed(L.Callback):
    """After each training epoch, decodes the corrected questions and logs `repair/fixed`, the share answered
    with their corrected key (Lightning's EarlyStopping ends the repair on it)."""

    def __init__(self, corrections, kb):
        self.questions = [c.question for c in corrections]
        self.keys = [kb.key_id(c.key) for c in corrections]

    def on_train_epoch_end(self, trainer: L.Trainer, module: KgqaModule) -> None:
        module.eval()
        with torch.no_grad():
            answers = module.answerer(module.model, self.questions)
        module.train()
        fixed = sum(bool(a) and a[0].key_id == k for a, k in zip(answers, self.keys)) / max(len(self.keys), 1)
        module.log("repair/fixed", fixed, batch_size=len(self.keys))


class AnchorToParent(L.Callback):
    """L2-SP: each step also pulls every weight back toward the parent's, by `strength` × (w − w_parent) added
    to its gradient, so weights the corrections do not need stay where the parent had them (less churn)."""

    def __init__(self, strength: float):
        self.strength, self.parent = strength, {}

    def on_fit_start(self, trainer, module) -> None:
        self.parent = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        for name, p in module.named_parameters():
            if p.grad is not None and name in self.parent:
                p.grad.add_(p.detach() - self.parent[name], alpha=self.strength)
