"""LightningDataModule: QA splits, the KB, the tokenizer and the key trie, built once."""
from __future__ import annotations

import logging
import math
import zlib
from functools import cached_property
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from kgqa.data.kgclue import QAExample
from kgqa.data.tokenizer import CharTokenizer, PretrainedTokenizer, Tokenizer, encode_key, encode_question
from kgqa.errors import CheckpointError
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.keyspace import KeySpace
from kgqa.kb.sources import KbSource

log = logging.getLogger(__name__)


def build_tokenizer(pretrained: str | None, train: list[QAExample], kb: KnowledgeBase) -> Tokenizer:
    """A vocabulary that spells every KB string and training question without [UNK]: built from
    them, or the pretrained one with the characters it lacks added (the model grows to match)."""
    texts = [e.question for e in train] + list(kb.strings())
    if not pretrained:
        return CharTokenizer.build(texts)
    tokenizer = PretrainedTokenizer(pretrained)
    missing = tokenizer.missing(texts)
    tokenizer.add(missing)
    log.info("%s: %d characters of the KB and the training questions added to its %d-token vocabulary%s",
             pretrained, len(missing), tokenizer.base_size, f" ({''.join(missing[:30])}...)" if missing else "")
    return tokenizer


class BucketBatchSampler(Sampler[list[int]]):
    """Training batches of similar length (little padding), shuffled from (seed, epoch), sharded over ranks.

    The order depends only on the seed and the epoch, so a run resumed at an epoch
    boundary sees the same batches as one that never stopped, and one resumed mid-epoch
    (start_at) the rest of the same epoch's batches. Every rank gets the same
    number of batches (DDP needs that): the last batches are repeated to fill up.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 batches_per_bucket: int = 50):
        self.lengths, self.batch_size, self.seed = np.asarray(lengths), batch_size, seed
        self.rank, self.world_size, self.bucket = rank, world_size, batch_size * batches_per_bucket
        self.epoch, self.skip = 0, 0

    def start_at(self, epoch: int, batches: int = 0) -> None:
        """The next iteration draws epoch `epoch`, without its first `batches` batches (trained before a requeue)."""
        self.epoch, self.skip = epoch, batches

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.world_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.bucket):
            chunk = order[start : start + self.bucket]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        batches += batches[: len(self) * self.world_size - len(batches)]
        return iter(batches[self.rank :: self.world_size][self.skip :])


class ResumableLoader(DataLoader):
    """The training DataLoader: each iteration draws the training loop's epoch from the batches of it the loop
    has not finished, read when its first batch is fetched (Lightning sets the epoch of a loader's sampler, never
    of its batch sampler, and may make the iterator before it restores a checkpoint's loop). A run resumed
    between two batches, mid-epoch, so trains on exactly the batches it had left."""

    def __init__(self, *args, position: Callable[[], tuple[int, int]], **kwargs):
        super().__init__(*args, **kwargs)
        self.position = position  # (epoch, batches of it finished)

    def __iter__(self):
        self.batch_sampler.start_at(*self.position())  # a generator: this runs at the first fetch
        yield from super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """What Lightning saves in a checkpoint (and, having it, does not warn that the loader cannot resume)."""
        epoch, batches = self.position()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to set: the loop's progress, which the checkpoint restores, is where the next iteration starts."""


class LengthOrderedShard(Sampler[int]):
    """Evaluation order: questions sorted by length (batches of similar length decode with little
    padding and end together), then dealt out to the ranks, each example to exactly one rank (no
    padding), so summed metrics are exact."""

    def __init__(self, lengths: list[int], rank: int = 0, world_size: int = 1):
        self.indices = np.argsort(np.asarray(lengths), kind="stable")[rank::world_size].tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def teacher_forcing(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(question, target) token pairs as one padded UniLM input: ids, segments (1 on the target), valid."""
    width = max(len(q) + len(t) for q, t in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    segments = torch.zeros_like(ids)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    for i, (q, t) in enumerate(pairs):
        ids[i, : len(q) + len(t)] = torch.tensor(q + t)
        segments[i, len(q) : len(q) + len(t)] = 1
        valid[i, : len(q) + len(t)] = True
    return {"input_ids": ids, "segment_ids": segments, "valid": valid}


class KgqaDataModule(L.LightningDataModule):
    def __init__(self, source, kb_source: KbSource, target: str = "spm", batch_size: int = 32, eval_batch_size: int = 64,
                 max_question_len: int = 64, num_workers: int = 0, pretrained: str | None = None,
                 tokenizer: Tokenizer | None = None, seed: int = 0, augment: Callable | None = None,
                 batches_per_bucket: int = 50, trie_targets: bool = False, candidates: int = 0):
        """`tokenizer` is given when restoring a trained model (its saved vocabulary); `augment` adds
        training pairs from the KB (kgqa/data/augment.py), after the tokenizer is built from the real ones;
        `batches_per_bucket` = 1 turns length bucketing off; `trie_targets`: training batches carry the
        trie's allowed tokens at each target position (for loss.trie_loss and exposure.replace); `candidates`:
        they carry each question's gold key and that many other keys of the trie beside it (loss.sequence_loss)."""
        super().__init__()
        self.seed = seed  # training batch order depends on (seed, epoch) only
        self.source, self.kb_source, self.target = source, kb_source, target
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.max_question_len, self.pretrained = max_question_len, pretrained
        self.tokenizer, self.augment = tokenizer, augment
        self.batches_per_bucket, self.trie_targets, self.candidates = batches_per_bucket, trie_targets, candidates
        self.kb: KnowledgeBase | None = None
        self.keyspace: KeySpace | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.keyspace is not None:
            return
        self.splits = self.source.splits
        self.kb = self.kb_source.build(self.source)
        log.info("KB: %s", self.kb.stats())
        if self.tokenizer is None:  # a saved vocabulary (a KB folder's) unless a pretrained one is asked for
            saved = None if self.pretrained else self.kb_source.tokenizer([e.question for e in self.splits["train"]])
            self.tokenizer = saved if saved is not None else build_tokenizer(self.pretrained, self.splits["train"], self.kb)
        self.keyspace = self.kb_source.keyspace(self.kb, self.tokenizer, self.target)

    @cached_property
    def loss_vocabulary(self) -> torch.Tensor | None:
        """The sorted ids the training loss's softmax runs over: the special tokens and every character of the KB's
        keys and the training questions (what a from-config vocabulary is built from, so there it is every id:
        None). Of a pretrained vocabulary's thousands of characters the others never occur in a target. Found
        once: the module's setup asks for it at every fit, validate and test call."""
        chars = set(self.kb.characters()) | {c for e in self.splits["train"] for c in e.question}
        t = self.tokenizer
        ids = sorted({t.pad_id, t.unk_id, t.cls_id, t.sep_id} | {i for c in chars for i in t.encode(c)})
        return None if len(ids) == t.vocab_size else torch.tensor(ids)

    @cached_property
    def homonym_subjects(self) -> set[str]:
        """Subject names with two or more meanings in the KB, for em_homonym (found once per data module)."""
        return self.kb.homonym_subjects()

    # --- checkpoint: the tokenizer and a description of the KB travel with the weights ---
    def state_dict(self) -> dict[str, Any]:
        return {"kb": self.kb_fingerprint} | self.tokenizer.state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if any(state.get(name) != value for name, value in self.tokenizer.state().items()):
            raise ValueError("the checkpoint's vocabulary differs from this data module's tokenizer")

    @cached_property
    def kb_fingerprint(self) -> dict[str, float]:
        """What tells one KB from another for a trained model: its size, and the share of labelled
        val/test questions whose gold key it holds (computed once: every checkpoint saves it)."""
        labelled = [e for split in ("val", "test") for e in self.splits[split] if e.triple is not None]
        covered = sum(e.triple.key in self.kb for e in labelled)
        return {"keys": int(self.kb.live_mask().sum()), "gold_coverage": covered / max(len(labelled), 1)}

    def check_kb(self, trained: dict | None, checkpoint, allow_change: bool = False) -> None:
        """Refuse a KB the checkpoint was not trained with: one whose keys its vocabulary
        cannot spell (keys added to a KB folder since are allowed: that is what the overlay is for), or
        whose size or gold coverage differs from the training KB's. allow_change=True only warns."""
        problems = []
        unspelled = self.tokenizer.missing(self.kb.characters(added=False))
        if unspelled:
            problems.append(f"its vocabulary cannot spell {len(unspelled)} character(s) of the KB's keys "
                            f"({''.join(unspelled[:20])}{'...' if len(unspelled) > 20 else ''})")
        if isinstance(trained, dict) and {"keys", "gold_coverage"} <= trained.keys():
            now = self.kb_fingerprint
            if now["gold_coverage"] < trained["gold_coverage"] - 0.05:
                problems.append(f"the KB holds the gold key of {now['gold_coverage']:.0%} of the labelled val/test "
                                f"questions, {trained['gold_coverage']:.0%} when trained")
            if not 0.5 <= now["keys"] / max(trained["keys"], 1) <= 2:
                problems.append(f"the KB has {now['keys']} keys, {trained['keys']} when trained")
        if not problems:
            return
        message = f"{checkpoint} was not trained with this KB: {'; '.join(problems)}"
        if not allow_change:
            raise CheckpointError(f"{message}. Set allow_kb_change=true to decode with it anyway")
        log.warning("%s (allow_kb_change=true: decoding with it anyway)", message)

    # --- batches ---------------------------------------------------------------------
    def encode_pair(self, example: QAExample) -> tuple[list[int], list[int]]:
        return encode_question(self.tokenizer, example.question, self.max_question_len), encode_key(self.tokenizer, example.triple.key, self.target)

    def collate(self, examples: list[QAExample], trie_targets: bool = False, candidates: int = 0) -> dict[str, Any]:
        """Teacher-forcing tensors (dynamic padding) plus the raw examples for decoding."""
        pairs = [self.encode_pair(e) for e in examples]
        batch = teacher_forcing(pairs, self.tokenizer.pad_id) | {"examples": examples}
        if trie_targets:
            batch["allowed"] = self.allowed_pairs([t for _, t in pairs])
        if candidates:
            batch["candidates"] = self.candidate_rows(examples, pairs, candidates)
        return batch

    def candidate_rows(self, examples: list[QAExample], pairs: list[tuple[list[int], list[int]]],
                       count: int) -> dict[str, torch.Tensor]:
        """The sequence loss's rows (UniLM.candidate_loss): per question its gold key, then `count` other
        KB keys drawn from the deepest trie node on the gold key's path that holds more than `count` keys:
        the keys the search tells the gold one apart from last (an entity's other predicates, then
        subjects sharing its first characters). Drawn the same way every epoch for a question (seed, id).
        `present` [B, count + 1] marks the rows holding a key (a KB with fewer keys pads with the gold one)."""
        trie = self.keyspace.trie
        states, _ = trie.path_states([t for _, t in pairs])
        on_path = states >= 0  # -1 past a path's end (and after it leaves the trie)
        holds_more = np.zeros(states.shape, dtype=bool)
        holds_more[on_path] = trie.key_count(states[on_path]) > count
        rows, present = [], torch.zeros((len(pairs), count + 1), dtype=torch.bool)
        for i, ((question, target), example) in enumerate(zip(pairs, examples)):
            deep = np.flatnonzero(holds_more[i])
            node = states[i, deep[-1]] if len(deep) else trie.ROOT
            others = trie.values_under(int(node))
            others = others[others != self.kb.find(example.triple.key)]
            rng = np.random.default_rng([self.seed, zlib.crc32(str(example.id).encode())])
            drawn = rng.choice(others, size=min(count, len(others)), replace=False)
            present[i, : 1 + len(drawn)] = True
            rows += [(question, target)] + [(question, encode_key(self.tokenizer, self.kb.keys[j], self.target)) for j in drawn]
            rows += [(question, target)] * (count - len(drawn))
        return teacher_forcing(rows, self.tokenizer.pad_id) | {"present": present}

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        """Tensors (also those of nested dicts) move; the raw examples (frozen dataclasses) stay as they are."""
        def move(value):
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value.to(device) if isinstance(value, torch.Tensor) else value
        return move(batch)

    def allowed_pairs(self, targets: list[list[int]]) -> torch.Tensor:
        """(position, token) pairs [K, 2]: the tokens the trie allows before each target token, positions
        numbered over the batch's target tokens in row-major order (as UniLM.loss reads them)."""
        trie = self.keyspace.trie
        states, lengths = trie.path_states(targets)
        flat = states[np.arange(states.shape[1]) < lengths[:, None]]  # before each token, row-major like a mask index
        in_trie = np.flatnonzero(flat >= 0)
        which, tokens = trie.allowed_tokens(flat[in_trie])
        return torch.from_numpy(np.stack([in_trie[which], np.asarray(tokens, dtype=np.int64)], 1))

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @cached_property
    def train_examples(self) -> list[QAExample]:
        train = self.splits["train"]
        return train + self.augment(train, self.kb) if self.augment else train  # never given val/test

    def train_collate(self, examples: list[QAExample]) -> dict[str, Any]:
        """A training batch of `examples`: with the trie's allowed tokens and candidate keys when the loss reads them."""
        return self.collate(examples, trie_targets=self.trie_targets, candidates=self.candidates)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._ranks()
        train = self.train_examples
        lengths = [len(e.question) + len(e.triple.key.subject + e.triple.key.predicate + e.triple.key.meaning) for e in train]
        sampler = BucketBatchSampler(lengths, self.batch_size, self.seed, rank, world, self.batches_per_bucket)
        return ResumableLoader(train, batch_sampler=sampler, collate_fn=self.train_collate, num_workers=self.num_workers,
                               generator=self._private_generator(), position=self._training_position)

    def _training_position(self) -> tuple[int, int]:
        """The training loop's epoch and the batches of it finished (checkpoints are saved between batches)."""
        return self.trainer.current_epoch, self.trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._ranks()
        sampler = LengthOrderedShard([len(e.question) for e in self.splits[split]], rank, world)
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, generator=self._private_generator())

    def _private_generator(self) -> torch.Generator:
        """Loaders draw their worker seeds from here, not from the global RNG that dropout uses:
        Lightning creates iterators at other moments when it resumes, which would shift dropout."""
        return torch.Generator().manual_seed(self.seed)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
