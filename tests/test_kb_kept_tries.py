"""Tries kept in a KB folder for tokenizers that did not build it (DIR/tries/, kgqa/kb/folder.py): the
first decode builds and keeps one, the next loads it and answers the same; a change goes on top as an
overlay, a merge or an edited Knowledge.txt makes it stale, damage and two processes at once leave a
whole one."""
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from kgqa.data.tokenizer import SPECIAL_TOKENS, CharTokenizer, encode_key, encode_question
from kgqa.data.triples import Key, Triple
from kgqa.decoding.beam import beam_search
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.folder import TRIES, KbFolder
from kgqa.kb.keyspace import KeySpace
from kgqa.model import UniLM, build_backbone
from kgqa.trie import OverlayTrie

CHARS = "甲乙丙丁戊己庚辛壬癸"
BASE = [Triple(Key("甲乙", "丙丁"), "一"), Triple(Key("甲乙", "丙戊"), "二"), Triple(Key("甲", "丁", "乙"), "三"),
        Triple(Key("乙丙", "丁丁"), "四"), Triple(Key("丙", "甲"), "五"), Triple(Key("丙", "乙", "丁"), "六")]
NEW = Triple(Key("庚辛", "壬癸"), "新")
QUESTIONS = ["甲乙丙丁", "丙乙是什么", "庚辛壬癸", "乙丙丁丁"]
SPAWN = multiprocessing.get_context("spawn")
BUILT, LOADED = "building the spm trie for this tokenizer", "loaded the spm trie kept for this tokenizer"


def reversed_vocabulary(tokenizer: CharTokenizer) -> CharTokenizer:
    """The same characters numbered the other way round: a model trained on another KB numbers them otherwise."""
    return CharTokenizer(list(SPECIAL_TOKENS) + tokenizer.vocab[len(SPECIAL_TOKENS) :][::-1])


@pytest.fixture
def path(tmp_path) -> Path:
    KbFolder.create(tmp_path / "kb", KnowledgeBase(BASE), CharTokenizer.build(list(CHARS)), ["spm"])
    return tmp_path / "kb"


def keyspace(path: Path, tokenizer, caplog):
    """The keyspace a fresh run gets (a new KbFolder), and whether it built the trie or loaded a kept one."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kgqa.kb.folder"):
        folder = KbFolder(path)
        space = folder.keyspace(folder.kb, tokenizer, "spm")
    built, loaded = BUILT in caplog.text, LOADED in caplog.text
    assert built != loaded or not (built or loaded), caplog.text
    return space, "built" if built else "loaded" if loaded else "neither"


def answers(space, tokenizer) -> list[list[tuple[int, float]]]:
    """Every key a random model reaches for each question (beam 6, 6 returned), with its log-probability."""
    torch.manual_seed(0)
    model = UniLM(build_backbone("roformer", tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, initializer_range=0.3)).eval()
    encoded = [encode_question(tokenizer, q, 64) for q in QUESTIONS]
    hyps = beam_search(model, space, encoded, [], tokenizer.pad_id, beam_size=6, num_return=6)
    return [[(h.key_id, round(h.log_prob, 5)) for h in per_question] for per_question in hyps]


def kept(path: Path) -> list[str]:
    return sorted(p.name for p in (path / TRIES).iterdir()) if (path / TRIES).is_dir() else []


def test_a_foreign_tokenizer_trie_is_kept_and_loaded_by_the_next_run(path, caplog):
    own = KbFolder(path).saved_tokenizer
    foreign, other = reversed_vocabulary(own), CharTokenizer.build(list(CHARS + "子"))
    first, how = keyspace(path, foreign, caplog)
    assert how == "built" and len(kept(path)) == 1
    second, how = keyspace(path, foreign, caplog)
    assert how == "loaded" and isinstance(second.trie.tokens.base, np.memmap)  # mapped from DIR/tries/, not built
    assert answers(second, foreign) == answers(first, foreign)
    assert sorted(second.trie.values_under(second.trie.ROOT).tolist()) == list(range(len(BASE)))

    assert keyspace(path, other, caplog)[1] == "built" and len(kept(path)) == 2  # another tokenizer: its own trie
    assert keyspace(path, other, caplog)[1] == "loaded" and keyspace(path, foreign, caplog)[1] == "loaded"
    assert keyspace(path, own, caplog)[1] == "neither" and len(kept(path)) == 2  # the folder's own trie-spm/


def write_tsv(path: Path, rows) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_changes_go_over_a_kept_trie_and_a_merge_makes_it_stale(path, tmp_path, caplog):
    foreign = reversed_vocabulary(KbFolder(path).saved_tokenizer)
    keyspace(path, foreign, caplog)
    KbFolder(path).record("add", write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)]))
    KbFolder(path).record("delete", write_tsv(tmp_path / "del.tsv", [(BASE[0].key.full_subject, BASE[0].key.predicate)]))
    space, how = keyspace(path, foreign, caplog)
    assert how == "loaded" and isinstance(space.trie, OverlayTrie)  # the kept trie, the changes over it
    kb = KbFolder(path).kb
    assert sorted(space.trie.values_under(space.trie.ROOT).tolist()) == kb.live_ids()
    assert space.trie.walk(encode_key(foreign, BASE[0].key, "spm")) == -1  # the deleted key is no path
    assert space.trie.values_under(space.trie.walk(encode_key(foreign, NEW.key, "spm"))).tolist() == [kb.key_id(NEW.key)]
    assert answers(space, foreign) == answers(KeySpace(kb, foreign, "spm"), foreign)  # as the KB's trie built whole

    KbFolder(path).merge()
    assert kept(path) == []  # the base changed: every kept trie goes
    space, how = keyspace(path, foreign, caplog)
    assert how == "built" and space.trie.num_keys == len(BASE)  # 6 - 1 + 1, now all in the base
    assert keyspace(path, foreign, caplog)[1] == "loaded"


def test_an_edited_knowledge_txt_or_a_damaged_kept_trie_is_not_used(path, caplog):
    foreign = reversed_vocabulary(KbFolder(path).saved_tokenizer)
    keyspace(path, foreign, caplog)
    (tokens,) = (path / TRIES).glob("*/trie/tokens.npy")
    tokens.write_bytes(tokens.read_bytes()[:-2])
    space, how = keyspace(path, foreign, caplog)
    assert how == "built" and "tokens.npy: truncated" in caplog.text  # and kept again, whole
    assert keyspace(path, foreign, caplog)[1] == "loaded"

    with open(path / "Knowledge.txt", "a", encoding="utf-8") as f:  # by hand, not through kgqa-kb
        f.write(f"{NEW.key.full_subject}\t{NEW.key.predicate}\t{NEW.obj}\n")
    space, how = keyspace(path, foreign, caplog)
    assert how == "built" and space.trie.num_keys == len(BASE) + 1
    assert keyspace(path, foreign, caplog)[1] == "loaded"


def keep_foreign_trie(path: str, barrier) -> None:
    """A run asking for the reversed vocabulary's trie at the same moment as another."""
    folder = KbFolder(path)
    foreign = reversed_vocabulary(folder.saved_tokenizer)
    barrier.wait()
    space = folder.keyspace(folder.kb, foreign, "spm")
    assert sorted(space.trie.values_under(space.trie.ROOT).tolist()) == folder.kb.live_ids()


def test_two_runs_keeping_the_same_trie_at_once_leave_a_whole_one(tmp_path, caplog):
    path = tmp_path / "kb"
    names = ["".join(CHARS[(i // 10**k) % 10] for k in range(4)) for i in range(3000)]
    KbFolder.create(path, KnowledgeBase([Triple(Key(n, n[:2]), "o") for n in names]), CharTokenizer.build(list(CHARS)),
                    ["spm"])
    barrier = SPAWN.Barrier(2)
    procs = [SPAWN.Process(target=keep_foreign_trie, args=(str(path), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(kept(path)) == 1 and not [p for p in (path / TRIES).rglob(".*")]  # one, and no temporaries left
    foreign = reversed_vocabulary(KbFolder(path).saved_tokenizer)
    space, how = keyspace(path, foreign, caplog)  # every file as its header says (sizes and CRC-32s)
    assert how == "loaded" and space.trie.num_keys == len(names)
    for i in range(0, len(names), 97):
        key = KbFolder(path).kb.keys[i]
        assert space.trie.values_under(space.trie.walk(encode_key(foreign, key, "spm"))).tolist() == [i]
