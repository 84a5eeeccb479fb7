#!/usr/bin/env bash
# Everything that needs a GPU, in one command and one JSON (issue: the article's configuration on GPUs):
#   decode  experiments/bench_decode.py: questions/s of the project's decoder (small, beam 3, none and lcs_power);
#           goal >= 1,000 q/s on one H100/H200 with lcs_power
#   train   experiments/bench_train.py: teacher-forced samples/s (small, bf16-mixed, bucketed and shuffled);
#           goal >= 15,000 samples/s
#   ddp     a toy checkpoint evaluated on one device and with DDP on two: the same metrics (only with 2+ GPUs)
#
#   bash experiments/gpu_suite.sh              # on the GPU machine; each part time-boxed (240 + 180 + 120 s at most; not run yet)
#   bash experiments/gpu_suite.sh --reduced    # anywhere: the same steps at toy scale on the CPU (tests/test_gpu_suite.py)
#
# The GPU image lacks hydra, omegaconf, wandb and rapidfuzz: when they are missing they are installed from .whl/
# (fill it here with `bash ../shared/tools/gpu-wheels.sh` and carry .whl to the GPU machine).
# Writes $OUT/gpu_suite-<date>-<mode>.json ($OUT: the device tool's output folder, else experiments/results).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
[[ "${1:-}" == "--reduced" ]] && mode=reduced
out_dir=${OUT:-experiments/results}
export WANDB_MODE=offline WANDB_SILENT=true PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import hydra, omegaconf, wandb, rapidfuzz" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_suite: hydra/omegaconf/wandb/rapidfuzz missing and no .whl/ to install them from" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/kgqa-site .whl/*.whl
  export PYTHONPATH="/tmp/kgqa-site:$PYTHONPATH"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")

if [[ $mode == full ]]; then
  decode=(--sizes small --beams 3 --device cuda --questions 2000 --batch-size 256 --skip-reference --threads 4)
  train=(--sizes small --trainer gpu --batch-size 256 --steps 600 --num-workers 4 --threads 4)
  single=(trainer=gpu) parallel=(trainer=ddp trainer.devices=2) parallel_devices=2 budget=(240 180 120)
else
  decode=(--sizes tiny --beams 3 --questions 16 --batch-size 8 --train-steps 10 --repeats 1 --skip-reference --threads 1)
  train=(--sizes tiny --batch-size 8 --steps 4 --warmup 2 --threads 1)
  single=(trainer=cpu) parallel=(trainer=ddp_cpu) parallel_devices=2 budget=(240 240 240)
fi

echo "== decode: python experiments/bench_decode.py ${decode[*]}"
decode_rc=0; timeout "${budget[0]}" python3 experiments/bench_decode.py "${decode[@]}" --out "$work/decode" || decode_rc=$?
echo "== train: python experiments/bench_train.py ${train[*]}"
train_rc=0; timeout "${budget[1]}" python3 experiments/bench_train.py "${train[@]}" --out "$work/train" || train_rc=$?

ddp_rc=skipped
if [[ $mode == reduced || $gpus -ge $parallel_devices ]]; then
  echo "== ddp: one device against ${parallel[*]}"
  toy=(+data.source.n_entities=300 logger=csv)
  ddp_rc=0
  timeout "${budget[2]}" python3 -m kgqa.cli.train "${toy[@]}" "${single[@]}" trainer.max_epochs=1 \
    trainer.num_sanity_val_steps=0 hydra.run.dir="$work/run" >"$work/ddp-train.log" 2>&1 || ddp_rc=$?
  if [[ $ddp_rc == 0 ]]; then
    python3 -m kgqa.cli.evaluate ckpt="$work/run" logger=csv "${single[@]}" hydra.run.dir="$work/one" >"$work/ddp-one.log" 2>&1 || ddp_rc=$?
    python3 -m kgqa.cli.evaluate ckpt="$work/run" logger=csv "${parallel[@]}" hydra.run.dir="$work/two" >"$work/ddp-two.log" 2>&1 || ddp_rc=$?
  fi
  [[ $ddp_rc == 0 ]] || tail -20 "$work"/ddp-*.log >&2
fi

python3 - "$mode" "$work" "$out_dir" "$decode_rc" "$train_rc" "$ddp_rc" "$gpus" <<'PY'
"""Gather the parts into one JSON, with each goal checked where its figure exists."""
import datetime, json, sys
from pathlib import Path

import torch

mode, work, out_dir, decode_rc, train_rc, ddp_rc, gpus = sys.argv[1:]
work = Path(work)
one = lambda folder: json.loads(next(iter(sorted((work / folder).glob("*.json")))).read_text()) if any((work / folder).glob("*.json")) else None  # noqa: E731
decode, train = one("decode"), one("train")
ddp = {"status": ddp_rc}
if ddp_rc == "0":
    single, parallel = (json.loads((work / d / "metrics.json").read_text())["metrics"] for d in ("one", "two"))
    ddp |= {"one_device": single, "ddp": parallel, "same_metrics": single == parallel}
lcs = [r["project_qps"] for r in (decode or {}).get("results", []) if r["lookahead"] == "lcs_power" and r["beam"] == 3]
bucketed = [r["samples_per_s"] for r in (train or {}).get("rows", []) if r["batching"] == "bucketed"]
when = datetime.datetime.now().astimezone()
report = {
    "mode": mode, "date": when.isoformat(timespec="seconds"), "gpus": int(gpus),
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
    "goals": {"decode_qps_beam3_lcs_power": lcs[0] if lcs else None, "decode_goal_met": bool(lcs) and lcs[0] >= 1000,
              "train_samples_per_s_bucketed": bucketed[0] if bucketed else None,
              "train_goal_met": bool(bucketed) and bucketed[0] >= 15000, "ddp_same_metrics": ddp.get("same_metrics")},
    "status": {"decode": int(decode_rc), "train": int(train_rc), "ddp": ddp_rc},
    "decode": decode, "train": train, "ddp": ddp,
}
out = Path(out_dir) / f"gpu_suite-{when:%Y%m%d-%H%M%S}-{mode}.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(report, indent=1))
print(json.dumps(report["goals"], indent=1))
print(f"wrote {out}")
sys.exit(0 if decode_rc == train_rc == "0" and ddp_rc in ("0", "skipped") else 1)
PY
