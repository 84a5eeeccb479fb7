"""From a folder of runs to evaluations: one per (run, decode rule, split), with its per-question file.

A run leaves metrics.json: {"factors": {...}, "metrics": {"test/em": ..., "test/<rule>/em": ...},
"questions": {"test/<rule>": "questions_test_<rule>.jsonl"}, "history": [...]}. Metrics without a
rule in their name were decoded with the run's own rule (factors.lookahead).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgqa.errors import DataError
from kgqa.files import atomic_output, write_text

log = logging.getLogger("kgqa.report")

METRICS_FILE = "metrics.json"
METRICS = ("em", "f1", "emf1", "em_s", "em_p", "em_homonym", "oracle")
STAGES = ("val", "test")
NOT_CONFIGURATION = ("seed", "lookahead", "split")  # a run's seed; the rule and split are columns of their own


def questions_file(key: str) -> str:
    return f"questions_{key.replace('/', '_')}.jsonl"


def write_run_metrics(run_dir: Path, factors: dict, metrics: dict[str, float],
                      questions: dict[str, list[dict]] | None = None, **extra: Any) -> None:
    """metrics.json and, beside it, one JSONL file of per-question results per evaluation ("test/<rule>").
    The question files come first, so a metrics.json never names a file that is not there."""
    files = {}
    for key, rows in (questions or {}).items():
        files[key] = questions_file(key)
        with atomic_output(Path(run_dir) / files[key]) as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    record = {"factors": dict(factors), "metrics": metrics, "questions": files, **extra}
    write_text(Path(run_dir) / METRICS_FILE, json.dumps(record, indent=1, ensure_ascii=False))


def read_run(path: Path) -> dict | None:
    """A run's metrics.json, or None (with a warning naming it) when it cannot be read."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(run.get("factors"), dict) or not isinstance(run.get("metrics"), dict):
            raise ValueError("no 'factors' and 'metrics' objects")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        log.warning("skipping %s: not a readable %s (%s)", path, METRICS_FILE, str(e)[:200])
        return None
    return run


def collect(root: Path) -> list[dict]:
    """Every readable run under `root`; runs still training or failed (a Hydra job folder without
    metrics.json) and corrupt files are named in a warning and left out."""
    runs = []
    for path in sorted(root.rglob(METRICS_FILE)):
        run = read_run(path)
        if run is not None:
            run["dir"] = str(path.parent.relative_to(root)) or "."
            run["path"] = path
            runs.append(run)
    unfinished = sorted(str(p.parent.relative_to(root)) for p in root.rglob(".hydra")
                        if not (p.parent / METRICS_FILE).exists())
    if unfinished:
        log.warning("%d run(s) without %s (still training, or failed) left out: %s", len(unfinished), METRICS_FILE,
                    ", ".join(unfinished))
    return runs


@dataclass
class Evaluation:
    """One decode of one trained model on one split."""

    run: str  # the run folder, relative to the report's root
    configuration: tuple[tuple[str, Any], ...]  # the factors but the seed, the rule and the split
    seed: Any
    rule: str
    stage: str
    metrics: dict[str, float]
    questions: Path | None  # its per-question JSONL, when the run wrote one
    history: list[dict] = field(default_factory=list, repr=False)


def trained_model(run: dict) -> str | None:
    """The folder of the run that trained the model a record decoded (from its checkpoint), or None
    when the record does not say."""
    checkpoint = run.get("checkpoint")
    if not checkpoint:
        return None
    path = Path(checkpoint)
    return str(path.parents[1] if path.suffix == ".ckpt" else path)


def evaluations(runs: list[dict]) -> list[Evaluation]:
    """Each run's evaluations, in the order they were written (a model's own rules before later
    kgqa-eval decodes of it). A model decoded twice with the same rule on the same split counts
    once: the newest metrics.json wins. Two different models with the same factors and seed (a factor
    that tells them apart is missing from their records) are named in a warning: only the newer is kept."""
    found: dict[tuple, Evaluation] = {}
    models: dict[tuple, str | None] = {}
    order = list(dict.fromkeys(k for run in runs for k in run["factors"] if k not in NOT_CONFIGURATION))
    for run in sorted(runs, key=lambda r: r["path"].stat().st_mtime):
        factors = run["factors"]  # in one order for all runs: the same factors written in another order are one configuration
        configuration = tuple((k, factors[k]) for k in order if k in factors)
        by_variant: dict[tuple[str, str], dict[str, float]] = {}
        for name, value in run["metrics"].items():
            stage, *tag, metric = name.split("/")
            if stage in STAGES and metric in METRICS and len(tag) <= 1:
                rule = tag[0] if tag else str(factors.get("lookahead", ""))
                by_variant.setdefault((rule, stage), {})[metric] = value
        for (rule, stage), metrics in by_variant.items():
            key = f"{stage}/{rule}" if f"{stage}/{rule}/em" in run["metrics"] else stage
            questions = run.get("questions", {}).get(key)
            evaluation = Evaluation(run["dir"], configuration, factors.get("seed"), rule, stage, metrics,
                                    run["path"].parent / questions if questions else None, run.get("history") or [])
            same, model = (configuration, evaluation.seed, rule, stage), trained_model(run)
            if same in found and None not in (model, models[same]) and model != models[same]:
                log.warning("%s and %s decoded two different models (%s, %s) with the same factors and seed: only the "
                            "newer is kept; their records lack a factor that tells them apart", found[same].run,
                            run["dir"], models[same], model)
            elif same in found:
                log.info("%s decoded again in %s: the newer result is kept", found[same].run, run["dir"])
            found[same], models[same] = evaluation, model
    return list(found.values())


def read_questions(evaluation: Evaluation) -> dict[Any, bool]:
    """Question id -> correct, from the evaluation's per-question file."""
    if evaluation.questions is None:
        raise FileNotFoundError(f"{evaluation.run} has no per-question results for "
                                f"{evaluation.stage}/{evaluation.rule}")
    correct = {}
    for lineno, line in enumerate(evaluation.questions.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            correct[row["id"]] = bool(row["correct"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{evaluation.questions}:{lineno}: not a per-question row ({e})") from None
    return correct
