"""Run records (metrics.json) gathered into one folder for kgqa-report, each with the factors it lacks
(its run started before the factor existed) filled from the saved config of the run that trained its model.

    python experiments/records_fill_factors.py OUT NAME=DIR ... --factor trie_loss=loss.trie_loss \\
        --factor sequence_loss=loss.sequence_loss:0.0 --factor renormalise=decode.renormalise:true

DIR is a run folder (kgqa-train, kgqa-eval) or a multirun folder (its numbered jobs become NAME-0, NAME-1, ...).
A factor is `name=config.path[:default]`; the default (YAML) stands where the config has no such key, or
where the record's run folder keeps no run_config.yaml (records committed without it; said in the output).
Per-question files are not copied (the records keep none) unless --questions is given (then `kgqa-report OUT
--compare A B` can pair the runs question by question); a factor already in a record is left as it is.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from kgqa.report.collect import trained_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("runs", nargs="+", help="NAME=DIR")
    parser.add_argument("--factor", action="append", default=[], help="name=config.path[:default]")
    parser.add_argument("--questions", action="store_true", help="copy the per-question files too")
    args = parser.parse_args()
    factors = {}
    for spec in args.factor:
        name, path = spec.split("=", 1)
        path, _, default = path.partition(":")
        factors[name] = (path, yaml.safe_load(default) if default else None)
    for spec in args.runs:
        name, folder = spec.split("=", 1)
        folder = Path(folder)
        jobs = [(name, folder)] if (folder / "metrics.json").is_file() else \
            [(f"{name}-{job.name}", job) for job in sorted(folder.iterdir()) if (job / "metrics.json").is_file()]
        for job_name, job in jobs:
            record = json.loads((job / "metrics.json").read_text(encoding="utf-8"))
            saved = Path(trained_model(record) or job) / "run_config.yaml"
            config = OmegaConf.load(saved) if saved.is_file() else OmegaConf.create()  # none: the defaults
            for factor, (path, default) in factors.items():
                if factor not in record["factors"]:
                    record["factors"][factor] = OmegaConf.select(config, path, default=default)
            (Path(args.out) / job_name).mkdir(parents=True, exist_ok=True)
            if args.questions:
                for file in record["questions"].values():
                    shutil.copyfile(job / file, Path(args.out) / job_name / file)
            else:
                record["questions"] = {}
            (Path(args.out) / job_name / "metrics.json").write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
            print(job_name, {k: record["factors"][k] for k in factors}, "" if saved.is_file() else "(no run_config.yaml: defaults)")


if __name__ == "__main__":
    main()
