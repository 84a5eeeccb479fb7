"""The path-compressed array trie against a brute-force dict reference."""
import json
import random

import numpy as np
import pytest

from kgqa.trie import ARRAYS, KeyTrie, Trie, in_order, previous_smaller, sort_rows


def random_sequences(seed: int, n: int, vocab: int, max_len: int) -> list[tuple[int, ...]]:
    """Distinct random sequences, none a prefix of another (prefixes of others are dropped)."""
    rng = random.Random(seed)
    seqs = {tuple(rng.randrange(vocab) for _ in range(rng.randint(1, max_len))) for _ in range(n)}
    return [s for s in seqs if not any(o != s and o[: len(s)] == s for o in seqs)]


class Reference:
    """What the trie should answer, computed naively from the sequences."""

    def __init__(self, seqs, values):
        self.next: dict[tuple, set] = {(): set()}
        self.under: dict[tuple, list] = {(): []}
        for s, v in zip(seqs, values):
            for d in range(len(s) + 1):
                self.next.setdefault(s[:d], set())
                self.under.setdefault(s[:d], []).append((v, s))
                if d < len(s):
                    self.next[s[:d]].add(s[d])
        self.full = set(seqs)
        self.by_value = dict(zip(values, seqs))


def explore(trie: KeyTrie):
    """Every (prefix, state) reachable from the root through allowed_tokens / step."""
    out, frontier = {(): trie.ROOT}, [((), trie.ROOT)]
    while frontier:
        prefix, node = frontier.pop()
        which, toks = trie.allowed_tokens(np.array([node]))
        assert (which == 0).all()
        nxt = trie.step(np.full(len(toks), node), toks)
        for t, child in zip(toks.tolist(), nxt.tolist()):
            assert child > 0
            out[prefix + (t,)] = child
            frontier.append((prefix + (t,), child))
    return out


CASES = [(0, 60, 4, 6), (1, 200, 7, 8), (2, 30, 2, 10), (3, 5, 50, 3), (4, 1, 3, 4)]


@pytest.fixture(scope="module", params=CASES, ids=[f"seed{c[0]}" for c in CASES])
def built(request):
    seed, n, vocab, max_len = request.param
    seqs = random_sequences(seed, n, vocab, max_len)
    values = random.Random(seed).sample(range(10 * len(seqs) + 10), len(seqs))
    return seqs, values, Trie.build(seqs, values), Reference(seqs, values)


def check_against_reference(trie: KeyTrie, ref: Reference, rng: random.Random):
    nodes = explore(trie)
    assert set(nodes) == set(ref.next)  # exactly the prefixes of the sequences
    assert len(set(nodes.values())) == len(nodes)  # one state per prefix
    prefixes = sorted(nodes)
    states = np.array([nodes[p] for p in prefixes])

    # allowed tokens, batched over all nodes at once, grouped by state and sorted
    which, toks = trie.allowed_tokens(states)
    assert (np.diff(which) >= 0).all()
    for i, p in enumerate(prefixes):
        got = toks[which == i].tolist()
        assert got == sorted(ref.next[p])

    # is_leaf and key_count, batched
    np.testing.assert_array_equal(trie.is_leaf(states), [p in ref.full for p in prefixes])
    np.testing.assert_array_equal(trie.key_count(states), [len(ref.under[p]) for p in prefixes])

    # values_under and sequences_under: every key through the state, in the same order; one at a leaf
    for p, s in zip(prefixes, states):
        values, seqs = trie.values_under(int(s)).tolist(), [tuple(q.tolist()) for q in trie.sequences_under(int(s))]
        assert sorted(zip(values, seqs)) == sorted(ref.under[p])
        assert trie.walk(p) == s
    for value, seq in ref.by_value.items():
        assert tuple(trie.sequence(value).tolist()) == seq

    # walk_all: the same states, all prefixes at once, and no key on the way to a prefix
    walked, through_key = trie.walk_all(prefixes)
    np.testing.assert_array_equal(walked, states)
    assert not through_key.any()
    extended = [k + (0,) for k in sorted(ref.full)]  # one token past a whole key
    walked, through_key = trie.walk_all(extended)
    assert (walked == -1).all() and through_key.all()

    # DEAD: allows nothing, is a leaf, holds no key
    assert len(trie.allowed_tokens(np.array([trie.DEAD]))[0]) == 0
    assert trie.is_leaf(np.array([trie.DEAD]))[0]
    assert len(trie.values_under(trie.DEAD)) == len(trie.sequences_under(trie.DEAD)) == trie.key_count(np.array([trie.DEAD]))[0] == 0
    assert trie.step(np.array([trie.DEAD]), np.array([0]))[0] == -1

    # step on a batch with random tokens, some allowed and some not
    tokens = np.array([rng.randrange(-1, 60) for _ in prefixes])
    expected = [nodes.get(p + (t,), -1) for p, t in zip(prefixes, tokens.tolist())]
    np.testing.assert_array_equal(trie.step(states, tokens), expected)
    # step along the allowed tokens of a permuted batch (states repeat)
    perm = np.array([rng.randrange(len(prefixes)) for _ in range(3 * len(prefixes))])
    for _ in range(3):
        toks = [rng.choice(sorted(ref.next[prefixes[i]]) or [0]) for i in perm]
        expected = [nodes.get(prefixes[i] + (t,), -1) for i, t in zip(perm, toks)]
        np.testing.assert_array_equal(trie.step(states[perm], np.array(toks)), expected)

    assert trie.walk((999,)) == -1


def test_trie_matches_reference(built):
    seqs, values, trie, ref = built
    check_against_reference(trie, ref, random.Random(0))
    # path compression: a node per key and per branching prefix, plus the root and DEAD
    branching = [p for p in ref.next if p and len(ref.next[p]) > 1]
    assert trie.num_nodes == len(ref.full) + len(branching) + 2


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c[0]}" for c in CASES])
def test_keys_given_in_order_build_the_same_arrays(case):
    """Sequences already sorted (a KB's keys in id order) skip the sort: the same trie, byte for byte."""
    seed, n, vocab, max_len = case
    seqs = random_sequences(seed, n, vocab, max_len)
    values = random.Random(seed).sample(range(10 * len(seqs) + 10), len(seqs))
    in_order = sorted(zip(seqs, values))
    assert len(seqs) < 2 or seqs != [s for s, _ in in_order]  # the other one is sorted
    given, sorted_first = Trie.build(seqs, values), Trie.build(*zip(*in_order))
    for name in ARRAYS:
        a, b = getattr(given, name), getattr(sorted_first, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 14])
def test_the_chunked_steps_match_the_whole_array_ones(chunk):
    """in_order (rows already sorted) gives the lcp the sort gives; previous_smaller the nearest smaller value;
    whatever the chunk of rows each works on at a time."""
    seqs = sorted(random_sequences(1, 200, 7, 8))
    lengths = np.array([len(s) for s in seqs])
    starts = np.cumsum(lengths) - lengths
    tokens = np.array([t for s in seqs for t in s], dtype=np.uint16)
    shuffled = random.Random(0).sample(range(len(seqs)), len(seqs))
    order, lcp = sort_rows(tokens, starts[shuffled], lengths[shuffled])
    assert [shuffled[i] for i in order] == list(range(len(seqs))) and (lcp >= 0).sum() == len(seqs) - 1
    np.testing.assert_array_equal(in_order(tokens, starts, lengths, chunk), lcp)
    assert in_order(tokens, starts[shuffled], lengths[shuffled], chunk) is None
    values = np.concatenate([[-1], np.random.default_rng(chunk).integers(0, 6, 300), [-1]])
    nearest = [max(j for j in range(i) if values[j] < values[i]) for i in range(1, len(values) - 1)]
    assert previous_smaller(values, chunk)[1:-1].tolist() == nearest


def test_long_shared_prefixes():
    """Keys sharing long runs (edges of many tokens), with branches inside and at the ends of runs."""
    stem = tuple(range(10, 40))
    seqs = [stem + (1,), stem + (2, 5), stem[:7] + (3,), stem[:7] + (4, 4, 4, 4), (9,) + stem, (9, 1)]
    trie = Trie.build(seqs)
    check_against_reference(trie, Reference(seqs, list(range(len(seqs)))), random.Random(1))
    assert trie.num_nodes == len(seqs) + 3 + 2  # branching after stem[:7], stem and (9,); the root; DEAD


def test_from_flat_compact_dtypes():
    seqs = random_sequences(7, 300, 70000, 5)  # a vocabulary over 16 bits
    trie = Trie.from_flat(np.concatenate([np.array(s) for s in seqs]), [len(s) for s in seqs])
    assert trie.tokens.dtype == np.uint32 and trie.child_token.dtype == np.uint32
    assert trie.row_value.dtype == trie.key_lo.dtype == np.uint16 and trie.depth.dtype == np.uint16
    check_against_reference(trie, Reference(seqs, list(range(len(seqs)))), random.Random(2))


def test_default_values_are_indices():
    seqs = random_sequences(5, 40, 5, 5)
    trie = Trie.build(seqs)
    for i, s in enumerate(seqs):
        leaf = trie.walk(s)
        assert trie.is_leaf(np.array([leaf]))[0]
        assert trie.values_under(leaf).tolist() == [i]


def test_save_load_round_trip(built, tmp_path):
    seqs, values, trie, ref = built
    trie.save(tmp_path / "trie")
    loaded = Trie.load(tmp_path / "trie")  # memory-mapped by default
    for name in ARRAYS:
        arr = getattr(loaded, name)
        assert isinstance(arr.base, np.memmap)  # a view of the file, not a copy
        assert arr.dtype == np.asarray(getattr(trie, name)).dtype
        np.testing.assert_array_equal(arr, getattr(trie, name))
    check_against_reference(loaded, ref, random.Random(0))
    in_memory = Trie.load(tmp_path / "trie", mmap=False)
    assert not isinstance(in_memory.tokens.base, np.memmap)
    np.testing.assert_array_equal(in_memory.row_value, trie.row_value)


def test_load_rejects_folders_that_are_not_tries(tmp_path):
    with pytest.raises(ValueError, match="not a saved kgqa trie"):
        Trie.load(tmp_path)  # empty folder
    with pytest.raises(ValueError):
        Trie.load(tmp_path / "missing")
    (tmp_path / "trie.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a saved kgqa trie"):
        Trie.load(tmp_path)


@pytest.mark.parametrize(
    "seqs",
    [
        [(1, 2), (1, 2, 3)],
        [(1, 2, 3), (4,), (1, 2)],  # the prefix comes later
        [(5,), (5, 0, 0)],
        [(1, 2), (3,), (1, 2)],  # equal sequences
        [(2, 1), (1,), (1, 0), (0,), (1, 0, 1)],
    ],
)
def test_prefix_of_another_raises(seqs):
    with pytest.raises(ValueError, match="prefix"):
        Trie.build(seqs)


def test_not_a_prefix_is_fine():
    trie = Trie.build([(1, 2), (1, 3, 0), (2,)])
    assert trie.num_nodes == 6
    assert trie.values_under(trie.walk((1,))).tolist() == [0, 1]


def test_empty_trie():
    trie = Trie.build([])
    assert trie.num_nodes == 2  # the root and DEAD
    assert trie.walk(()) == Trie.ROOT and trie.walk((1,)) == -1
    assert trie.is_leaf(np.array([Trie.ROOT]))[0]
    which, toks = trie.allowed_tokens(np.array([Trie.ROOT]))
    assert len(which) == len(toks) == 0
    assert len(trie.values_under(Trie.ROOT)) == 0
