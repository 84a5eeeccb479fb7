"""Decoding speed: the project's decoder against a naive reference written after the article's code.

Both decode the same KgCLUE dev questions with the same model and KB (kb=synth), at the same
beam size, with and without the lcs_power look-ahead, in one process, one after the other
(`--project-rules copy_lcs_bonus ...` also times the project's decoder with other conf/lookahead
rules, which the reference does not implement):

- reference: kgqa.reference.NaiveDecoder, one question at a time, a full forward pass over
  question + prefix at every step, the article's nested-dict trie, a Python LCS per candidate
  key, bert4keras's beam search (min_ends=3: a hypothesis ends at its third [SEP]);
- project:   kgqa.decoding's Answerer.decode (batched questions, KV cache, tensor trie masks,
  look-ahead in one rapidfuzz call per step).

The model is trained here for 1,000 steps (or loaded with --ckpt) so that answers are
not random. Prints a table and writes experiments/results/bench_decode-<date>-<device>.json.

    python experiments/bench_decode.py                          # tiny and small, beams 1 and 3
    python experiments/bench_decode.py --sizes small --beams 3 --device cuda --questions 2000
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from kgqa.data.sources import KgclueSource
from kgqa.kb.sources import SynthKB
from kgqa.data.tokenizer import encode_key, encode_question
from kgqa.datamodule import KgqaDataModule
from kgqa.decoding.answerer import Answerer, rules_from_config
from kgqa.model import UniLM, build_backbone
from kgqa.reference import NaiveDecoder
from kgqa.checkpoints import load_checkpoint, tokenizer_from_state

REPO = Path(__file__).resolve().parents[1]


# --- set-up: data, KB, model -----------------------------------------------------------------
def kgclue(root: str, tokenizer=None) -> KgqaDataModule:
    files = {"train": "train.json", "val": "dev.json", "test": "test_public.json"}
    dm = KgqaDataModule(KgclueSource(root, files), SynthKB(seed=0), target="spm", tokenizer=tokenizer)
    dm.setup()
    return dm


def backbone_options(size: str) -> dict:
    """The roformer backbone at `size`, composed as kgqa-train composes it (random init)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        options = OmegaConf.to_container(compose(config_name="train", overrides=["backbone=roformer", f"size={size}"]).backbone)
    options.pop("pretrained")
    return options


def train(dm: KgqaDataModule, size: str, steps: int, device: str, batch_size: int = 32, lr: float = 1e-3) -> UniLM:
    """Teacher-forced steps on KgCLUE train: enough for non-random answers (tiny, 1,000 steps: dev EM ≈ 0.6)."""
    torch.manual_seed(0)
    options = backbone_options(size)
    model = UniLM(build_backbone(options.pop("arch"), dm.tokenizer.vocab_size, **options)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (steps // 10 + 1)))
    examples = dm.splits["train"]
    order = torch.randperm(len(examples)).tolist()
    for step in range(steps):
        batch = dm.collate([examples[order[(step * batch_size + j) % len(order)]] for j in range(batch_size)])
        loss = model.loss(*(batch[k].to(device) for k in ("input_ids", "segment_ids", "valid")))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  train {size} step {step}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def trained(dm: KgqaDataModule, size: str, steps: int, device: str, model_dir: str | None) -> UniLM:
    """The model trained by `train`, from model_dir when it was kept there."""
    path = Path(model_dir) / f"{size}-{steps}.pt" if model_dir else None
    if path and path.is_file():
        options = backbone_options(size)
        model = UniLM(build_backbone(options.pop("arch"), dm.tokenizer.vocab_size, **options))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    print(f"training {size} for {steps} steps", flush=True)
    model = train(dm, size, steps, device)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model


def load_trained(ckpt_path: str, root: str) -> tuple[KgqaDataModule, UniLM, str]:
    ckpt = load_checkpoint(ckpt_path)
    run = ckpt["hyper_parameters"]["run_config"]
    dm = kgclue(root, tokenizer_from_state(ckpt[KgqaDataModule.__qualname__], Path(ckpt_path)))
    options = dict(run["backbone"])
    model = UniLM(build_backbone(options.pop("arch"), dm.tokenizer.vocab_size, **options))
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    return dm, model.eval(), Path(ckpt_path).stem


# --- timing ----------------------------------------------------------------------------------
def lookahead_rules(name: str) -> list:
    """The rules of conf/lookahead/<name>.yaml, composed and built as kgqa-train does."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return rules_from_config(compose(config_name="train", overrides=[f"lookahead={name}"]).lookahead)


def run_project(model, dm, questions, beam: int, rules: list, batch_size: int,
                by_length: bool = False) -> tuple[list[tuple[int, float]], float]:
    """Batches in question order (arbitrary lengths mixed); `by_length` batches questions of similar
    length together, as the validation loader and the Answerer do, answers back in question order."""
    answerer = Answerer(dm.keyspace, dm.tokenizer, rules, beam=beam, batch_size=batch_size)
    start = time.perf_counter()
    hyps = answerer.decode(model, questions, by_length)
    return [(h[0].key_id, h[0].log_prob) for h in hyps], time.perf_counter() - start


def run_reference(decoder: NaiveDecoder, questions, beam: int) -> tuple[list[tuple[int, float]], float]:
    start = time.perf_counter()
    answers = [decoder.answer(q, beam) for q in questions]
    return answers, time.perf_counter() - start


def compare(project, reference) -> dict:
    """Agreement of the answers; where they differ, which decoder found the better-scoring key."""
    differ = [(p, r) for p, r in zip(project, reference) if p[0] != r[0]]
    return {"agreement": 1 - len(differ) / len(project),
            "differ_project_scores_higher": sum(p[1] > r[1] + 1e-4 for p, r in differ),
            "differ_reference_scores_higher": sum(r[1] > p[1] + 1e-4 for p, r in differ),
            "differ_tied": sum(abs(p[1] - r[1]) <= 1e-4 for p, r in differ)}


def cpu_name() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "kgclue"))
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--questions", type=int, default=200, help="first N dev questions")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--ckpt", help="a kgqa checkpoint (data=kgclue kb=synth) instead of training; its size replaces --sizes")
    parser.add_argument("--model-dir", help="keep trained weights here (<size>-<steps>.pt): loaded when present, else trained and saved")
    parser.add_argument("--batch-size", type=int, default=128, help="questions per beam_search call (data.module.eval_batch_size)")
    parser.add_argument("--repeats", type=int, default=3, help="project runs per setting; the median time counts")
    parser.add_argument("--by-length", action="store_true", help="batch the project's questions by length (see run_project)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true", help="time the project's decoder only (e.g. on a GPU)")
    parser.add_argument("--project-rules", nargs="*", default=[], help="more conf/lookahead rules, project decoder only")
    parser.add_argument("--out", default=str(REPO / "experiments" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dm = None if args.ckpt else kgclue(args.root)
    results = []
    for size in [None] if args.ckpt else args.sizes:
        if args.ckpt:
            dm, model, size = load_trained(args.ckpt, args.root)
        else:
            model = trained(dm, size, args.train_steps, args.device, args.model_dir)
        model.to(args.device)
        key_tokens = [encode_key(dm.tokenizer, k, "spm") for k in dm.kb.keys]
        examples = dm.splits["val"][: args.questions]
        questions = [encode_question(dm.tokenizer, e.question, dm.max_question_len) for e in examples]
        gold = np.array([dm.kb.key_id(e.triple.key) for e in examples])
        run_project(model, dm, questions[:8], 3, lookahead_rules("lcs_power"), args.batch_size)  # warm-up (first calls allocate)
        for rule in ["none", "lcs_power", *args.project_rules]:
            lookahead = rule == "lcs_power"
            compared = not args.skip_reference and rule in ("none", "lcs_power")  # the reference has these two
            reference = NaiveDecoder(model, key_tokens, dm.tokenizer.sep_id, lookahead) if compared else None
            for beam in args.beams:
                load = os.getloadavg()[0]
                runs = [run_project(model, dm, questions, beam, lookahead_rules(rule), args.batch_size, args.by_length)
                        for _ in range(args.repeats)]
                fast, fast_s = runs[0][0], float(np.median([seconds for _, seconds in runs]))
                row = {"size": size, "beam": beam, "lookahead": rule, "questions": len(questions),
                       "project_qps": len(questions) / fast_s, "project_em": float(np.mean([a for a, _ in fast] == gold))}
                if compared:
                    naive, naive_s = run_reference(reference, questions, beam)
                    row |= {"reference_qps": len(questions) / naive_s, "speedup": naive_s / fast_s, **compare(fast, naive),
                            "reference_em": float(np.mean([a for a, _ in naive] == gold))}
                    if lookahead and beam == 1:  # how far the project's rule is from the article's letter
                        literal = NaiveDecoder(model, key_tokens, dm.tokenizer.sep_id, lookahead=True, literal=True)
                        row["agreement_with_literal_article_rule"] = compare(fast, run_reference(literal, questions, 1)[0])["agreement"]
                row["load_average"] = [load, os.getloadavg()[0]]  # other processes share the CPU
                results.append(row)
                print(json.dumps(row), flush=True)

    when = datetime.datetime.now().astimezone()
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    report = {"command": "python experiments/bench_decode.py " + " ".join(sys.argv[1:]), "date": when.isoformat(timespec="seconds"),
              "device": device, "cpu_count": os.cpu_count(), "torch_threads": args.threads, "torch": torch.__version__,
              "args": vars(args), "results": results}
    out = Path(args.out) / f"bench_decode-{when:%Y%m%d-%H%M%S}-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    nan = float("nan")
    print("\n| size | beam | look-ahead | project q/s | reference q/s | speed-up | agreement | EM project / reference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['size']} | {r['beam']} | {r['lookahead']} | {r['project_qps']:.1f} | {r.get('reference_qps', nan):.2f} | "
              f"{r.get('speedup', nan):.1f}× | {r.get('agreement', nan):.3f} | {r['project_em']:.3f} / {r.get('reference_em', nan):.3f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
