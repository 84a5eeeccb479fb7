"""KB changes without a rebuild: the change log, the KB folder, and the real decoder over the overlay."""
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import run_cli
from kgqa.decoding.answerer import Answerer
from kgqa.kb.changes import CHANGES, Change
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.knowledge_txt import read_knowledge
from kgqa.data.tokenizer import CharTokenizer, encode_question
from kgqa.data.triples import Key, Triple
from kgqa.errors import DataError
from kgqa.decoding.beam import beam_search
from kgqa.decoding.mask import step_context
from kgqa.decoding.processors import LcsPowerLookahead, SubjectCopy
from kgqa.kb.folder import KbFolder
from kgqa.model import UniLM, build_backbone
from models import unigram_unilm
from kgqa.trie import OverlayTrie, Trie

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CHARS = "甲乙丙丁戊己庚辛壬癸"


# --- the KB: ids survive every change ----------------------------------------------------
def test_updated_kb_keeps_ids():
    a, b, c = Key("甲", "乙"), Key("甲", "丙", "丁"), Key("乙", "乙")
    kb = KnowledgeBase([Triple(a, "x"), Triple(b, "y"), Triple(b, "z"), Triple(c, "w")])
    new = Key("丙", "丁")
    after = kb.updated([
        Change("add", new, "n"), Change("add", a, "x2"),   # a new key; another object for a
        Change("delete", b, "y"),                           # one object of b
        Change("delete", c),                                # every object of c
        Change("add", Key("丁", "丁"), "t"), Change("delete", Key("丁", "丁")),  # added, then deleted
        Change("delete", Key("戊", "戊")),                  # not in the KB: nothing happens
    ])
    assert after.keys[: len(kb)] == kb.keys and after.keys[len(kb)] == new
    assert after.key_id(new) == len(kb) and after.answer(len(kb)) == "n"
    assert after.objects[after.key_id(a)] == ["x", "x2"] and after.objects[after.key_id(b)] == ["z"]
    assert c not in after and Key("丁", "丁") not in after
    with pytest.raises(KeyError):
        after.key_id(c)
    assert after.live_ids() == sorted([kb.key_id(a), kb.key_id(b)]) + [len(kb)]
    assert set(after.triples()) == {Triple(a, "x"), Triple(a, "x2"), Triple(b, "z"), Triple(new, "n")}
    assert after.stats()["keys"] == 3 and after.stats()["triples"] == 4
    # a deleted base key added again comes back under its old id
    again = after.updated([Change("add", c, "v")])
    assert again.key_id(c) == kb.key_id(c) and again.objects[again.key_id(c)] == ["v"]
    assert kb.objects[kb.key_id(b)] == ["y", "z"]  # the original is untouched


# --- a KB folder and the decoder -------------------------------------------------------------
BASE = [Triple(Key("甲乙", "丙丁"), "一"), Triple(Key("甲乙", "丙戊"), "二"), Triple(Key("甲", "丁", "乙"), "三"),
        Triple(Key("乙丙", "丁丁"), "四"), Triple(Key("丙", "甲"), "五"), Triple(Key("丙", "乙", "丁"), "六")]
NEW = Triple(Key("庚辛", "壬癸"), "新")


def write_tsv(path, rows):
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path):
    tokenizer = CharTokenizer.build(list(CHARS))  # the new key's characters are in the vocabulary
    return KbFolder.create(tmp_path / "kb", KnowledgeBase(BASE), tokenizer, ["spm", "smp"])


def favouring_model(tokenizer, text: str, arch: str = "roformer") -> UniLM:
    """Favours the characters of `text` and [SEP] at every step."""
    return unigram_unilm(tokenizer.vocab_size, {t: 3.0 for t in tokenizer.encode(text) + [tokenizer.sep_id]}, arch)


def decode(folder: KbFolder, model, questions, order="spm", beam=3, num_return=1, lookahead=None):
    tokenizer = folder.saved_tokenizer
    keyspace = folder.keyspace(folder.kb, tokenizer, order)
    rules = [lookahead] if lookahead else []
    encoded = [encode_question(tokenizer, q, 64) for q in questions]
    hyps = beam_search(model, keyspace, encoded, rules, tokenizer.pad_id, beam_size=beam, num_return=num_return)
    return keyspace, [[folder.kb.keys[h.key_id] for h in per_question] for per_question in hyps]


@pytest.mark.parametrize("order", ["spm", "smp"])
def test_an_added_fact_becomes_answerable(folder, tmp_path, order):
    model = favouring_model(folder.saved_tokenizer, "庚辛壬癸")
    keyspace, [[before]] = decode(folder, model, ["庚辛壬癸是什么"], order)
    assert isinstance(keyspace.trie, Trie) and before != NEW.key  # the saved trie, memory-mapped, no overlay
    assert isinstance(keyspace.trie.tokens.base, np.memmap)

    summary = folder.record("add", write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)]))
    assert summary["new_keys"] == 1 and summary["chars_not_in_vocab"] == []
    keyspace, [[after]] = decode(folder, model, ["庚辛壬癸是什么"], order)
    assert isinstance(keyspace.trie, OverlayTrie)
    assert after == NEW.key and folder.kb.key_id(NEW.key) == len(BASE)  # a new id after the base ones
    (answer,) = Answerer(keyspace, folder.saved_tokenizer)(model, ["庚辛壬癸是什么"])[0]
    assert answer.triple == NEW and answer.confidence > 0.5


def test_a_deleted_key_never_comes_out(folder, tmp_path):
    """Many random models and questions, every key they can reach enumerated: before the delete the
    deleted keys come out, after it they never do (and every other key still can)."""
    tokenizer, rng = folder.saved_tokenizer, random.Random(0)
    questions = ["".join(rng.choice(CHARS) for _ in range(rng.randint(2, 8))) for _ in range(6)]
    doomed = [BASE[0], BASE[3], BASE[5]]
    models = []
    for seed in range(6):
        torch.manual_seed(seed)
        models.append(UniLM(build_backbone(["bert", "roformer"][seed % 2], tokenizer.vocab_size, initializer_range=0.3, **SIZE)).eval())

    def outputs(order, beam, num_return, lookahead=None):
        return {k for m in models for per_q in decode(folder, m, questions, order, beam, num_return, lookahead)[1] for k in per_q}

    assert {t.key for t in doomed} <= outputs("spm", 8, 8)  # the test can see them
    folder.record("delete", write_tsv(tmp_path / "del.tsv", [(t.key.full_subject, t.key.predicate) for t in doomed]))
    live = {t.key for t in BASE} - {t.key for t in doomed}
    for order in ("spm", "smp"):
        assert outputs(order, 8, 8) == live  # exhaustive: all that is left, nothing deleted
        assert not outputs(order, 2, 1, LcsPowerLookahead()) & {t.key for t in doomed}
    for t in doomed:
        assert t.key not in folder.kb


def test_subject_copy_follows_kb_changes(folder, tmp_path):
    """One SubjectCopy across a change: it copies an added subject and forgets a deleted one at once
    (its memo is per keyspace), over the overlay trie."""
    tokenizer, copy = folder.saved_tokenizer, SubjectCopy()
    question = "庚辛壬癸和乙丙是什么"

    def first_tokens():  # tokens that begin a copied subject, at the root
        keyspace = folder.keyspace(folder.kb, tokenizer, "spm")
        ctx = step_context(keyspace, [tokenizer.encode(question)], np.array([0]), np.zeros((1, 0), dtype=np.int64),
                           np.array([keyspace.trie.ROOT]))
        return set(tokenizer.decode(copy.copy_pairs(ctx)[1].tolist()))

    assert first_tokens() == {"乙", "丙"}  # the subjects 乙丙 and 丙 are pieces of the question
    folder.record("add", write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)]))
    assert first_tokens() == {"庚", "乙", "丙"}
    folder.record("delete", write_tsv(tmp_path / "del.tsv", [(BASE[3].key.subject, BASE[3].key.predicate)]))
    assert first_tokens() == {"庚", "丙"}  # 乙丙 had one key


def test_merge_folds_the_changes_in(folder, tmp_path):
    folder.record("add", write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)]))
    folder.record("delete", write_tsv(tmp_path / "del.tsv", [(BASE[0].key.subject, BASE[0].key.predicate, BASE[0].obj)]))
    model = favouring_model(folder.saved_tokenizer, "庚辛壬癸")
    answer_before = decode(folder, model, ["庚辛壬癸"])[1]
    stats = folder.merge()
    assert stats["keys"] == len(BASE) and not (folder.path / CHANGES).exists()
    text = (folder.path / "Knowledge.txt").read_text(encoding="utf-8")
    assert "庚辛\t壬癸\t新" in text and "甲乙\t丙丁" not in text
    keyspace, answer_after = decode(folder, model, ["庚辛壬癸"])
    assert isinstance(keyspace.trie, Trie) and answer_after == answer_before == [[NEW.key]]
    assert folder.orders == ["smp", "spm"]
    assert isinstance(KbFolder(folder.path).base.columns.base, np.memmap)  # the columns were written again


def test_a_key_the_vocabulary_cannot_tell_apart_is_refused(folder, tmp_path):
    """Characters outside vocab.json encode as [UNK]: two such keys would be one path."""
    rows = [("子丑", "寅", "x"), ("卯辰", "寅", "y")]  # [UNK][UNK] [SEP] [UNK] for both
    add = write_tsv(tmp_path / "add.tsv", rows)
    with pytest.raises(DataError, match=rf"^{add}:2: the key '卯辰\\t寅' encodes like the key '子丑\\t寅' \({add}:1\)"):
        folder.record("add", add)
    assert not (folder.path / CHANGES).exists()  # nothing recorded


def test_the_base_kb_is_loaded_from_its_columns_while_knowledge_txt_is_the_same(folder):
    loaded = KbFolder(folder.path).base
    assert isinstance(loaded.columns.base, np.memmap)  # read as arrays, not parsed
    parsed = KnowledgeBase(read_knowledge(folder.path / "Knowledge.txt"))
    assert list(loaded.keys) == list(parsed.keys) and list(loaded.objects) == list(parsed.objects)
    assert loaded.stats() == parsed.stats() and loaded.key_id(BASE[3].key) == parsed.key_id(BASE[3].key)
    with open(folder.path / "Knowledge.txt", "a", encoding="utf-8") as f:
        f.write(f"{NEW.key.full_subject}\t{NEW.key.predicate}\t{NEW.obj}\n")
    edited = KbFolder(folder.path).base  # the columns are stale: the file is read
    assert not isinstance(edited.columns.base, np.memmap) and NEW.key in edited


def test_saved_columns_that_do_not_fit_together_are_refused(folder):
    objects = folder.path / "kb" / "objects.arrow"
    objects.write_bytes(objects.read_bytes()[:-1])
    with pytest.raises(DataError, match="objects.arrow: truncated since it was saved .*rebuild it with kgqa-kb"):
        KnowledgeBase.load(folder.path / "kb")
    with pytest.raises(ValueError, match="not a saved kgqa KB"):
        KnowledgeBase.load(folder.path / "trie-spm")


def test_a_stale_trie_is_detected(folder):
    knowledge = folder.path / "Knowledge.txt"
    knowledge.write_text("".join(knowledge.read_text(encoding="utf-8").splitlines(True)[1:]), encoding="utf-8")
    with pytest.raises(ValueError, match="rebuild"):
        KbFolder(folder.path).keyspace(KbFolder(folder.path).kb, folder.saved_tokenizer, "spm")


def test_an_extended_tokenizer_keeps_the_saved_trie(folder):
    tokenizer = folder.tokenizer(["子丑寅卯问"])
    assert tokenizer.vocab[: len(folder.saved_tokenizer.vocab)] == folder.saved_tokenizer.vocab
    assert isinstance(folder.keyspace(folder.kb, tokenizer, "spm").trie.tokens.base, np.memmap)
    other = CharTokenizer.build(list(CHARS + "子"))  # another numbering: the trie is built, not loaded
    assert not isinstance(folder.keyspace(folder.kb, other, "spm").trie.tokens.base, np.memmap)


def test_homonyms_and_statistics_follow_each_change():
    """A KB's entities are counted once (its statistics and its homonyms share them); a change makes another KB,
    whose are its own: a second meaning makes a homonym, deleting it undoes that, the first KB stays as it was."""
    kb = KnowledgeBase(BASE)
    assert kb.homonym_subjects() == {"丙"} and kb.stats()["entities"] == 5  # 丙 and 丙（丁）
    second = kb.updated([Change("add", Key("甲乙", "丙丁", "新义"), "七")])
    assert second.homonym_subjects() == {"丙", "甲乙"} and second.stats()["entities"] == 6
    assert second.updated([Change("delete", Key("甲乙", "丙丁", "新义"))]).homonym_subjects() == {"丙"}
    assert kb.homonym_subjects() == {"丙"} and kb.stats()["entities"] == 5


FIELD = st.sampled_from(["", "甲", "乙", "甲乙"])
TRIPLES = st.lists(st.builds(lambda s, p, m, o: Triple(Key(s or "丙", p or "丁", m), o), FIELD, FIELD, FIELD,
                             st.sampled_from("xy")), min_size=1, max_size=30)


@given(TRIPLES, st.lists(st.tuples(st.booleans(), TRIPLES), max_size=3))
@settings(max_examples=60, deadline=None)
def test_statistics_count_what_the_live_keys_hold(triples, changes):
    """Over a KB and changes to it: subjects, predicates, entities (a name with its meaning) and homonyms as
    counted from the live keys one by one."""
    kb = KnowledgeBase(triples)
    for add, rows in changes:
        kb = kb.updated([Change("add" if add else "delete", t.key, t.obj) for t in rows])
    keys = [key for key, objs in zip(kb.keys, kb.objects) if objs]
    entities = {(k.subject, k.meaning) for k in keys}
    meanings = Counter(name for name, _ in entities)
    assert {k: v for k, v in kb.stats().items() if k in ("keys", "subjects", "entities", "predicates", "homonym_names")} \
        == {"keys": len(keys), "subjects": len(meanings), "entities": len(entities),
            "predicates": len({k.predicate for k in keys}), "homonym_names": sum(n > 1 for n in meanings.values())}
    assert kb.homonym_subjects() == {name for name, n in meanings.items() if n > 1}


def test_kgqa_kb_builds_and_changes_a_folder_without_torch(folder, tmp_path):
    """kgqa-kb needs no model: it never imports torch, Lightning or transformers (about 300 MB of its peak
    memory on the full KB); Python's import log (-X importtime) says what a command imported."""
    add = write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)])
    knowledge = write_tsv(tmp_path / "knowledge.txt", [(t.key.full_subject, t.key.predicate, t.obj) for t in BASE])
    for args in (["kb=file", f"kb.path={knowledge}", f"out={tmp_path / 'built'}"],
                 ["action=add", f"kb_dir={folder.path}", f"triples={add}"], ["action=merge", f"kb_dir={folder.path}"]):
        imported = run_cli("kb", *args, env={"PYTHONPROFILEIMPORTTIME": "1"}).stderr
        modules = {line.rsplit("|", 1)[1].strip() for line in imported.splitlines() if line.startswith("import time:")}
        assert len(modules) > 100 and not modules & {"torch", "lightning", "transformers"}, args


def test_kgqa_kb_add_merge_and_a_bad_line(folder, tmp_path):
    """The entry point, as a user runs it (delete goes the way of add)."""
    add = write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)])
    assert '"new_keys": 1' in run_cli("kb", "action=add", f"kb_dir={folder.path}", f"triples={add}").stdout
    assert (folder.path / CHANGES).read_text(encoding="utf-8") == "add\t庚辛\t壬癸\t新\n"
    bad = write_tsv(tmp_path / "bad.tsv", [("only two", "fields")])
    proc = run_cli("kb", "action=add", f"kb_dir={folder.path}", f"triples={bad}", check=False)
    assert proc.returncode != 0 and f"kgqa: {bad}:1:" in proc.stderr
    run_cli("kb", "action=merge", f"kb_dir={folder.path}")
    assert "庚辛\t壬癸\t新" in (folder.path / "Knowledge.txt").read_text(encoding="utf-8")
    assert not (folder.path / CHANGES).exists()


def test_probabilities_still_sum_to_one_over_the_overlay(folder, tmp_path):
    """Exhaustive decoding over base + added - deleted keys: each live key once, probabilities summing to 1."""
    folder.record("add", write_tsv(tmp_path / "add.tsv", [(NEW.key.full_subject, NEW.key.predicate, NEW.obj)]))
    folder.record("delete", write_tsv(tmp_path / "del.tsv", [(BASE[1].key.full_subject, BASE[1].key.predicate)]))
    torch.manual_seed(0)
    model = UniLM(build_backbone("roformer", folder.saved_tokenizer.vocab_size, initializer_range=0.3, **SIZE)).eval()
    tokenizer = folder.saved_tokenizer
    keyspace = folder.keyspace(folder.kb, tokenizer, "spm")
    (hyps,) = beam_search(model, keyspace, [encode_question(tokenizer, "甲乙丙", 64)], [], tokenizer.pad_id,
                          beam_size=10, num_return=10)
    assert sorted(h.key_id for h in hyps) == folder.kb.live_ids()
    assert sum(math.exp(h.log_prob) for h in hyps) == pytest.approx(1.0, abs=1e-5)
