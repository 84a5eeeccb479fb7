"""The KB's keys as token sequences: the whole-KB encoding against encode_key, key by key."""
import logging

import numpy as np
import pytest

from kgqa.kb.changes import Change
from kgqa.kb.columns import KnowledgeBase
from kgqa.data.tokenizer import CharTokenizer, encode_key
from kgqa.data.triples import Key, Triple
from kgqa.kb import keyspace
from kgqa.kb.keyspace import KeySpace, encode_live_keys

TRIPLES = [Triple(Key("张三", "职业"), "演员"), Triple(Key("张三", "出生地", "歌手"), "北京"),
           Triple(Key("李四", "职业"), "教师"), Triple(Key("李四", "职业"), "作家"), Triple(Key("王五", "身高", "篮球"), "2米")]


@pytest.mark.parametrize("chunk", [2, keyspace.CHUNK])
@pytest.mark.parametrize("order", ["spm", "smp"])
def test_encoded_keys_are_encode_key_of_each_live_key(order, chunk, monkeypatch):
    """After an update too: a new key with strings the columns do not have, a deleted key; keys assembled a
    chunk at a time."""
    monkeypatch.setattr(keyspace, "CHUNK", chunk)
    kb = KnowledgeBase(TRIPLES).updated([Change("add", Key("赵六", "职业", "画家"), "x"), Change("delete", Key("张三", "职业"))])
    tok = CharTokenizer.build(kb.strings())
    tokens, lengths, ids, repeated = encode_live_keys(kb, tok, order)
    assert ids.tolist() == kb.live_ids() and len(kb) - 1 == len(ids) and repeated == 0
    keys = np.split(tokens, np.cumsum(lengths)[:-1])
    assert [k.tolist() for k in keys] == [encode_key(tok, kb.keys[i], order) for i in ids]
    trie = KeySpace(kb, tok, order).trie
    assert sorted(trie.values_under(trie.ROOT).tolist()) == kb.live_ids()


def test_keys_the_tokenizer_cannot_tell_apart_keep_the_lowest_id(caplog):
    """张三 and 李四 both encode as [UNK][UNK] when the vocabulary lacks them: their 职业 keys collide."""
    kb = KnowledgeBase(TRIPLES)
    tok = CharTokenizer.build(["职业出生地歌手身高篮球王五"])
    with caplog.at_level(logging.WARNING):
        space = KeySpace(kb, tok, "spm")
    assert "1 KB keys encode to the same tokens" in caplog.text
    first = kb.key_id(Key("张三", "职业"))
    walked = space.trie.walk(encode_key(tok, Key("李四", "职业"), "spm"))
    assert space.trie.values_under(walked).tolist() == [first] and first < kb.key_id(Key("李四", "职业"))
    assert space.trie.key_count(np.array([space.trie.ROOT]))[0] == len(kb) - 1


def test_kb_stats_by_hand():
    """Entities are (subject, meaning): 张三 has two, so one homonym name; after the update 张三's
    职业 is gone, 赵六（画家） is new, and 李四's key still holds two objects."""
    kb = KnowledgeBase(TRIPLES)
    assert kb.stats() == {"triples": 5, "keys": 4, "subjects": 3, "entities": 4, "predicates": 3,
                          "keys_per_entity": 1.0, "homonym_names": 1}
    after = kb.updated([Change("add", Key("赵六", "职业", "画家"), "x"), Change("delete", Key("张三", "职业"))])
    assert after.stats() == {"triples": 5, "keys": 4, "subjects": 4, "entities": 4, "predicates": 3,
                             "keys_per_entity": 1.0, "homonym_names": 0}
    assert kb.stats()["homonym_names"] == 1  # the original is untouched
    assert list(after.strings()) == sorted({"张三", "李四", "王五"}) + ["出生地", "职业", "身高"] + ["", "歌手", "篮球"] + ["赵六", "职业", "画家"]
