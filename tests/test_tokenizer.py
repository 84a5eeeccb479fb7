"""The character tokenizer and the key / question encodings."""
import json

import pytest

from kgqa.data.tokenizer import SPECIAL_TOKENS, CharTokenizer, encode_key, encode_question
from kgqa.data.triples import Key

TEXTS = ["张三主要讲什么课程", "主讲课程", "主要成就", "韩国女演员（2000年出生）"]


@pytest.fixture
def tok():
    return CharTokenizer.build(TEXTS)


def test_build_vocabulary(tok):
    chars = set("".join(TEXTS))
    assert tok.vocab[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert set(tok.vocab[len(SPECIAL_TOKENS) :]) == chars
    assert len(tok.vocab) == len(set(tok.vocab)) == tok.vocab_size == len(SPECIAL_TOKENS) + len(chars)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == tuple(tok.vocab.index(t) for t in SPECIAL_TOKENS)
    # deterministic: the same texts in any order give the same vocabulary
    assert CharTokenizer.build(reversed(TEXTS)).vocab == tok.vocab


def test_encode_decode(tok):
    for text in TEXTS:
        ids = tok.encode(text)
        assert len(ids) == len(text)
        assert [tok.vocab[i] for i in ids] == list(text)
        assert all(i >= len(SPECIAL_TOKENS) for i in ids)
        assert tok.decode(ids) == text
    # special tokens are dropped by decode
    assert tok.decode([tok.cls_id] + tok.encode("张三") + [tok.sep_id, tok.pad_id]) == "张三"


def test_unknown_character(tok):
    ids = tok.encode("张X三")
    assert ids == [tok.vocab.index("张"), tok.unk_id, tok.vocab.index("三")]
    assert tok.decode(ids) == "张三"


def test_vocabulary_must_start_with_special_tokens():
    with pytest.raises(ValueError):
        CharTokenizer(["a", "[PAD]", "[UNK]", "[CLS]", "[SEP]"])


def test_save_load_round_trip(tmp_path, tok):
    path = tmp_path / "vocab.json"
    tok.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded.vocab == tok.vocab
    for text in TEXTS + ["未知字符X"]:
        assert loaded.encode(text) == tok.encode(text)
    assert (loaded.pad_id, loaded.unk_id, loaded.cls_id, loaded.sep_id) == (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id)


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"type": "bpe", "vocab": list(SPECIAL_TOKENS)}))
    with pytest.raises(ValueError, match="not a kgqa character vocabulary"):
        CharTokenizer.load(path)


@pytest.mark.parametrize(
    "order, parts", [("spm", ("郑多彬", "职业", "韩国女演员")), ("smp", ("郑多彬", "韩国女演员", "职业"))]
)
def test_encode_key(order, parts):
    tok = CharTokenizer.build(["郑多彬职业韩国女演员"])
    key = Key("郑多彬", "职业", "韩国女演员")
    expected = []
    for part in parts:
        expected += [tok.vocab.index(c) for c in part] + [tok.sep_id]
    assert encode_key(tok, key, order) == expected
    assert sum(i == tok.sep_id for i in expected) == 3


def test_encode_key_empty_meaning_keeps_three_seps():
    tok = CharTokenizer.build(["张三主讲课程"])
    s, p = tok.encode("张三"), tok.encode("主讲课程")
    sep = tok.sep_id
    key = Key("张三", "主讲课程")
    assert encode_key(tok, key, "spm") == s + [sep] + p + [sep, sep]
    assert encode_key(tok, key, "smp") == s + [sep, sep] + p + [sep]


def test_encode_question(tok):
    q = "张三主要讲什么课程"
    assert encode_question(tok, q, 64) == [tok.cls_id] + tok.encode(q) + [tok.sep_id]
    assert encode_question(tok, q, 4) == [tok.cls_id] + tok.encode(q[:4]) + [tok.sep_id]
