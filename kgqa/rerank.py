"""A reranker over the final beam (rerank=beam): the beam often holds the gold key below a look-alike (the
headroom is the `oracle` metric beside EM); a cross-encoder that reads the question with each complete key
and its object, both ways at once, can tell them apart where the left-to-right decoder could not.

It is the run's own trained backbone with a scoring head, plus a learned weight on the beam's log-probability,
trained after the fit, listwise (a softmax over one question's beam, its gold key the target), on the
model's own beams over its training questions. It only reorders the beam: every answer is still a KB key.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kgqa.checkpoints import load_checkpoint, load_weights
from kgqa.data.kgclue import QAExample
from kgqa.data.tokenizer import Tokenizer, encode_parts, encode_question
from kgqa.data.triples import Key
from kgqa.errors import CheckpointError
from kgqa.files import atomic_output
from kgqa.model import ARCHITECTURES, unilm_attention_mask

log = logging.getLogger(__name__)
RERANKER_FILE = "reranker.pt"  # beside a run's best.ckpt
Candidate = tuple[Key, str, float]  # a beam's complete key, its object and its log-probability under the beam


def candidates(answers: Sequence) -> list[Candidate]:
    """A question's answers (kgqa.decoding.answerer.Answer) as the reranker reads them."""
    return [(a.triple.key, a.triple.obj, math.log(max(a.confidence, 1e-30))) for a in answers]


class BeamReranker(nn.Module):
    """score(question, key) = head(encoder([CLS] question [SEP] key parts… object [SEP])[CLS]) + w · beam log-prob."""

    def __init__(self, backbone: nn.Module, beam_score: bool = True):
        """`beam_score`: false fixes w at 0, the text alone ranks (ties keep the beam's order)."""
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        self.beam_weight = nn.Parameter(torch.tensor(float(beam_score)), requires_grad=beam_score)

    def forward(self, input_ids: torch.Tensor, segment_ids: torch.Tensor, valid: torch.Tensor,
                beam_log_probs: torch.Tensor) -> torch.Tensor:
        dtype = self.backbone.get_input_embeddings().weight.dtype
        mask = unilm_attention_mask(torch.zeros_like(segment_ids), valid, dtype)  # bidirectional over the pair
        hidden = self.backbone(input_ids=input_ids, token_type_ids=segment_ids, attention_mask=mask,
                               use_cache=False).last_hidden_state
        return self.head(hidden[:, 0]).squeeze(-1).float() + self.beam_weight * beam_log_probs


class Reranker:
    """What decoding needs to rerank a beam: the network, and how to spell a (question, key) pair for it."""

    def __init__(self, net: BeamReranker, tokenizer: Tokenizer, order: str, max_question_len: int,
                 max_object_len: int = 32, batch_size: int = 64):
        self.net, self.tokenizer, self.order = net, tokenizer, order
        self.max_question_len, self.max_object_len, self.batch_size = max_question_len, max_object_len, batch_size

    def encode(self, question: str, candidate: Candidate) -> tuple[list[int], list[int]]:
        """The pair's tokens and segments (0: the question, 1: the key and its object)."""
        key, obj, _ = candidate
        first = encode_question(self.tokenizer, question, self.max_question_len)
        second = encode_parts(self.tokenizer, (*key.parts(self.order), obj[: self.max_object_len]))
        return first + second, [0] * len(first) + [1] * len(second)

    def batch(self, questions: Sequence[str], lists: Sequence[Sequence[Candidate]]) -> dict[str, torch.Tensor]:
        """Every candidate of every list as one row, right-padded."""
        pairs = [self.encode(q, c) for q, cands in zip(questions, lists) for c in cands]
        width = max(len(ids) for ids, _ in pairs)
        ids = torch.full((len(pairs), width), self.tokenizer.pad_id, dtype=torch.long)
        segments = torch.zeros_like(ids)
        for row, (tokens, segs) in enumerate(pairs):
            ids[row, : len(tokens)], segments[row, : len(segs)] = torch.tensor(tokens), torch.tensor(segs)
        return {"input_ids": ids, "segment_ids": segments, "valid": ids != self.tokenizer.pad_id,
                "beam_log_probs": torch.tensor([c[2] for cands in lists for c in cands], dtype=torch.float)}

    @torch.no_grad()
    def scores(self, questions: Sequence[str], lists: Sequence[Sequence[Candidate]]) -> list[list[float]]:
        """Each list's candidates' scores, in their order."""
        self.net.eval()
        device = next(self.net.parameters()).device
        out: list[list[float]] = []
        for start in range(0, len(questions), self.batch_size):
            qs, ls = questions[start : start + self.batch_size], lists[start : start + self.batch_size]
            flat = self.net(**{k: v.to(device) for k, v in self.batch(qs, ls).items()}).tolist()
            for cands in ls:
                out.append(flat[: len(cands)])
                flat = flat[len(cands):]
        return out

    def rerank(self, questions: Sequence[str], answers: list[list]) -> None:
        """Reorders each question's answers (kgqa.decoding.answerer.Answer) in place by score, best first;
        each answer's confidence becomes its share of the softmax over its beam."""
        lists = [candidates(per_question) for per_question in answers]
        kept = [i for i, cands in enumerate(lists) if cands]
        for i, scored in zip(kept, self.scores([questions[i] for i in kept], [lists[i] for i in kept])):
            probs = torch.softmax(torch.tensor(scored), 0).tolist()
            ranked = sorted(range(len(scored)), key=lambda j: -scored[j])
            answers[i][:] = [replace(answers[i][j], confidence=probs[j]) for j in ranked]


def beam_lists(answerer, model, examples: Sequence[QAExample]) -> tuple[list[str], list[list[Candidate]], list[int]]:
    """The training lists: each question's beam from `answerer` (its whole beam returned) with the gold
    key's place in it; questions whose beam lacks the gold key, or holds one key only, teach nothing and
    are left out (their count is logged)."""
    answers = answerer(model, [e.question for e in examples])
    questions, lists, labels = [], [], []
    for e, per_question in zip(examples, answers):
        keys = [a.triple.key for a in per_question]
        if len(keys) >= 2 and e.triple.key in keys:
            questions.append(e.question)
            lists.append(candidates(per_question))
            labels.append(keys.index(e.triple.key))
    log.info("reranker: %d training lists of %d questions (the others' beams lack the gold key or hold one key)",
             len(lists), len(examples))
    return questions, lists, labels


class RerankerFit(L.LightningModule):
    """Lightning's loop over the lists: cross-entropy of each list's scores against its gold key's place."""

    def __init__(self, reranker: Reranker, lr: float):
        super().__init__()
        self.net, self.reranker, self.lr = reranker.net, reranker, lr

    def training_step(self, batch: tuple[dict, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, present, labels = batch
        scores = torch.full(present.shape, float("-inf"), device=present.device)
        scores = scores.masked_scatter(present, self.net(**inputs))
        loss = F.cross_entropy(scores, labels)
        self.log("rerank/loss", loss, batch_size=len(labels), prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr)

    def collate(self, items: list[tuple[str, list[Candidate], int]]) -> tuple[dict, torch.Tensor, torch.Tensor]:
        questions, lists, labels = zip(*items)
        width = max(len(c) for c in lists)
        present = torch.tensor([[j < len(c) for j in range(width)] for c in lists])
        return self.reranker.batch(questions, lists), present, torch.tensor(labels)


def fit_reranker(reranker: Reranker, questions: list[str], lists: list[list[Candidate]], labels: list[int],
                 epochs: int, lr: float, batch_size: int, accelerator: str = "cpu", seed: int = 0) -> None:
    """Trains `reranker.net` on the lists with a Lightning Trainer of its own (one device)."""
    reranker.net.train()  # scores() leaves it in eval mode
    fit = RerankerFit(reranker, lr)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(list(zip(questions, lists, labels)), batch_size=batch_size, shuffle=True,
                        collate_fn=fit.collate, generator=generator)
    trainer = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(fit, loader)
    reranker.net.cpu()


def new_reranker(model, tokenizer: Tokenizer, order: str, max_question_len: int, max_object_len: int,
                 beam_score: bool = True) -> Reranker:
    """A reranker on a copy of the seq2seq model's trained backbone."""
    backbone = copy.deepcopy(model.backbone).cpu().train().requires_grad_(True)
    return Reranker(BeamReranker(backbone, beam_score), tokenizer, order, max_question_len, max_object_len)


def save_reranker(reranker: Reranker, path: str | Path) -> None:
    """The network's weights and its backbone's config (JSON), written aside and renamed: no pickle."""
    config = reranker.net.backbone.config
    state = {"state_dict": reranker.net.state_dict(), "arch": config.model_type,
             "backbone_config": config.to_json_string(), "order": reranker.order,
             "max_object_len": reranker.max_object_len}
    with atomic_output(path, "wb") as f:
        torch.save(state, f)


def load_reranker(path: str | Path, tokenizer: Tokenizer, max_question_len: int) -> Reranker:
    """A reranker saved by save_reranker (loaded with weights_only=True), for `tokenizer`."""
    state = load_weights(path)
    if not isinstance(state, dict) or state.get("arch") not in ARCHITECTURES or "state_dict" not in state:
        raise CheckpointError(f"{path} is not a kgqa reranker (rerank=beam saves one in a run's checkpoints/)")
    config_cls, model_cls = ARCHITECTURES[state["arch"]]
    backbone = model_cls(config_cls.from_dict(json.loads(state["backbone_config"])),
                         **({"add_pooling_layer": False} if state["arch"] == "bert" else {}))
    net = BeamReranker(backbone)
    net.load_state_dict(state["state_dict"])
    return Reranker(net.eval(), tokenizer, state["order"], max_question_len, state["max_object_len"])


def rerank_after_fit(module, dm, settings, best: str, lookahead, path: Path, accelerator: str, seed: int) -> Reranker:
    """rerank=beam in kgqa-train: the best weights' whole beams with the run's rule (`lookahead`) over (at
    most `settings.questions` of) the training questions, a reranker trained on them (conf/rerank/) and
    saved at `path`."""
    module.load_state_dict(load_checkpoint(best)["state_dict"])
    module.use_decoding(dm, "", lookahead)
    examples = list(dm.train_examples)
    if settings.get("questions") and len(examples) > settings["questions"]:
        drawn = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))[: settings["questions"]]
        examples = [examples[i] for i in sorted(drawn.tolist())]
    module.eval()
    with torch.no_grad():
        questions, lists, labels = beam_lists(module.answerer, module.model, examples)
    reranker = new_reranker(module.model, dm.tokenizer, dm.target, dm.max_question_len, settings["max_object_len"],
                            settings.get("beam_score", True))
    if lists:
        fit_reranker(reranker, questions, lists, labels, settings["epochs"], settings["lr"], settings["batch_size"],
                     accelerator, seed)
    save_reranker(reranker, path)
    return reranker
