"""Decoding speed: the project's decoder against a naive reference written after the article's code.

Both decode the same KgCLUE dev questions with the same model and KB (kb=synth), at the same
beam size, with and without the lcs_power look-ahead, in one process, one after the other
(`--project-rules copy_lcs_bonus ...` also times the project's decoder with other conf/lookahead
rules, which the reference does not implement):

- reference: one question at a time, a full forward pass over question + prefix at every step,
  the article's nested-dict trie, a Python LCS per candidate key, bert4keras's beam search
  (min_ends=3: a hypothesis ends at its third [SEP]);
- project:   kgqa.decoding.beam_search (batched questions, KV cache, tensor trie masks,
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
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kgqa.data.sources import KgclueSource, SynthKB
from kgqa.data.tokenizer import encode_key, encode_question
from kgqa.datamodule import KgqaDataModule
from kgqa.decoding.beam import beam_search
from kgqa.decoding.processors import TrieMask
from kgqa.model import UniLM, build_backbone
from kgqa.runtime import load_checkpoint, tokenizer_from_state

REPO = Path(__file__).resolve().parents[1]


# --- the naive reference ---------------------------------------------------------------------
def lcs(a, b) -> int:
    """Length of the longest common subsequence, by the textbook DP."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b):
            diagonal, row[j + 1] = row[j + 1], diagonal + 1 if x == y else max(row[j + 1], row[j])
    return row[-1]


class DictTrie:
    """The article's Trie: nested dicts keyed by token, the value under a reserved key."""

    VALUE = -1

    def __init__(self):
        self.data: dict = {}

    def __setitem__(self, key, value):
        node = self.data
        for t in key:
            node = node.setdefault(t, {})
        node[self.VALUE] = value

    def _node(self, prefix):
        node = self.data
        for t in prefix:
            node = node[t]
        return node

    def __getitem__(self, key):
        return self._node(key)[self.VALUE]

    def next_ones(self, prefix) -> list[int]:
        return [t for t in self._node(prefix) if t != self.VALUE]

    def keys(self, prefix, node=None) -> list[list[int]]:
        """Every key that starts with prefix (recursively, as the article's Trie.keys)."""
        node = self._node(prefix) if node is None else node
        out = []
        for t, child in node.items():
            out += [list(prefix)] if t == self.VALUE else self.keys(list(prefix) + [t], child)
        return out


class NaiveDecoder:
    """The article's AutoQA decoder, one question at a time, on a kgqa UniLM.

    The look-ahead computes what the project defines (README): Δ over content tokens, applied
    to the trie-masked, renormalised probabilities. `literal=True` instead follows the article's
    code to the letter: LCS over the raw ids ([CLS] question [SEP] against keys with their
    [SEP]s) and p^(1/w) on the full softmax before the trie mask renormalises.
    """

    def __init__(self, model: UniLM, keys: list[list[int]], sep_id: int, lookahead: bool, literal: bool = False):
        self.model, self.sep, self.lookahead, self.literal = model, sep_id, lookahead, literal
        self.trie = DictTrie()
        for key_id, key in enumerate(keys):
            self.trie[key] = key_id

    def content(self, ids) -> list[int]:
        return list(ids) if self.literal else [t for t in ids if t != self.sep]

    def predict(self, question: list[int], output_ids: list[list[int]]) -> np.ndarray:
        """Next-token probabilities [rows, V] under the trie (and the look-ahead): full recompute."""
        device = next(self.model.parameters()).device
        ids = torch.tensor([question + o for o in output_ids], device=device)
        segments = torch.tensor([[0] * len(question) + [1] * len(o) for o in output_ids], device=device)
        with torch.no_grad():
            logits = self.model(ids, segments, torch.ones_like(ids, dtype=torch.bool))[:, -1]
        probas = torch.softmax(logits.double(), -1).cpu().numpy()
        q = self.content(question if self.literal else question[1:-1])
        new_probas = np.zeros_like(probas)
        for i, prefix in enumerate(output_ids):
            allowed = self.trie.next_ones(prefix)
            p = probas[i, allowed]
            if not self.literal:
                p = p / p.sum()  # the trie mask renormalises first
            if self.lookahead and len(allowed) > 1 and self.sep in prefix:
                weights = dict.fromkeys(allowed, 1.0)
                covered = lcs(self.content(prefix), q)
                for c in self.trie.keys(prefix):
                    if len(c) > len(prefix):
                        w = lcs(self.content(c), q) - covered
                        weights[c[len(prefix)]] = max(w + 1, weights[c[len(prefix)]])
                p = p ** (1 / np.array([weights[t] for t in allowed]))
            new_probas[i, allowed] = p / p.sum()
        return new_probas

    def beam_search(self, question: list[int], topk: int, min_ends: int = 3, maxlen: int = 256) -> tuple[list[int], float]:
        """bert4keras's AutoRegressiveDecoder.beam_search: finished hypotheses leave the beam (which
        shrinks); the search returns as soon as the best hypothesis of a step is finished.
        (bert4keras scores log(p + 1e-12), which can put a token outside the trie into a beam and
        break the trie lookup; here such tokens score -inf and never enter a beam.)"""
        output_ids, output_scores = [[]], np.zeros(1)
        for _ in range(maxlen):
            with np.errstate(divide="ignore"):
                scores = output_scores[:, None] + np.log(self.predict(question, output_ids))
            k = min(topk, int(np.isfinite(scores).sum()))
            rows, tokens = np.unravel_index(np.argpartition(scores, -k, axis=None)[-k:], scores.shape)
            output_ids = [output_ids[r] + [int(t)] for r, t in zip(rows, tokens)]
            output_scores = scores[rows, tokens]
            is_end = np.array([o[-1] == self.sep for o in output_ids])
            end_counts = np.array([o.count(self.sep) for o in output_ids])
            best = output_scores.argmax()
            if is_end[best] and end_counts[best] >= min_ends:
                return output_ids[best], float(output_scores[best])
            unfinished = ~is_end | (end_counts < min_ends)
            output_ids = [o for o, keep in zip(output_ids, unfinished) if keep]
            output_scores, topk = output_scores[unfinished], int(unfinished.sum())
        return output_ids[output_scores.argmax()], float(output_scores.max())

    def answer(self, question: list[int], beam: int) -> tuple[int, float]:
        """The answer's key id and its score (log-probability under the rule)."""
        ids, score = self.beam_search(question, beam)
        return self.trie[ids], score


# --- set-up: data, KB, model -----------------------------------------------------------------
def kgclue(root: str, tokenizer=None) -> KgqaDataModule:
    files = {"train": "train.json", "val": "dev.json", "test": "test_public.json"}
    dm = KgqaDataModule(KgclueSource(root, files), SynthKB(seed=0), target="spm", tokenizer=tokenizer)
    dm.setup()
    return dm


def backbone_options(size: str) -> dict:
    options = {**OmegaConf.to_container(OmegaConf.load(REPO / "conf/backbone/roformer.yaml")),
               **OmegaConf.to_container(OmegaConf.load(REPO / f"conf/size/{size}.yaml"))}
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
    dm = kgclue(root, tokenizer_from_state(ckpt[KgqaDataModule.__qualname__]))
    options = dict(run["backbone"])
    model = UniLM(build_backbone(options.pop("arch"), dm.tokenizer.vocab_size, **options))
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    return dm, model.eval(), Path(ckpt_path).stem


# --- timing ----------------------------------------------------------------------------------
def lookahead_rules(name: str) -> list:
    """The rules of conf/lookahead/<name>.yaml, composed and instantiated as kgqa-train does."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        rules = instantiate(compose(config_name="train", overrides=[f"lookahead={name}"]).lookahead, _convert_="all")
    return [] if rules is None else rules if isinstance(rules, list) else [rules]


def run_project(model, dm, questions, beam: int, rules: list, batch_size: int,
                by_length: bool = False) -> tuple[list[tuple[int, float]], float]:
    """Batches in question order (arbitrary lengths mixed); `by_length` batches questions of similar
    length together, as the validation loader and the Answerer do, answers back in question order."""
    processors = [TrieMask(), *rules]
    order = np.argsort([len(q) for q in questions], kind="stable") if by_length else np.arange(len(questions))
    start, answers = time.perf_counter(), [None] * len(questions)
    for i in range(0, len(questions), batch_size):
        batch = order[i : i + batch_size]
        hyps = beam_search(model, dm.keyspace, [questions[j] for j in batch], processors, dm.tokenizer.pad_id, beam)
        for j, h in zip(batch, hyps):
            answers[j] = (h[0].key_id, h[0].log_prob)
    return answers, time.perf_counter() - start


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
    parser.add_argument("--batch-size", type=int, default=128, help="questions per beam_search call (data.eval_batch_size)")
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
