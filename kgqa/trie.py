"""The KB's key trie as flat numpy arrays: path-compressed, built by sorting, memory-mapped at load.

The keys are stored once, sorted and concatenated (`tokens`, `offsets`); `row_value` maps a
sorted row to its value (a KB key id). The nodes are the root, the branching nodes and the leaves:
- a leaf is a row: its node id is num_internal + row;
- an internal node n covers the rows key_lo[n] .. key_hi[n]-1, which share their first
  depth[n] tokens; its children are child[child_lo[n] : child_lo[n+1]], sorted by their first
  token child_token[...]; the last internal node is DEAD, with no rows and no children.
A state is a node and a depth packed in one int64 (node << DEPTH_BITS | depth). Below the node's
depth the state is inside the edge into that node, where the only allowed token is the next
token of the node's first row. Every query works on a batch of states at once.
At 20M keys the nested-dict trie of the reference code needs ~30 GB of RAM; this one is about
twice the size of its keys (uint16 tokens), built in numpy from the sorted keys and their LCPs.
No pickle: a saved trie is a folder of .npy files and a small trie.json.
"""
from __future__ import annotations

import itertools
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from kgqa.errors import DataError
from kgqa.saved import REBUILD, load_array, read_header, write_header

FORMAT = "kgqa-trie-v3"  # v3: trie.json lists each file's size and CRC-32
META = "trie.json"
ARRAYS = ("tokens", "offsets", "row_value", "depth", "key_lo", "key_hi", "child_lo", "child", "child_token")
DEPTH_BITS = 12
MAX_LENGTH = (1 << DEPTH_BITS) - 1  # longest key, in tokens
PREFIX_ERROR = "a sequence is a prefix of (or equal to) another"


def smallest_uint(max_value: int) -> np.dtype:
    """uint16 for a char vocabulary, uint32 for 20M keys: the arrays stay a fraction of int64's size."""
    for dtype in (np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class KeyTrie:
    """What the decoder asks of a key trie; states are opaque int64s, -1 for "not allowed"."""

    ROOT: int
    DEAD: int  # allows no token, is a leaf, has no values: the state of beams that are over

    def allowed_tokens(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(state index, token) pairs, grouped by state and sorted by token: what may come next."""
        raise NotImplementedError

    def step(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The state after each token; -1 where the token is not allowed."""
        raise NotImplementedError

    def is_leaf(self, states: np.ndarray) -> np.ndarray:
        """Where a whole key has been read."""
        raise NotImplementedError

    def key_count(self, states: np.ndarray) -> np.ndarray:
        """How many keys go through each state: past the last branch there is one, and the rest of
        it is forced."""
        raise NotImplementedError

    def values_under(self, state: int) -> np.ndarray:
        """Values (KB key ids) of every key through a state; one at a leaf."""
        raise NotImplementedError

    def sequences_under(self, state: int) -> list[np.ndarray]:
        """Token sequences of every key through a state (the look-ahead's completions), as values_under."""
        raise NotImplementedError

    def sequence(self, value: int) -> np.ndarray:
        """The token sequence of the key with this value."""
        raise NotImplementedError

    def walk(self, sequence: Sequence[int]) -> int:
        """The state a token sequence leads to from the root, or -1."""
        return int(self.walk_all([sequence])[0][0])

    def path_states(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The states along each sequence, all stepped together: [B, T+1], column k the state after
        its first k tokens (-1 once it leaves the trie, and past its end); and the lengths [B]."""
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        padded = np.zeros((len(sequences), int(lengths.max(initial=0))), dtype=np.int64)
        for i, s in enumerate(sequences):
            padded[i, : len(s)] = s
        states = np.full((len(sequences), padded.shape[1] + 1), -1, dtype=np.int64)
        states[:, 0] = self.ROOT
        for column in range(padded.shape[1]):
            go = np.flatnonzero((lengths > column) & (states[:, column] >= 0))
            states[go, column + 1] = self.step(states[go, column], padded[go, column])
        return states, lengths

    def walk_all(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Each sequence's state (-1 where it leaves the trie), and whether its path went through a
        whole key before its end (a key that is a proper prefix of it)."""
        states, lengths = self.path_states(sequences)
        inner = (np.arange(states.shape[1]) > 0) & (np.arange(states.shape[1]) < lengths[:, None]) & (states >= 0)
        leaf = np.zeros(states.shape, dtype=bool)  # the root is no key
        leaf[inner] = self.is_leaf(states[inner])
        return states[np.arange(len(states)), lengths], leaf.any(1)


class Trie(KeyTrie):
    ROOT = 0

    def __init__(self, tokens, offsets, row_value, depth, key_lo, key_hi, child_lo, child, child_token):
        self.tokens, self.offsets, self.row_value = tokens, offsets, row_value
        self.depth, self.key_lo, self.key_hi = depth, key_lo, key_hi
        self.child_lo, self.child, self.child_token = child_lo, child, child_token
        self.num_internal = len(depth)
        self.DEAD = (self.num_internal - 1) << DEPTH_BITS

    @property
    def num_keys(self) -> int:
        return len(self.row_value)

    @property
    def num_nodes(self) -> int:
        """Internal nodes (root and DEAD included) and leaves."""
        return self.num_internal + self.num_keys

    # --- build -----------------------------------------------------------------------
    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], values: Sequence[int] | None = None) -> "Trie":
        """Build from token sequences (none a prefix of another) and their values (default: index)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        tokens = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
        return cls.from_flat(tokens, lengths, values)

    @classmethod
    def from_flat(cls, tokens: np.ndarray, lengths: np.ndarray, values: np.ndarray | None = None) -> "Trie":
        """Build from sequences concatenated in `tokens` with their `lengths`: no Python object per key. Sorted
        sequences of the trie's token type (a KB's keys from encode_live_keys) are kept, not copied."""
        tokens, lengths = np.asarray(tokens), np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        values = np.arange(n) if values is None else np.asarray(values)
        if len(values) != n or len(tokens) != lengths.sum():
            raise ValueError("need one value per sequence and lengths that add up to the tokens")
        if n and (lengths.min() < 1 or lengths.max() > MAX_LENGTH):
            raise ValueError(f"sequences need 1 to {MAX_LENGTH} tokens ({PREFIX_ERROR} if empty)")
        if len(tokens) and tokens.min() < 0:
            raise ValueError("tokens must be >= 0")
        starts = np.cumsum(lengths) - lengths
        order, lcp = sort_rows(tokens, starts, lengths)
        sorted_tokens, offsets = gather_rows(tokens, starts, lengths, order, smallest_uint(int(tokens.max(initial=0))))
        row_value = values[order]
        compact = n and row_value.min() >= 0
        row_value = row_value.astype(smallest_uint(int(row_value.max())) if compact else np.int64)
        return cls(sorted_tokens, offsets, row_value, *internal_nodes(sorted_tokens, offsets, lcp))

    # --- states ----------------------------------------------------------------------
    @staticmethod
    def unpack(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        states = np.asarray(states, dtype=np.int64)
        return states >> DEPTH_BITS, states & MAX_LENGTH

    @staticmethod
    def pack(nodes: np.ndarray, depths: np.ndarray) -> np.ndarray:
        return (nodes << DEPTH_BITS) | depths

    def span(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Depth, first row and child range of each node, internal or leaf.

        A leaf reads DEAD's child range (empty), so one gather serves both kinds."""
        leaf = nodes >= self.num_internal
        inner = np.where(leaf, self.num_internal - 1, nodes)
        row = nodes - self.num_internal
        key_length = np.take(self.offsets, row + 1, mode="clip").astype(np.int64) - np.take(self.offsets, row, mode="clip")
        depth = np.where(leaf, key_length, self.depth[inner])
        first_row = np.where(leaf, row, self.key_lo[inner])
        return depth, first_row, self.child_lo[inner].astype(np.int64), self.child_lo[inner + 1].astype(np.int64)

    def rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sorted rows lo .. hi-1 of the keys through each node."""
        leaf = nodes >= self.num_internal
        inner = np.where(leaf, self.num_internal - 1, nodes)
        row = nodes - self.num_internal
        return np.where(leaf, row, self.key_lo[inner]), np.where(leaf, row + 1, self.key_hi[inner])

    def token_at(self, rows: np.ndarray, depths: np.ndarray) -> np.ndarray:
        return np.take(self.tokens, np.take(self.offsets, rows, mode="clip").astype(np.int64) + depths, mode="clip")

    # --- batched queries on (node, depth) --------------------------------------------
    def node_allowed(self, nodes: np.ndarray, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index, token, next node) of every allowed step, grouped by index and sorted by token."""
        node_depth, first_row, c_lo, c_hi = self.span(nodes)
        inside = depths < node_depth  # inside an edge: one token, the node's first row's
        counts = np.where(inside, 1, c_hi - c_lo)
        which = np.repeat(np.arange(len(nodes)), counts)
        ends = np.cumsum(counts)
        edge = np.arange(len(which)) + np.repeat(c_lo - ends + counts, counts)
        on_edge = inside[which]
        tokens = np.where(on_edge, self.token_at(first_row[which], depths[which]), np.take(self.child_token, edge, mode="clip"))
        nxt = np.where(on_edge, nodes[which], np.take(self.child, edge, mode="clip"))
        return which, tokens.astype(np.int64), nxt.astype(np.int64)

    def node_step(self, nodes: np.ndarray, depths: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The node after each token (the same node inside an edge); -1 where not allowed."""
        if not len(self.child):  # the empty trie
            return np.full(len(nodes), -1, dtype=np.int64)
        node_depth, first_row, lo, end = self.span(nodes)
        inside = depths < node_depth
        hi = np.where(inside, lo, end)
        while (open_ := lo < hi).any():  # binary search in each node's sorted child tokens
            mid = (lo + hi) >> 1
            right = np.take(self.child_token, mid, mode="clip") < tokens
            lo, hi = np.where(open_ & right, mid + 1, lo), np.where(open_ & ~right, mid, hi)
        found = (lo < end) & (np.take(self.child_token, lo, mode="clip") == tokens)
        nxt = np.where(found, np.take(self.child, lo, mode="clip").astype(np.int64), -1)
        return np.where(inside, np.where(self.token_at(first_row, depths) == tokens, nodes, -1), nxt)

    def node_is_leaf(self, nodes: np.ndarray, depths: np.ndarray) -> np.ndarray:
        node_depth, _, c_lo, c_hi = self.span(nodes)
        return (depths == node_depth) & (c_lo == c_hi)

    # --- the decoder's queries on states ---------------------------------------------
    def allowed_tokens(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        which, tokens, _ = self.node_allowed(*self.unpack(states))
        return which, tokens

    def step(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        nodes, depths = self.unpack(states)
        nxt = self.node_step(nodes, depths, np.asarray(tokens, dtype=np.int64))
        return np.where(nxt >= 0, self.pack(nxt, depths + 1), -1)

    def is_leaf(self, states: np.ndarray) -> np.ndarray:
        return self.node_is_leaf(*self.unpack(states))

    def key_count(self, states: np.ndarray) -> np.ndarray:
        lo, hi = self.rows(self.unpack(states)[0])
        return hi - lo

    def state_rows(self, state: int) -> tuple[int, int]:
        lo, hi = self.rows(self.unpack(np.array([state]))[0])
        return int(lo[0]), int(hi[0])

    def values_under(self, state: int) -> np.ndarray:
        lo, hi = self.state_rows(state)
        return np.asarray(self.row_value[lo:hi])

    def row_sequences(self, lo: int, hi: int) -> list[np.ndarray]:
        if hi <= lo:
            return []
        offsets = np.asarray(self.offsets[lo : hi + 1], dtype=np.int64)
        return np.split(np.asarray(self.tokens[offsets[0] : offsets[-1]]), offsets[1:-1] - offsets[0])

    def sequences_under(self, state: int) -> list[np.ndarray]:
        return self.row_sequences(*self.state_rows(state))

    @cached_property
    def _rows_by_value(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.row_value, kind="stable")
        return order, np.asarray(self.row_value)[order]

    def row_of(self, value: int) -> int:
        order, values = self._rows_by_value
        i = int(np.searchsorted(values, value))
        if i == len(values) or values[i] != value:
            raise KeyError(f"no key with value {value}")
        return int(order[i])

    def sequence(self, value: int) -> np.ndarray:
        row = self.row_of(value)
        return self.row_sequences(row, row + 1)[0]

    # --- files -----------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """The arrays as .npy files and trie.json (format, counts, each file's size and CRC-32), written last."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
        write_header(folder, META, {"format": FORMAT, "keys": self.num_keys, "internal_nodes": self.num_internal})

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> "Trie":
        """A trie saved with `save`, memory-mapped by default; a DataError naming the file that is
        missing, changed since it was saved or does not fit the others."""
        folder = Path(folder)
        header = read_header(folder, META, FORMAT, [f"{name}.npy" for name in ARRAYS], "kgqa trie", REBUILD)
        trie = cls(*(load_array(folder / f"{name}.npy", REBUILD, mmap) for name in ARRAYS))
        keys, internal = header.get("keys"), header.get("internal_nodes")
        if not isinstance(keys, int) or not isinstance(internal, int) or keys < 0 or internal < 2:
            raise DataError(f"{folder / META}: no key and node counts; {REBUILD}")
        for name, length in trie.array_lengths(keys, internal).items():
            if len(getattr(trie, name)) != length:
                raise DataError(f"{folder / name}.npy: {len(getattr(trie, name))} entries where the trie's "
                                f"other files need {length} (a partial write?); {REBUILD}")
        return trie

    def array_lengths(self, keys: int, internal: int) -> dict[str, int]:
        """How long each array must be for a trie of `keys` keys and `internal` internal nodes (in an
        order where the arrays a length is read from come first)."""
        edges = int(self.child_lo[-1]) if len(self.child_lo) == internal + 1 else -1
        tokens = int(self.offsets[-1]) if len(self.offsets) == keys + 1 else -1
        return {"offsets": keys + 1, "tokens": tokens, "row_value": keys, "depth": internal, "key_lo": internal,
                "key_hi": internal, "child_lo": internal + 1, "child": edges, "child_token": edges}


# --- building blocks, vectorised over all keys ---------------------------------------
def sort_rows(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort the sequences, one column at a time (most significant first), only within the groups
    of rows still tied. Returns the order and lcp[i] = tokens shared by sorted rows i-1 and i
    (length n+1, -1 at both ends); a tie that outlives a row means a prefix or a duplicate."""
    n = len(lengths)
    order = np.arange(n)
    lcp = in_order(tokens, starts, lengths)
    if lcp is not None:
        return order, lcp
    lcp = np.full(n + 1, -1, dtype=np.int32)
    pos = np.arange(n) if n > 1 else np.zeros(0, dtype=np.int64)  # positions in a tie of 2+ rows
    group = np.zeros(len(pos), dtype=np.int64)  # the tie of each of them, numbered in order
    radix = int(tokens.max(initial=0)) + 1
    if n * radix >= 2**63:
        raise ValueError("too many sequences for this vocabulary size")
    column = 0
    while len(pos):
        rows = order[pos]
        if (lengths[rows] <= column).any():
            raise ValueError(PREFIX_ERROR)
        column_tokens = tokens[starts[rows] + column].astype(np.int64)
        perm = np.argsort(group * radix + column_tokens)
        rows, column_tokens = rows[perm], column_tokens[perm]
        order[pos] = rows
        same_group = group[1:] == group[:-1]
        split = same_group & (column_tokens[1:] != column_tokens[:-1])
        lcp[pos[1:][split]] = column
        new_group = np.cumsum(np.concatenate([[True], ~same_group | split])) - 1
        tied = np.bincount(new_group)[new_group] > 1
        pos, group = pos[tied], new_group[tied]
        column += 1
    return order, lcp


def in_order(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, chunk: int = 1 << 14) -> np.ndarray | None:
    """sort_rows' lcp of sequences that are sorted already (as a KB's keys in id order are, under a character
    vocabulary in code-point order), from neighbours compared a column at a time instead of sorted; None at
    the first column with a pair out of order. A chunk of rows at a time: small arrays, reused from the cache."""
    lcp = np.full(len(lengths) + 1, -1, dtype=np.int32)
    for a in range(1, len(lengths), chunk):
        pairs = np.arange(a, min(a + chunk, len(lengths)))  # row i against row i-1, while they are equal so far
        column = 0
        while len(pairs):
            if (lengths[pairs - 1] <= column).any() or (lengths[pairs] <= column).any():
                raise ValueError(PREFIX_ERROR)
            before, after = tokens[starts[pairs - 1] + column], tokens[starts[pairs] + column]
            if (before > after).any():
                return None
            differ = before != after
            lcp[pairs[differ]] = column
            pairs = pairs[~differ]
            column += 1
    return lcp


def copy_segments(out: np.ndarray, out_starts: np.ndarray, src: np.ndarray, src_starts: np.ndarray, lengths: np.ndarray) -> None:
    """out[out_starts[i] + k] = src[src_starts[i] + k] for k < lengths[i]: many slices copied at once."""
    rank = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(out_starts, lengths) + rank] = src[np.repeat(src_starts, lengths) + rank]


def gather_rows(tokens, starts, lengths, order, dtype, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """The sequences concatenated in `order` and their offsets, a chunk of rows at a time (bounded memory)."""
    lengths = lengths[order]
    offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if np.array_equal(order, np.arange(len(order))) and np.array_equal(starts, offsets[:-1]):  # in place already:
        return tokens[: offsets[-1]].astype(dtype, copy=False), offsets.astype(smallest_uint(int(offsets[-1])))  # kept
    out = np.empty(int(offsets[-1]), dtype=dtype)
    for a in range(0, len(order), chunk):
        b = min(a + chunk, len(order))
        shift = np.repeat(starts[order[a:b]] - offsets[a:b], lengths[a:b])
        out[offsets[a] : offsets[b]] = tokens[shift + np.arange(offsets[a], offsets[b])]
    return out, offsets.astype(smallest_uint(int(offsets[-1])))


def index_dtype(n: int) -> np.dtype:
    """int32 for positions among n rows or nodes while they fit (all of KgCLUE's), else int64: the build's
    arrays of one position per row stay half the size."""
    return np.dtype(np.int32 if n < 2**31 - 1 else np.int64)


def previous_smaller(values: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """For each i in 1 .. len-2, the nearest j < i with values[j] < values[i].

    values[0] must be below all others. Pointer jumping: every pointer follows its target's
    pointer until it lands on a smaller value, all pointers at once (about log n rounds). First
    within chunks, not past a chunk's start (small arrays, reused from the cache), then the few
    pointers left at a chunk's start, over the whole array."""
    ptr = np.arange(-1, len(values) - 1, dtype=index_dtype(len(values)))

    def jump(todo: np.ndarray, floor: int) -> None:
        while len(todo):
            target = ptr[todo]
            blocked = (values[target] >= values[todo]) & (target >= floor)
            todo = todo[blocked]
            ptr[todo] = ptr[target[blocked]]

    for a in range(1, len(values) - 1, chunk):
        jump(np.arange(a, min(a + chunk, len(values) - 1)), a)
    todo = np.arange(1, len(values) - 1, dtype=ptr.dtype)
    jump(todo[values[ptr[todo]] >= values[todo]], 0)
    return ptr


def first_of_interval(lcp: np.ndarray, left: np.ndarray) -> np.ndarray:
    """For positions 1 .. n-1, whether each is the first of its lcp-interval: no position after left[i] (the
    previous smaller) and before it has its lcp. Positions are grouped by lcp with a stable radix sort (it fits
    int16), cheaper than finding the previous smaller-or-equal by pointer jumping."""
    n = len(lcp) - 1
    by_value = np.argsort(lcp.astype(np.int16), kind="stable")
    previous_same = np.full(n + 1, -1, dtype=left.dtype)  # the last position before each with the same lcp
    same = lcp[by_value[1:]] == lcp[by_value[:-1]]
    previous_same[by_value[1:][same]] = by_value[:-1][same]
    return previous_same[1:n] < left[1:n]


def internal_nodes(tokens: np.ndarray, offsets: np.ndarray, lcp: np.ndarray, chunk: int = 1 << 20) -> tuple[np.ndarray, ...]:
    """depth, key_lo, key_hi, child_lo, child, child_token of the trie over the sorted rows.

    The branching nodes are the lcp-intervals: for an lcp value d at position i, the rows from
    the previous position with lcp < d to the next one share d tokens. Numbered in preorder
    (by first row, then depth), with the root first and DEAD last. The children (the nodes but the
    root and DEAD, then the leaves) are found a chunk at a time into arrays of the smallest types,
    and each intermediate goes once used: at 20M keys this is the peak of writing a KB folder."""
    n = len(lcp) - 1
    left = previous_smaller(lcp)
    at = np.flatnonzero(first_of_interval(lcp, left) & (lcp[1:n] > 0)) + 1  # depth 0 is the root
    at = at[np.argsort(left[at].astype(np.int64) * (MAX_LENGTH + 1) + lcp[at])]  # preorder
    depth = np.concatenate([[0], lcp[at], [0]]).astype(np.uint16)
    key_lo = np.concatenate([[0], left[at], [0]])
    key_hi = np.concatenate([[n], n - previous_smaller(lcp[::-1].copy())[::-1][at], [0]])
    del at
    num_internal = len(depth)
    inner = num_internal - 2  # children that are internal nodes; the leaves follow them
    node_keys = key_lo[1:-1] * (MAX_LENGTH + 1) + depth[1:-1]

    count = inner + n
    first_rows = np.empty(count, dtype=index_dtype(n + 1))
    first_rows[:inner], first_rows[inner:] = key_lo[1:-1], np.arange(n)
    parents = np.empty(count, dtype=index_dtype(num_internal))
    child_tokens = np.empty(count, dtype=tokens.dtype)
    for a in range(0, count, chunk):  # each child's parent: the node of the larger lcp at its ends
        b = min(a + chunk, count)
        first_row = first_rows[a:b]
        end_row = first_row + 1  # a leaf's; a node's is its key_hi
        end_row[: max(min(b, inner) - a, 0)] = key_hi[1 + a : 1 + min(b, inner)]
        parent_depth = np.maximum(lcp[first_row], lcp[end_row])
        parent_lo = np.where(lcp[first_row] < parent_depth, first_row, left[first_row]).astype(np.int64)
        found = np.searchsorted(node_keys, parent_lo * (MAX_LENGTH + 1) + parent_depth) + 1
        parents[a:b] = np.where(parent_depth > 0, found, 0)
        child_tokens[a:b] = tokens[offsets[first_row].astype(np.int64) + np.maximum(parent_depth, 0)]
    del left, node_keys
    child_lo = np.zeros(num_internal + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=num_internal), out=child_lo[1:])
    by_parent = parents.astype(np.int64) * (n + 1)
    del parents
    by_parent += first_rows
    del first_rows
    by_parent = np.argsort(by_parent)  # a node's children in row order = token order
    child = np.empty(count, dtype=smallest_uint(num_internal + n))
    for a in range(0, count, chunk):  # child i < inner is node i + 1, the others are the leaves
        which = by_parent[a : a + chunk]
        child[a : a + chunk] = np.where(which < inner, which + 1, which - inner + num_internal)
    row_dtype = smallest_uint(n)
    return (depth, key_lo.astype(row_dtype), key_hi.astype(row_dtype), child_lo.astype(smallest_uint(int(child_lo[-1]))),
            child, child_tokens[by_parent])


ADDED_BITS = 20  # an overlay holds up to ~500k added keys; merge it before that
BASE_BITS = 63 - ADDED_BITS - DEPTH_BITS


class OverlayTrie(KeyTrie):
    """A saved trie plus the keys added and deleted since it was built: the same queries, no rebuild.

    A state packs the base trie's node and the added keys' trie's node on the same path (each +1,
    0 where the path has left that trie) and the depth. A base node counts only while one of its
    keys is not deleted, so a path whose keys are all deleted is never allowed. Rebuilding the base
    (`kgqa-kb action=merge`) folds the changes in.
    """

    ROOT = (1 << (ADDED_BITS + DEPTH_BITS)) | (1 << DEPTH_BITS)
    DEAD = 0

    def __init__(self, base: Trie, added: Trie, deleted_rows: np.ndarray):
        if base.num_nodes >= (1 << BASE_BITS) - 1 or added.num_nodes >= (1 << ADDED_BITS) - 1:
            raise ValueError("too many keys for an overlay: merge it into the base trie (kgqa-kb action=merge)")
        self.base, self.added = base, added
        self.deleted = np.unique(np.asarray(deleted_rows, dtype=np.int64))

    @classmethod
    def over(cls, base: Trie, added: Sequence[Sequence[int]], added_values: Sequence[int],
             deleted: Sequence[Sequence[int]]) -> "OverlayTrie":
        """The base with `added` keys (values `added_values`) and the base keys `deleted`."""
        states, through_key = base.walk_all(added)
        if ((states >= 0) | through_key).any():
            raise ValueError(f"an added key: {PREFIX_ERROR} key of the base trie")
        states = base.walk_all(deleted)[0]
        if len(states) and ((states < 0) | ~base.is_leaf(np.maximum(states, 0))).any():
            raise KeyError("a deleted key is not a key of the base trie")
        nodes = base.unpack(states)[0]
        return cls(base, Trie.build(added, added_values), base.rows(nodes)[0])

    def unpack(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        states = np.asarray(states, dtype=np.int64)
        added = (states >> DEPTH_BITS) & ((1 << ADDED_BITS) - 1)
        return (states >> (ADDED_BITS + DEPTH_BITS)) - 1, added - 1, states & MAX_LENGTH

    @staticmethod
    def pack(base_nodes: np.ndarray, added_nodes: np.ndarray, depths: np.ndarray) -> np.ndarray:
        return ((base_nodes + 1) << (ADDED_BITS + DEPTH_BITS)) | ((added_nodes + 1) << DEPTH_BITS) | depths

    def base_key_count(self, base_nodes: np.ndarray) -> np.ndarray:
        """Keys through each base node that are not deleted."""
        lo, hi = self.base.rows(base_nodes)
        if not len(self.deleted):
            return hi - lo
        return hi - lo - (np.searchsorted(self.deleted, hi) - np.searchsorted(self.deleted, lo))

    def live(self, base_nodes: np.ndarray) -> np.ndarray:
        """Base nodes with a key that is not deleted."""
        return self.base_key_count(base_nodes) > 0

    def parts(self, states: np.ndarray):
        """(trie, indices of the states on a path of it, their nodes, depths) for the base and the added trie."""
        base_nodes, added_nodes, depths = self.unpack(states)
        for trie, nodes in ((self.base, base_nodes), (self.added, added_nodes)):
            i = np.flatnonzero(nodes >= 0)
            yield trie, i, nodes[i], depths[i]

    def allowed_tokens(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = []
        for trie, i, nodes, depths in self.parts(states):
            which, tokens, nxt = trie.node_allowed(nodes, depths)
            if trie is self.base and len(self.deleted):
                keep = self.live(nxt)
                which, tokens = which[keep], tokens[keep]
            pairs.append((i[which], tokens))
        (base_rows, base_tokens), (added_rows, added_tokens) = pairs
        if not len(added_rows):
            return base_rows, base_tokens
        # merge two lists sorted by (row, token): insert the added pairs the base does not have
        width = int(max(base_tokens.max(initial=0), added_tokens.max())) + 1
        base_keys, added_keys = base_rows * width + base_tokens, added_rows * width + added_tokens
        at = np.searchsorted(base_keys, added_keys)
        both = np.zeros(len(added_keys), dtype=bool)
        inside = np.flatnonzero(at < len(base_keys))
        both[inside] = base_keys[at[inside]] == added_keys[inside]
        merged = np.insert(base_keys, at[~both], added_keys[~both])
        return merged // width, merged % width

    def step(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        nxt = []
        for trie, i, nodes, depths in self.parts(states):
            out = np.full(len(tokens), -1, dtype=np.int64)
            out[i] = trie.node_step(nodes, depths, tokens[i])
            if trie is self.base:
                on = np.flatnonzero(out >= 0)
                out[on[~self.live(out[on])]] = -1
            nxt.append(out)
        depths = self.unpack(states)[2]
        return np.where((nxt[0] < 0) & (nxt[1] < 0), -1, self.pack(nxt[0], nxt[1], depths + 1))

    def is_leaf(self, states: np.ndarray) -> np.ndarray:
        """A whole key of either trie has been read (or DEAD)."""
        leaf = np.asarray(states, dtype=np.int64) == self.DEAD
        for trie, i, nodes, depths in self.parts(states):
            has_keys = self.live(nodes) if trie is self.base else np.greater(*trie.rows(nodes)[::-1])
            leaf[i] |= trie.node_is_leaf(nodes, depths) & has_keys
        return leaf

    def key_count(self, states: np.ndarray) -> np.ndarray:
        count = np.zeros(len(states), dtype=np.int64)
        for trie, i, nodes, _ in self.parts(states):
            count[i] += self.base_key_count(nodes) if trie is self.base else np.subtract(*trie.rows(nodes)[::-1])
        return count

    def rows_under(self, state: int):
        """(trie, rows) of the keys through a state: the base's not deleted, then the added ones."""
        for trie, i, nodes, _ in self.parts(np.array([state])):
            if len(i):
                lo, hi = (int(x[0]) for x in trie.rows(nodes))
                rows = np.arange(lo, hi)
                yield trie, rows[~np.isin(rows, self.deleted)] if trie is self.base else rows

    def values_under(self, state: int) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype=np.int64)] + [trie.row_value[rows] for trie, rows in self.rows_under(state)])

    def sequences_under(self, state: int) -> list[np.ndarray]:
        return [s for trie, rows in self.rows_under(state) for r in rows.tolist() for s in trie.row_sequences(r, r + 1)]

    def sequence(self, value: int) -> np.ndarray:
        try:
            return self.base.sequence(value)
        except KeyError:
            return self.added.sequence(value)
