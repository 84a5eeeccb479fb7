"""The KgCLUE metric: EM and LCS-F1 per field, EMF1, and exact accumulation over chunks and ranks."""
import pytest
import torch

from kgqa.data.triples import Key, Triple
from kgqa.metrics import FIELDS, KgclueMetric, exact_match, lcs_f1
from kgqa.reference import lcs  # the textbook DP, to cross-check the longer hand counts below


@pytest.mark.parametrize(
    "a, b, f1, em",
    [
        ("abc", "abd", 2 * 2 / 6, 0.0),  # LCS "ab" = 2, lengths 3 + 3
        ("abc", "abc", 1.0, 1.0),
        ("ABC", "abc", 1.0, 1.0),  # case-insensitive
        ("a  b", "a b", 1.0, 1.0),  # whitespace collapsed
        (" a\tb \n", "a b", 1.0, 1.0),  # and stripped
        ("", "", 0.0, 1.0),  # both empty: F1 0 by the official definition, but an exact match
        ("   ", "", 0.0, 1.0),  # empty after normalisation
        ("abc", "", 0.0, 0.0),
        ("", "abc", 0.0, 0.0),
        ("主讲课程", "主要成就", 2 * 1 / 8, 0.0),  # LCS "主"
        ("abcde", "ace", 2 * 3 / 8, 0.0),  # a subsequence, not a substring
        ("ab", "ba", 2 * 1 / 4, 0.0),
    ],
)
def test_lcs_f1_and_exact_match(a, b, f1, em):
    assert lcs_f1(a, b) == pytest.approx(f1)
    assert lcs_f1(b, a) == pytest.approx(f1)  # symmetric
    assert exact_match(a, b) == em


CORRECT = Triple(Key("张三", "主讲课程"), "数学")
PAIRS = [
    # 1. all right
    (CORRECT, CORRECT),
    # 2. the article's wrong predicate: S right; P LCS 1 ("主") of 4+4; O nothing in common
    (Triple(Key("张三", "主要成就"), "一等奖"), CORRECT),
    # 3. case and spacing differ (normalised away); the object misses a final "s"
    (Triple(Key("Alice", "Job", "singer"), "Pop  Star"), Triple(Key("alice", "job", "Singer"), "pop stars")),
]
# Pair 2 whole triple: "张三 ||| 主要成就 ||| 一等奖" (19 chars) vs "张三 ||| 主讲课程 ||| 数学" (18 chars):
#   common "张三 ||| 主" (8) + " ||| " (5) = 13 → F1 = 26/37.
# Pair 3 object: "pop star" (8) vs "pop stars" (9), LCS 8 → 16/17; whole triple
#   "alice（singer） ||| job ||| pop star" (34) vs the same + "s" (35), LCS 34 → 68/69.
EXPECTED = {
    "em_s": 3 / 3, "f1_s": 3 / 3,
    "em_p": (1 + 0 + 1) / 3, "f1_p": (1 + 0.25 + 1) / 3,
    "em": (1 + 0 + 0) / 3, "f1": (1 + 0 + 16 / 17) / 3,
    "em_triple": (1 + 0 + 0) / 3, "f1_triple": (1 + 26 / 37 + 68 / 69) / 3,
}
EXPECTED["emf1"] = 0.5 * EXPECTED["em"] + 0.5 * EXPECTED["f1"]
EXPECTED |= {"em_homonym": 0.0, "oracle": 0.0}  # neither told (update's homonym=, in_beam=)


def test_hand_counts():
    a, b = PAIRS[1][0].answer(), PAIRS[1][1].answer()
    assert (len(a), len(b), lcs(a, b)) == (19, 18, 13)
    a, b = (" ".join(t.answer().lower().split()) for t in PAIRS[2])
    assert (len(a), len(b), lcs(a, b)) == (34, 35, 34)


def check(result: dict, expected: dict = EXPECTED):
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name].item() == pytest.approx(value, abs=1e-12), name


def test_metric_on_hand_made_pairs():
    metric = KgclueMetric()
    metric.update([p for p, _ in PAIRS], [g for _, g in PAIRS])
    check(metric.compute())
    assert metric.count.item() == 3


def test_metric_in_chunks_equals_one_chunk():
    metric = KgclueMetric()
    metric.update([PAIRS[0][0]], [PAIRS[0][1]])
    metric.update([p for p, _ in PAIRS[1:]], [g for _, g in PAIRS[1:]])
    check(metric.compute())
    metric.reset()
    metric.update([PAIRS[1][0]], [PAIRS[1][1]])
    check(metric.compute(), {"em_s": 1, "f1_s": 1, "em_p": 0, "f1_p": 0.25, "em": 0, "f1": 0, "em_triple": 0,
                             "f1_triple": 26 / 37, "emf1": 0, "em_homonym": 0, "oracle": 0})


def test_em_on_homonymous_subjects_and_the_beams_oracle_rate_by_hand():
    """em_homonym: EM over the questions flagged homonym only; oracle: the share whose gold key is in the beam."""
    metric = KgclueMetric()
    predicted, gold = [p for p, _ in PAIRS], [g for _, g in PAIRS]
    metric.update(predicted[:2], gold[:2], homonym=[True, True], in_beam=[True, True])  # EM 1, 0
    metric.update(predicted[2:], gold[2:], homonym=[False], in_beam=[False])  # EM 0, not a homonym
    result = metric.compute()
    assert result["em_homonym"].item() == pytest.approx(1 / 2) and result["oracle"].item() == pytest.approx(2 / 3)
    a, b = KgclueMetric(), KgclueMetric()  # over two ranks' states, the same
    a.update(predicted[:1], gold[:1], homonym=[True], in_beam=[True])
    b.update(predicted[1:], gold[1:], homonym=[True, False], in_beam=[True, False])
    a.merge_state(b)
    assert a.compute()["em_homonym"].item() == pytest.approx(1 / 2) and a.compute()["oracle"].item() == pytest.approx(2 / 3)


def rank_metrics():
    """Two 'ranks', each seeing part of the data."""
    a, b = KgclueMetric(), KgclueMetric()
    a.update([PAIRS[0][0], PAIRS[2][0]], [PAIRS[0][1], PAIRS[2][1]])
    b.update([PAIRS[1][0]], [PAIRS[1][1]])
    return a, b


def test_merge_state_equals_one_metric():
    a, b = rank_metrics()
    a.merge_state(b)
    check(a.compute())


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # states set by hand, not by update()
def test_summed_states_equal_one_metric():
    """What the sum reduction across ranks computes: every state added up."""
    a, b = rank_metrics()
    total = KgclueMetric()
    total.merge_state({name: getattr(a, name) + getattr(b, name) for name in a._defaults})
    check(total.compute())
    assert set(a._defaults) == {f"{m}_{f}" for m in ("em", "f1") for f in FIELDS} | {"count", "homonyms", "em_homonym", "in_beam"}
    assert all(a._reductions[name] is not None for name in a._defaults)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_empty_metric_is_zero_not_nan():
    result = KgclueMetric().compute()
    assert all(torch.isfinite(v) and v.item() == 0 for v in result.values())


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        KgclueMetric().update([CORRECT, CORRECT], [CORRECT])
