"""A prefix trie over token sequences, stored as flat numpy arrays.

Nodes are numbered breadth-first with the sequences sorted, so
- the children of node n are the nodes child_lo[n] .. child_lo[n+1]-1, sorted by token;
- the sequences through node n are the sorted rows key_lo[n] .. key_hi[n]-1, and
  row_value maps a row to its value (a KB key id).
No pickle, no JSON: a saved trie is a folder of .npy files, memory-mapped at load.
Every operation a decoder needs works on a batch of states (node ids) at once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

ARRAYS = ("token", "child_lo", "key_lo", "key_hi", "row_value")
FORMAT = "kgqa-trie-v1"


class Trie:
    ROOT = 0

    def __init__(self, token, child_lo, key_lo, key_hi, row_value):
        self.token, self.child_lo, self.key_lo, self.key_hi, self.row_value = token, child_lo, key_lo, key_hi, row_value

    @property
    def num_nodes(self) -> int:
        return len(self.token)

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], values: Sequence[int] | None = None) -> "Trie":
        """Build from token sequences (none a prefix of another) and their values (default: index)."""
        n = len(sequences)
        values = np.arange(n, dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=n)
        width = int(lengths.max()) if n else 0
        rows = np.full((n, width), -1, dtype=np.int32)
        for i, s in enumerate(sequences):
            rows[i, : len(s)] = s
        return cls._from_rows(rows, lengths, values)

    @classmethod
    def _from_rows(cls, rows: np.ndarray, lengths: np.ndarray, values: np.ndarray) -> "Trie":
        n, width = rows.shape
        order = np.lexsort(rows.T[::-1]) if n else np.zeros(0, dtype=np.int64)
        rows, lengths, values = rows[order], lengths[order], values[order]
        # lcp[i]: tokens row i shares with row i-1 (0 for the first row)
        lcp = np.zeros(n, dtype=np.int64)
        if n > 1:
            diff = rows[1:] != rows[:-1]
            lcp[1:] = np.where(diff.any(axis=1), diff.argmax(axis=1), width)
            if (lcp[1:] >= np.minimum(lengths[1:], lengths[:-1])).any():
                raise ValueError("a sequence is a prefix of (or equal to) another")
        tokens, key_lo, key_hi, child_lo = [np.array([-1])], [np.array([0])], [np.array([n])], []
        prev_lo, offset = np.array([0]), 1
        for depth in range(1, width + 1):
            starts = np.flatnonzero((lcp < depth) & (lengths >= depth))
            bounds = np.append(np.flatnonzero(lcp < depth), n)
            ends = bounds[np.searchsorted(bounds, starts, side="right")]
            child_lo.append(offset + np.searchsorted(starts, prev_lo))
            tokens.append(rows[starts, depth - 1])
            key_lo.append(starts)
            key_hi.append(ends)
            prev_lo, offset = starts, offset + len(starts)
        child_lo.append(np.full(len(prev_lo), offset))
        child_lo.append(np.array([offset]))
        cat = lambda parts, dtype: np.concatenate(parts).astype(dtype)  # noqa: E731
        return cls(cat(tokens, np.int32), cat(child_lo, np.int64), cat(key_lo, np.int64), cat(key_hi, np.int64), values)

    # --- batched queries -------------------------------------------------------------
    def children(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (state index, child node) pairs of a batch of states, grouped by state."""
        states = np.asarray(states, dtype=np.int64)
        lo, hi = self.child_lo[states], self.child_lo[states + 1]
        counts = hi - lo
        which = np.repeat(np.arange(len(states)), counts)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        return which, np.arange(counts.sum()) + starts

    def allowed_tokens(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(state index, token) pairs: the tokens that continue some sequence from each state."""
        which, child = self.children(states)
        return which, self.token[child]

    def step(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The child of each state along its token; -1 where the token is not allowed."""
        which, child = self.children(states)
        hit = self.token[child] == np.asarray(tokens)[which]
        nxt = np.full(len(states), -1, dtype=np.int64)
        nxt[which[hit]] = child[hit]
        return nxt

    def is_leaf(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=np.int64)
        return self.child_lo[states] == self.child_lo[states + 1]

    def values_under(self, state: int) -> np.ndarray:
        """Values of every sequence through a node (one value at a leaf)."""
        return self.row_value[self.key_lo[state] : self.key_hi[state]]

    def walk(self, sequence: Sequence[int]) -> int:
        """The node a sequence leads to from the root, or -1."""
        state = np.array([self.ROOT])
        for t in sequence:
            state = self.step(state, np.array([t]))
            if state[0] < 0:
                return -1
        return int(state[0])

    # --- files -----------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
        (folder / "trie.json").write_text(json.dumps({"format": FORMAT, "nodes": self.num_nodes}))

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> "Trie":
        folder = Path(folder)
        meta = folder / "trie.json"
        if not meta.is_file() or json.loads(meta.read_text()).get("format") != FORMAT:
            raise ValueError(f"{folder}: not a saved kgqa trie (no {meta.name} with format {FORMAT})")
        mode = "r" if mmap else None
        return cls(*(np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False) for name in ARRAYS))
