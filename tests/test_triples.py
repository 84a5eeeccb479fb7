"""Triples: subject/meaning split, key orders, object normalisation, answer strings."""
import pytest

from kgqa.data.triples import TARGET_ORDERS, Key, Triple, join_subject, normalise_object, split_subject


@pytest.mark.parametrize(
    "raw, subject, meaning",
    [
        ("牛郎织女（中国著名民间故事）", "牛郎织女", "中国著名民间故事"),
        # nested: the trailing parenthesis is matched, so the meaning keeps its inner pair
        ("郑多彬（韩国女演员（2000年出生））", "郑多彬", "韩国女演员（2000年出生）"),
        # only the last balanced group is the meaning; earlier groups belong to the name
        ("A（B）C（D）", "A（B）C", "D"),
        # no meaning
        ("张三", "张三", ""),
        ("张三（歌手）的歌", "张三（歌手）的歌", ""),  # does not end with the closing parenthesis
        # unbalanced: the parentheses belong to the name
        ("张三）", "张三）", ""),
        ("张三（歌手））", "张三（歌手））", ""),
        # a name that is only a parenthesised group has no meaning (S would be empty)
        ("（歌手）", "（歌手）", ""),
        # ASCII parentheses are not the KgCLUE meaning markers
        ("Alice(singer)", "Alice(singer)", ""),
    ],
)
def test_split_subject(raw, subject, meaning):
    assert split_subject(raw) == (subject, meaning)
    assert join_subject(subject, meaning) == raw  # round trip


@pytest.mark.parametrize("subject, meaning", [("郑多彬", "韩国女演员（2000年出生）"), ("张三", ""), ("A（B）C", "D")])
def test_join_then_split(subject, meaning):
    assert split_subject(join_subject(subject, meaning)) == (subject, meaning)


def test_join_subject_format():
    assert join_subject("张三", "歌手") == "张三（歌手）"
    assert join_subject("张三", "") == "张三"


KEY = Key("郑多彬", "职业", "韩国女演员（2000年出生）")


def test_key_parts_orders():
    assert KEY.parts("spm") == ("郑多彬", "职业", "韩国女演员（2000年出生）")
    assert KEY.parts("smp") == ("郑多彬", "韩国女演员（2000年出生）", "职业")


@pytest.mark.parametrize("order", sorted(TARGET_ORDERS))
@pytest.mark.parametrize("key", [KEY, Key("张三", "主讲课程"), Key("a", "b", "c")])
def test_key_from_parts_round_trip(order, key):
    assert Key.from_parts(key.parts(order), order) == key


def test_key_parts_unknown_order():
    with pytest.raises(ValueError, match="unknown target order"):
        KEY.parts("psm")


def test_key_from_parts_unknown_order():
    with pytest.raises(ValueError):
        Key.from_parts(("a", "b", "c"), "psm")


def test_key_full_subject():
    assert KEY.full_subject == "郑多彬（韩国女演员（2000年出生））"
    assert Key("张三", "职业").full_subject == "张三"


@pytest.mark.parametrize(
    "raw, expected",
    [("a  b", "a b"), ("  a\tb\n c  ", "a b c"), ("一\u3000二", "一 二"), ("abc", "abc"), ("   ", "")],
)
def test_normalise_object(raw, expected):
    assert normalise_object(raw) == expected


def test_triple_parse_and_answer():
    t = Triple.parse(" 郑多彬（韩国女演员（2000年出生）） ", " 职业 ", "演员   歌手")
    assert t.key == KEY
    assert t.obj == "演员 歌手"
    assert t.answer() == "郑多彬（韩国女演员（2000年出生）） ||| 职业 ||| 演员 歌手"
    assert Triple(Key("张三", "主讲课程"), "数学").answer() == "张三 ||| 主讲课程 ||| 数学"


def test_empty_parentheses_are_part_of_the_name():
    assert split_subject("abc（）") == ("abc（）", "")
    assert join_subject(*split_subject("abc（）")) == "abc（）"
