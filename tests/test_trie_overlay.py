"""The overlay of added and deleted keys answers exactly as a trie rebuilt over the changed keys."""
import random

import pytest

from kgqa.trie import OverlayTrie, Trie
from test_trie import Reference, check_against_reference, random_sequences


def split_keys(seed: int, seqs, added_share: float, deleted_share: float):
    """(base keys, added keys, deleted base keys) drawn from prefix-free sequences."""
    rng = random.Random(seed)
    seqs = sorted(seqs)
    rng.shuffle(seqs)
    n_added = round(added_share * len(seqs))
    base, added = seqs[n_added:], seqs[:n_added]
    return base, added, rng.sample(base, round(deleted_share * len(base)))


CASES = [  # seed, n, vocab, max_len, added share, deleted share
    (0, 80, 4, 6, 0.3, 0.3),
    (1, 200, 7, 8, 0.1, 0.5),
    (2, 40, 2, 10, 0.5, 0.0),
    (3, 40, 3, 6, 0.0, 0.4),
    (4, 30, 3, 5, 0.0, 1.0),  # every base key deleted
    (5, 30, 3, 5, 1.0, 0.0),  # an empty base
    (6, 30, 3, 5, 0.0, 0.0),  # no change
]


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c[0]}" for c in CASES])
def test_overlay_matches_a_rebuilt_trie(case):
    seed, n, vocab, max_len, added_share, deleted_share = case
    base_keys, added, deleted = split_keys(seed, random_sequences(seed, n, vocab, max_len), added_share, deleted_share)
    base_values = random.Random(seed).sample(range(10 * len(base_keys) + 10), len(base_keys))
    added_values = [10 * len(base_keys) + 10 + i for i in range(len(added))]
    overlay = OverlayTrie.over(Trie.build(base_keys, base_values), added, added_values, deleted)

    live = [(k, v) for k, v in zip(base_keys, base_values) if k not in set(deleted)] + list(zip(added, added_values))
    ref = Reference([k for k, _ in live], [v for _, v in live])
    check_against_reference(overlay, ref, random.Random(seed))
    for key in deleted:  # a deleted key is never a path
        assert overlay.walk(key) == -1


def test_overlay_after_save_and_load(tmp_path):
    seqs = random_sequences(9, 100, 5, 6)
    base_keys, added, deleted = split_keys(9, seqs, 0.2, 0.2)
    Trie.build(base_keys).save(tmp_path / "trie")
    overlay = OverlayTrie.over(Trie.load(tmp_path / "trie"), added, range(len(base_keys), len(seqs)), deleted)
    live = [k for k in base_keys if k not in set(deleted)] + added
    values = [i for i, k in enumerate(base_keys) if k not in set(deleted)] + list(range(len(base_keys), len(seqs)))
    check_against_reference(overlay, Reference(live, values), random.Random(0))


@pytest.mark.parametrize("added", [(1, 2, 3), (1, 2, 3, 4), (1, 2)], ids=["equal", "extends", "prefix"])
def test_an_added_key_must_not_clash_with_a_base_key(added):
    with pytest.raises(ValueError, match="prefix"):
        OverlayTrie.over(Trie.build([(1, 2, 3), (2,)]), [added], [9], [])


@pytest.mark.parametrize("deleted", [[(1, 2)], [(3,)], [(1, 2, 3, 4)]], ids=["inner", "absent", "longer"])
def test_only_base_keys_can_be_deleted(deleted):
    with pytest.raises(KeyError):
        OverlayTrie.over(Trie.build([(1, 2, 3), (2,)]), [], [], deleted)
