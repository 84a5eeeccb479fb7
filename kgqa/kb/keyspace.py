"""The KB's keys as the decoder sees them: token sequences in a prefix trie."""
from __future__ import annotations

import itertools
import logging

import numpy as np

from kgqa.kb.columns import FIELDS, KnowledgeBase, key_order
from kgqa.kb.strings import Strings, code_points
from kgqa.data.tokenizer import CharTokenizer, Tokenizer
from kgqa.data.triples import Key, order_fields
from kgqa.errors import DataError
from kgqa.trie import MAX_LENGTH, KeyTrie, Trie, smallest_uint

log = logging.getLogger(__name__)
CHUNK = 1 << 14  # keys assembled at a time: index arrays of a few MB, reused from the cache, not fresh pages


def show(key: Key, width: int = 60) -> str:
    """A key as its line of Knowledge.txt begins (S（M） TAB P), cut to `width` characters for a message."""
    text = f"{key.full_subject}\t{key.predicate}"
    return repr(text if len(text) <= width else text[:width] + "...")


class KeyTooLong(DataError):
    """A key with more tokens than a trie path holds; `key` is kept for callers that know its file and line."""

    def __init__(self, key: Key, length: int, order: str):
        self.key = key
        super().__init__(f"the key {show(key)} is {length} tokens long in the {order} order; a key trie takes at "
                         f"most {MAX_LENGTH} (shorten it or leave it out)")


def encode_live_keys(kb: KnowledgeBase, tokenizer: Tokenizer, order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Flat tokens, lengths and ids of the KB's live keys, each as encode_key writes it (part [SEP]
    per part, in the target order), and how many keys were left out (with a warning naming one) for
    encoding like another. A key too long for a trie is a KeyTooLong, raised before any trie is built.

    Each distinct subject, predicate and meaning is encoded once (encode_strings) and the keys are
    assembled with array copies: no Python object per key, for 20M keys. Keys whose tokens are the same (strings
    the tokenizer cannot tell apart, e.g. characters it maps to [UNK]) keep the lowest id only."""
    tables, columns = kb.field_indices()
    ids = np.flatnonzero(kb.live_mask())
    parts = []  # per part in the target order: each key's encoding index; the flat encodings, their starts and lengths
    distinct = True  # whether every part's strings encode to distinct tokens: then so do the (distinct) keys
    for field in order_fields(order):
        index, flat, starts, lengths = encode_strings(tokenizer, tables[FIELDS.index(field)])
        parts.append((index[columns[FIELDS.index(field), ids]], flat, starts, lengths))
        distinct &= len(lengths) == len(tables[FIELDS.index(field)])
    del columns
    repeated = np.zeros(len(ids), dtype=bool)
    if not distinct:
        codes = np.stack([part[0] for part in parts])
        by_code = key_order(list(codes), [len(part[3]) for part in parts])  # stable: among equal encodings the lowest id first
        repeated[by_code[1:]] = (codes[:, by_code[1:]] == codes[:, by_code[:-1]]).all(0)
        repeats = np.flatnonzero(repeated[by_code])  # in code order, the first repeat follows the key it repeats
        if len(repeats):
            log.warning("%d KB keys encode to the same tokens as another key under this tokenizer (characters it "
                        "cannot represent), e.g. %s as %s; only the first of each can be decoded", len(repeats),
                        *(show(kb.keys[int(ids[by_code[j]])]) for j in (repeats[0], repeats[0] - 1)))
        ids, parts = ids[~repeated], [(part[0][~repeated], *part[1:]) for part in parts]

    sep = tokenizer.sep_id
    key_lengths = sum(lengths[key_index] for key_index, _, _, lengths in parts) + len(parts)
    too_long = np.flatnonzero(key_lengths > MAX_LENGTH)
    if len(too_long):
        raise KeyTooLong(kb.keys[int(ids[too_long[0]])], int(key_lengths[too_long[0]]), order)
    dtype = smallest_uint(max([sep] + [int(flat.max(initial=0)) for _, flat, _, _ in parts]))
    # every part's encodings, each followed by a [SEP], one part after another: a key is a slice of each part's
    pieces, piece_starts = [], []
    for _, flat, starts, lengths in parts:
        piece = np.full(len(flat) + len(lengths), sep, dtype=dtype)
        piece[np.arange(len(flat)) + np.repeat(np.arange(len(lengths)), lengths)] = flat  # flat is contiguous
        piece_starts.append(sum(map(len, pieces)) + starts + np.arange(len(starts)))
        pieces.append(piece)
    source = np.concatenate(pieces)
    del pieces
    tokens = np.empty(int(key_lengths.sum()), dtype=dtype)
    key_ends = np.cumsum(key_lengths)
    for a in range(0, len(ids), CHUNK):
        b = min(a + CHUNK, len(ids))
        slice_starts = np.stack([at[key_index[a:b]] for at, (key_index, *_) in zip(piece_starts, parts)], 1).ravel()
        slice_lengths = np.stack([lengths[key_index[a:b]] + 1 for key_index, _, _, lengths in parts], 1).ravel()
        first, last = int(key_ends[a] - key_lengths[a]), int(key_ends[b - 1])
        # each token's place in `source` is the one after the last token's, but where a slice starts: a running sum
        step = np.ones(last - first, dtype=np.int64)
        step[np.cumsum(slice_lengths[:-1])] = slice_starts[1:] - (slice_starts[:-1] + slice_lengths[:-1]) + 1
        step[0] = slice_starts[0]
        tokens[first:last] = source[np.cumsum(step)]
    return tokens, key_lengths, ids, int(repeated.sum())


def encode_strings(tokenizer: Tokenizer, strings: Strings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per string the index of its encoding, and the distinct encodings (flat tokens, starts, lengths), as
    tokenizer.encode gives them. A character vocabulary encodes all strings at once from their code points
    (distinct strings, distinct encodings, while none has an [UNK]); another tokenizer, one call per string."""
    if isinstance(tokenizer, CharTokenizer):
        points, starts = code_points(strings.array)
        ids = np.full(int(points.max(initial=0)) + 1, tokenizer.unk_id, dtype=np.int64)
        for i, char in enumerate(tokenizer.vocab):  # as its dict: the last entry of a character wins
            if len(char) == 1 and ord(char) < len(ids):
                ids[ord(char)] = i
        flat = ids[points]
        if not (flat == tokenizer.unk_id).any():
            return np.arange(len(strings)), flat, starts[:-1], np.diff(starts)
    encodings: dict[tuple[int, ...], int] = {}  # distinct encodings, so equal encodings share an index
    index = np.fromiter((encodings.setdefault(tuple(tokenizer.encode(t)), len(encodings)) for t in strings),
                        dtype=np.int64, count=len(strings))
    lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter(itertools.chain.from_iterable(encodings), dtype=np.int64, count=int(lengths.sum()))
    return index, flat, np.cumsum(lengths) - lengths, lengths


class KeySpace:
    """Trie value = KB key id, so a decoded leaf maps straight to (S, P, M) and its objects.

    `trie` is a saved one (with its overlay) for this KB and tokenizer; by default it is built
    from the KB's keys (deleted keys left out, ids kept)."""

    def __init__(self, kb: KnowledgeBase, tokenizer: Tokenizer, order: str, trie: KeyTrie | None = None):
        self.kb, self.order, self.tokenizer, self.sep_id = kb, order, tokenizer, tokenizer.sep_id
        if trie is None:
            tokens, lengths, ids, _ = encode_live_keys(kb, tokenizer, order)
            trie = Trie.from_flat(tokens, lengths, ids)
        self.trie = trie
