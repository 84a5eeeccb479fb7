"""A trained run that stopped before its final decodes, completed by kgqa-eval: the six
decodes (val/test × none, lcs_power, copy_lcs_bonus) of its best.ckpt assembled into the metrics.json the run
would have written.

    python experiments/assemble_eval_decodes.py <eval sweep dir> <out run dir> plain|copy [with-questions]
"""
import json, shutil, sys
from pathlib import Path
src, out, copy = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "copy"
out.mkdir(parents=True, exist_ok=True)
metrics, questions, factors = {}, {}, None
for j in range(6):
    d = json.loads((src / str(j) / "metrics.json").read_text())
    f = dict(d["factors"]); split, rule = f.pop("split"), f["lookahead"]
    tag = f"{split}" if rule == "none" else f"{split}/{rule}"
    metrics |= {k.replace(f"{split}/", f"{tag}/", 1): v for k, v in d["metrics"].items()}
    for key, name in d.get("questions", {}).items():
        new = f"questions_{split}.jsonl" if rule == "none" else f"questions_{split}_{rule}.jsonl"
        questions[tag] = new
        if len(sys.argv) > 4:
            shutil.copy(src / str(j) / name, out / new)
    factors = f | {"lookahead": "none", "copy": copy}
run = {"factors": factors, "metrics": metrics, "name": src.name.removeprefix("eval_"),
       "assembled_from": [str(src / str(j) / "metrics.json") for j in range(6)]}
if len(sys.argv) > 4:
    run["questions"] = questions
(out / "metrics.json").write_text(json.dumps(run, indent=1))
print(out, sorted(metrics)[:4], factors)
