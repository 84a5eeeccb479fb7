"""The LightningModule: teacher-forced training, trie-constrained decoding for val/test.

Training runs question → tokens → UniLM against the gold key; val/test run the whole arrow
question → … → beam → key id → KB → answer through an Answerer from kgqa.decoding.answerer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.loggers import WandbLogger
from torchmetrics import SumMetric
from transformers import get_linear_schedule_with_warmup

from kgqa.decoding.answerer import Answerer, answerer_from_config
from kgqa.calibration import expected_calibration_error, write_calibration
from kgqa.files import write_text
from kgqa.metrics import KgclueMetric, exact_match
from kgqa.exposure import model_tokens, read_with_replacements, sibling_tokens, symmetric_kl, teaforn_loss
from kgqa.model import UniLM, build_backbone, load_pretrained_head, target_positions, teacher_forced_loss
from kgqa.rerank import Reranker

WRONG_ANSWER_COLUMNS = ["question", "gold", "predicted", "confidence", "from_memory"]
QUESTION_COLUMNS = ["id", "predicted", "correct", "confidence"]  # one row per question, for paired comparisons


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float):
    """The learning rate rises linearly over the first `warmup` share of the steps, then falls linearly to 0."""
    return get_linear_schedule_with_warmup(optimizer, int(warmup * total_steps), total_steps)


def optimizer_and_schedule(module: L.LightningModule, optim: dict, scheduler: dict) -> dict:
    """Lightning's configure_optimizers answer: `optim` (conf/optim/) over the module's parameters, no weight
    decay on biases and norms, and `scheduler` (conf/scheduler/) stepped every batch."""
    trainable = [p for p in module.parameters() if p.requires_grad]  # not RoFormer's fixed position table
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    optimizer = instantiate(optim)([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    schedule = instantiate(scheduler)(optimizer, total_steps=module.trainer.estimated_stepping_batches)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class KgqaModule(L.LightningModule):
    def __init__(self, vocab_size: int, backbone: dict, optim: dict, decode: dict, lookahead: dict | None = None,
                 seed: int = 0, factors: dict | None = None, run_config: dict | None = None,
                 scheduler: dict | None = None, loss: dict | None = None, copy: bool = False,
                 exposure: dict | None = None):
        """`optim`, `scheduler`: partial configs (conf/optim/, conf/scheduler/) built in configure_optimizers;
        `loss`: conf/loss/; `exposure`: conf/exposure/; `copy`: the UniLM gets a copy head (model.copy);
        `factors`: flat config columns for comparing runs; `run_config`: the resolved run config, kept in the checkpoint so a run can be re-created."""
        super().__init__()
        self.save_hyperparameters()
        arch = dict(backbone)
        self.model = UniLM(build_backbone(arch.pop("arch"), vocab_size, **arch), copy=copy)
        if arch.get("pretrained"):
            load_pretrained_head(self.model, backbone["arch"], arch["pretrained"])
        self.metrics = torch.nn.ModuleDict({"val": KgclueMetric(), "test": KgclueMetric()})
        self.from_memory = torch.nn.ModuleDict({"val": SumMetric(), "test": SumMetric()})  # answers the memory gave
        self.corrections: str | None = None  # a corrections file (or KB folder) for the correction memory
        self.reranker: Reranker | None = None  # reorders the final beam (kgqa.rerank): a plain object, not a submodule
        self.homonym_subjects: set[str] = set()  # subject names with two or more meanings in the KB (em_homonym)
        self.answerer: Answerer | None = None
        self.loss_vocabulary: torch.Tensor | None = None  # set in setup: the ids the loss's softmax runs over
        self.wrong_answers: list[list[Any]] = []
        self.question_rows: list[list[Any]] = []  # QUESTION_COLUMNS per question of the running evaluation (also
        # what calibration reads: the confidence is rounded only when the rows are written)
        self.question_results: dict[str, list[dict]] = {}  # "test/<tag>" -> its last evaluation's rows (rank 0)
        self.lookahead_cfg = lookahead  # the rule decoding uses; use_decoding swaps it after training
        self.eval_tag = ""  # names a decode variant in metric names: "test/<tag>/em"
        self.val_history: list[dict[str, float]] = []  # per-epoch val metrics, for reports
        self.resumed_rng: dict[str, torch.Tensor] | None = None  # a mid-epoch checkpoint's RNG, until its next batch

    def setup(self, stage: str) -> None:
        """The Answerer for the datamodule Lightning was given, with the current rules."""
        self.use_decoding(self.trainer.datamodule, self.eval_tag, self.lookahead_cfg)
        vocabulary = self.trainer.datamodule.loss_vocabulary if self.hparams.loss.get("data_vocabulary") else None
        self.loss_vocabulary = None if vocabulary is None else vocabulary.to(self.device)

    def use_decoding(self, dm, tag: str, lookahead: Any) -> None:
        """Decode val/test from now on with `lookahead` (a rule config, a list of them, or None) over
        `dm`'s KB, its metrics named "<stage>/<tag>/..." (no tag: the run's own rule)."""
        self.eval_tag, self.lookahead_cfg = tag, lookahead
        whole_beam = {**self.hparams.decode, "num_return": self.hparams.decode["beam"]}  # the first answers, and the oracle
        self.answerer = answerer_from_config(dm.keyspace, dm.tokenizer, whole_beam, lookahead,
                                             dm.max_question_len, dm.eval_batch_size, self.corrections, self.reranker)
        self.homonym_subjects = dm.homonym_subjects

    def on_train_epoch_start(self) -> None:
        """Dropout draws depend only on (seed, epoch, rank): a run resumed at an epoch boundary
        continues exactly as one that never stopped."""
        self.resumed_rng = None
        seed_everything(self.hparams.seed + self.current_epoch * self.trainer.world_size + self.global_rank, verbose=False)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """A run resumed mid-epoch (Lightning calls no epoch start then) draws on from where its rank's RNG was."""
        if self.resumed_rng is not None:
            torch.set_rng_state(self.resumed_rng["cpu"][self.global_rank])
            if "cuda" in self.resumed_rng:
                torch.cuda.set_rng_state(self.resumed_rng["cuda"][self.global_rank], self.device)
            self.resumed_rng = None

    def rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's torch RNG state [world, bytes] (a collective call: checkpoints are dumped on every rank)."""
        states = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        gathered = {k: self.all_gather(v.to(self.device)).cpu() for k, v in states.items()}
        return {k: v if self.trainer.world_size > 1 else v[None] for k, v in gathered.items()}

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):  # runs compare on their best val EMF1
                logger.experiment.define_metric("val/emf1", summary="max")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The val history travels with the weights: a resumed run reports every epoch once; while training,
        so does each rank's RNG (a run resumed mid-epoch draws the same dropout masks)."""
        checkpoint["val_history"] = self.val_history
        if self.trainer.training:
            checkpoint["rng"] = self.rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming a fit continues the saved history; evaluating the best checkpoint keeps the whole one."""
        if self.trainer.state.fn == "fit":
            self.val_history = list(checkpoint.get("val_history", []))
            self.resumed_rng = checkpoint.get("rng")

    # --- training --------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Teacher forcing on what the model reads (conf/exposure/ may replace some target tokens), against the
        gold key; with R-Drop, two dropout passes and the symmetric KL between them; with TeaForN, further
        passes that read the last pass's predictions."""
        settings, exposure = self.hparams.loss, self.hparams.exposure or {}
        segments, valid, allowed = batch["segment_ids"], batch["valid"], batch.get("allowed")
        rows, columns = target_positions(segments, valid)
        targets = batch["input_ids"][rows, columns + 1]
        read = self.read_ids(batch, targets, exposure)

        def pass_loss(read_soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            scores = self.model.target_scores(read, segments, valid, read_soft)[0]
            return scores, teacher_forced_loss(scores, targets, settings["label_smoothing"], settings["trie_loss"],
                                               allowed, self.loss_vocabulary)

        scores, loss = pass_loss()
        if exposure.get("teaforn"):
            loss = loss + teaforn_loss(scores, pass_loss, exposure["teaforn"], exposure.get("teaforn_steps", 2),
                                       exposure.get("teaforn_through", False))
        if exposure.get("rdrop"):
            again, second = pass_loss()
            vocabulary = self.loss_vocabulary if self.loss_vocabulary is not None else slice(None)
            consistency = symmetric_kl(scores[:, vocabulary], again[:, vocabulary])
            self.log("train/rdrop_kl", consistency, batch_size=len(batch["examples"]))
            loss = (loss + second) / 2 + exposure["rdrop"] * consistency
        if settings.get("sequence_loss", 0.0):
            loss = loss + settings["sequence_loss"] * self.model.candidate_loss(**batch["candidates"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["examples"]))
        return loss

    def read_ids(self, batch: dict, targets: torch.Tensor, exposure: dict) -> torch.Tensor:
        """The input ids the model reads this step: the batch's, or with exposure.replace > 0 some target tokens
        replaced by trie siblings or by the model's own choices (kgqa.exposure); ramped, the share grows
        linearly over training."""
        rate = exposure.get("replace", 0.0)
        if exposure.get("ramp"):
            rate *= min(1.0, self.global_step / max(1, self.trainer.estimated_stepping_batches))
        if not rate:
            return batch["input_ids"]
        if exposure["replace_with"] == "model":
            with torch.no_grad():
                scores = self.model.target_scores(batch["input_ids"], batch["segment_ids"], batch["valid"])[0]
            replacements = model_tokens(scores, targets, batch["allowed"])
        else:
            replacements = sibling_tokens(targets, batch["allowed"])
        return read_with_replacements(batch["input_ids"], batch["segment_ids"], batch["valid"], replacements, rate)

    def configure_optimizers(self):
        return optimizer_and_schedule(self, self.hparams.optim, self.hparams.scheduler)

    # --- evaluation ------------------------------------------------------------------
    def _evaluate(self, batch: dict, stage: str) -> None:
        examples = batch["examples"]
        loss = self.model.loss(batch["input_ids"], batch["segment_ids"], batch["valid"], vocabulary=self.loss_vocabulary)
        self.log(f"{stage}/loss", loss, batch_size=len(examples), sync_dist=True)
        beams = self.answerer(self.model, [e.question for e in examples])
        answers = [a[0] for a in beams]
        self.metrics[stage].update([a.triple for a in answers], [e.triple for e in examples],
                                   homonym=[e.triple.key.subject in self.homonym_subjects for e in examples],
                                   in_beam=[any(a.triple.key == e.triple.key for a in beam) for e, beam in zip(examples, beams)])
        self.from_memory[stage].update(sum(a.from_memory for a in answers))
        self.wrong_answers += [[e.question, e.triple.answer(), a.triple.answer(), round(a.confidence, 4), a.from_memory]
                               for e, a in zip(examples, answers) if a.triple != e.triple]
        self.question_rows += [[e.id, f"{a.triple.key.full_subject} ||| {a.triple.key.predicate}",
                                bool(exact_match(a.triple.obj, e.triple.obj)), a.confidence]
                               for e, a in zip(examples, answers)]

    def _log_epoch(self, stage: str) -> None:
        prefix = f"{stage}/{self.eval_tag}/" if self.eval_tag else f"{stage}/"
        metrics = {f"{prefix}{name}": value.float() for name, value in self.metrics[stage].compute().items()}
        if self.answerer is not None and self.answerer.memory is not None:
            metrics[f"{prefix}from_memory"] = self.from_memory[stage].compute().float()
        self.from_memory[stage].reset()
        for name, value in metrics.items():  # torchmetrics synced them: the same on every rank, as sync_dist keeps them
            self.log(name, value, prog_bar=name.endswith("/em"), sync_dist=True)
        self.metrics[stage].reset()
        rows, questions = self._gather(self.wrong_answers), self._gather(self.question_rows)
        self.wrong_answers, self.question_rows = [], []
        scored = [(confidence, correct) for _, _, correct, confidence in questions]  # for calibration
        if scored:  # gathered on every rank, so every rank logs the same value
            confidence, correct = np.array(scored, dtype=float).T
            self.log(f"{prefix}ece", expected_calibration_error(confidence, correct), sync_dist=True)
        questions = [[*q[:3], round(q[3], 4)] for q in questions]
        log_dir = self.trainer.log_dir  # a collective call under DDP: every rank must make it
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        if stage == "val" and self.trainer.state.fn == "fit":
            self.val_history.append({"epoch": self.current_epoch, **{k: float(v) for k, v in metrics.items()}})
        final = self.trainer.state.fn != "fit"  # a validate/test call, not a val epoch of training
        if final:  # written beside metrics.json by the entry point (kgqa.report.write_run_metrics)
            self.question_results[prefix.strip("/")] = [dict(zip(QUESTION_COLUMNS, q)) for q in questions]
        tag = prefix.strip("/").replace("/", "_")
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"{prefix}wrong_answers", columns=WRONG_ANSWER_COLUMNS, data=rows)
                if final:
                    logger.log_table(key=f"{prefix}questions", columns=QUESTION_COLUMNS, data=questions)
        if log_dir:
            write_text(Path(log_dir) / f"wrong_answers_{tag}.jsonl",
                       "".join(json.dumps(dict(zip(WRONG_ANSWER_COLUMNS, r)), ensure_ascii=False) + "\n" for r in rows))
            if stage == "test" and scored:
                write_calibration(scored, Path(log_dir) / f"calibration_{tag}.json")

    def _gather(self, rows: list) -> list:
        """Every rank's rows, on every rank (evaluation is sharded)."""
        if self.trainer.world_size == 1:
            return rows
        gathered = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, rows)
        return [r for part in gathered for r in part]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
