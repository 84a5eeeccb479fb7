"""The Arrow reader of Knowledge.txt gives the KB of the line-by-line reader (keys, ids, objects, the
same DataError or skip count), a KB folder keeps its strings as memory-mapped Arrow files, and the
vectorised vocabulary and key encodings equal the per-string ones."""
import gzip
import logging
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.arrow_reader import WHITESPACE, read_knowledge_kb
from kgqa.data.sources import ToySource
from kgqa.kb.strings import Strings
from kgqa.data.tokenizer import CharTokenizer, encode_key
from kgqa.errors import DataError
from kgqa.kb.folder import KbFolder
from kgqa.kb.knowledge_txt import knowledge_line, knowledge_text, read_knowledge
from kgqa.kb.keyspace import encode_strings
from kgqa.trie import ARRAYS as TRIE_ARRAYS, Trie

LINE_BY_LINE = "read line by line"


def same_kb(a: KnowledgeBase, b: KnowledgeBase) -> None:
    assert list(a.keys) == list(b.keys)  # the same keys in the same order: the same ids
    assert list(a.objects) == list(b.objects)
    assert [list(t) for t in a.tables] == [list(t) for t in b.tables]


def both_readers(path, on_bad_line, caplog):
    """(KB or DataError message, warnings) of each reader, and whether the Arrow one fell back."""
    outcomes, fell_back = [], False
    for read in (lambda: read_knowledge_kb(path, on_bad_line), lambda: KnowledgeBase(read_knowledge(path, on_bad_line))):
        caplog.clear()
        try:
            result = read()
        except DataError as e:
            result = str(e)
        outcomes.append((result, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]))
        fell_back = fell_back or any(LINE_BY_LINE in r.getMessage() for r in caplog.records)
    return outcomes, fell_back


def toy_knowledge(path, messy: bool = False):
    """The toy KB's triples as a Knowledge.txt; `messy` pads fields with whitespace and repeats lines."""
    triples = ToySource(n_entities=300).synth_triples(0)
    lines = [knowledge_line(t) for t in triples]
    if messy:
        lines = [f" {s}\u3000\t{p} \t {o.replace(' ', chr(0xa0) + '  ')} \n" for s, p, o in
                 (line.rstrip("\n").split("\t") for line in lines)] + lines[::7] + ["\n", "  \t \n"]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("messy,gz", [(False, False), (True, False), (True, True)])
def test_the_toy_kb_reads_the_same(tmp_path, caplog, messy, gz):
    path = toy_knowledge(tmp_path / "Knowledge.txt", messy)
    if gz:
        path = path.rename(path.with_suffix(".txt.gz"))
        path.write_bytes(gzip.compress(path.read_bytes()))
    caplog.set_level(logging.INFO)
    ((fast, _), (exact, _)), fell_back = both_readers(path, "error", caplog)
    assert not fell_back
    same_kb(fast, exact)
    assert len(fast) > 300 and fast.read_back


# Lines of up to 4 fields from characters that test the cleaning: whitespace of every kind, full-width
# parentheses (nested, unbalanced, empty), a few letters; and blank lines, repeats and bad lines.
CHARS = st.sampled_from(list("A张（）（）( \ufeff") + ["\u3000", "\xa0", "\x85", "\x1c", "\u2028", "\x0b", "\x0c"])
FIELD = st.text(CHARS, max_size=6)
SUBJECT = st.sampled_from(["A（B）", "（B）", "A（）", "A（B（C））", "A）B（C）", "A（B）（C）", "A（ B）", "A（B"]) | FIELD
WORD = st.text(st.sampled_from("A张（）"), min_size=1, max_size=3) | FIELD
TRIPLE = st.tuples(SUBJECT, WORD, WORD).map("\t".join)
LINE = (st.lists(FIELD, min_size=1, max_size=4).map("\t".join) | st.sampled_from(["", " ", "\t\t", "\ufeffA\tB\tC", "\ufeff\ufeffA\tB\tC", "\ufeff", "\ufeff\t\t"])
        | TRIPLE | TRIPLE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=10).map(lambda ls: ls + ls[: len(ls) // 2]), on_bad_line=st.sampled_from(["error", "skip"]),
       cr=st.booleans())
def test_any_lines_read_the_same(tmp_path_factory, caplog, lines, on_bad_line, cr):
    path = tmp_path_factory.mktemp("kb") / "Knowledge.txt"
    path.write_text("\n".join(lines) + ("\r\n" if cr else "\n"), encoding="utf-8")
    caplog.set_level(logging.INFO)
    ((fast, fast_warnings), (exact, exact_warnings)), fell_back = both_readers(path, on_bad_line, caplog)
    assert fell_back or not cr  # a CR is a line end to Arrow, not to the line reader
    assert fast_warnings == exact_warnings  # the skip count, once
    if isinstance(exact, str):
        assert fast == exact  # the same DataError, with the file and line
    else:
        same_kb(fast, exact)


def test_a_clean_file_is_not_read_line_by_line_and_skips_count(tmp_path, caplog):
    path = tmp_path / "Knowledge.txt"
    path.write_text("\ufeff甲（乙）\t丙\t丁\n\n甲\t\t丁\n一\t二\n\ufeff \n戊\t己\t\ufeff庚\n", encoding="utf-8")  # BOMs: dropped at
    # a line start, kept inside a line
    caplog.set_level(logging.INFO)
    kb = read_knowledge_kb(path, "skip")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"{path}: skipped 2 bad line(s)"]  # the Arrow path placed them, and counted them once
    assert [k.full_subject for k in kb.keys] == ["戊", "甲（乙）"] and kb.objects[0] == ["\ufeff庚"]
    with pytest.raises(DataError, match=rf"^{path}:3: expected 3 non-empty tab-separated fields, got 3, field 2 blank"):
        read_knowledge_kb(path)


def test_a_row_of_other_width_that_is_not_utf8_is_named_by_the_line_reader(tmp_path, caplog):
    """Arrow cannot hand such a row to its handler: the read falls back to the line reader, which names it."""
    path = tmp_path / "Knowledge.txt"
    path.write_bytes("甲\t丙\t丁\n".encode() + b"\xff\xfe\t\xc3\n" + "戊\t己\t庚\n".encode())
    caplog.set_level(logging.INFO)
    with pytest.raises(DataError, match=rf"^{path}:2: "):
        read_knowledge_kb(path)
    kb = read_knowledge_kb(path, "skip")
    assert [k.full_subject for k in kb.keys] == ["戊", "甲"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(LINE_BY_LINE in m for m in messages) and f"{path}: skipped 1 bad line(s)" in messages


def test_a_folder_keeps_the_kb_memory_mapped_and_knowledge_txt_round_trips(tmp_path):
    path = toy_knowledge(tmp_path / "source.txt", messy=True)
    kb = read_knowledge_kb(path)
    expected = "".join(map(knowledge_line, kb.triples())).encode("utf-8")
    assert b"".join(knowledge_text(kb, keys_at_a_time=7)) == expected  # chunked as at full size
    tokenizer = CharTokenizer.build(kb.characters())
    folder = KbFolder.create(tmp_path / "folder", kb, tokenizer, ["spm", "smp"], source=path)
    assert (folder.path / "Knowledge.txt").read_bytes() == expected
    ids = random.Random(0).sample(range(len(kb)), len(kb))  # the reference's keys out of order: it sorts them
    for order in ("spm", "smp"):  # the saved trie is the one built key by key from encode_key
        saved = Trie.load(folder.path / f"trie-{order}")
        reference = Trie.build([encode_key(tokenizer, kb.keys[i], order) for i in ids], ids)
        assert all(getattr(saved, name).dtype == getattr(reference, name).dtype
                   and np.array_equal(getattr(saved, name), getattr(reference, name)) for name in TRIE_ARRAYS)
    allocated = pa.total_allocated_bytes()
    loaded = KnowledgeBase.load(folder.path / "kb")
    assert pa.total_allocated_bytes() == allocated  # the strings are mapped, not read into memory
    same_kb(loaded, kb)
    for table in pa.ipc.open_file(folder.path / "kb" / "subjects.arrow").read_all().column(0).chunks:
        assert table.to_pylist() == list(kb.tables[0])  # an Arrow file any Arrow reader reads
    assert all(loaded.find(key) == i for i, key in enumerate(kb.keys))
    same_kb(read_knowledge_kb(folder.path / "Knowledge.txt"), kb)
    same_kb(KbFolder(folder.path).kb, kb)


def test_whitespace_is_pythons():
    assert WHITESPACE == "".join(c for c in map(chr, range(0x110000)) if c.isspace())


def test_the_vocabulary_and_encodings_equal_the_per_string_ones(tmp_path):
    kb = read_knowledge_kb(toy_knowledge(tmp_path / "Knowledge.txt", messy=True))
    tokenizer = CharTokenizer.build(kb.strings())
    assert kb.characters() == tokenizer.vocab[4:]
    strings = Strings(sorted({*kb.tables[0], "😀x", "é（" + WHITESPACE[:5]}))
    for vocab in (tokenizer, CharTokenizer(tokenizer.vocab[:40])):  # the second lacks characters: [UNK]
        index, flat, starts, lengths = encode_strings(vocab, strings)
        encoded = [flat[starts[i] : starts[i] + lengths[i]].tolist() for i in index]
        assert encoded == [vocab.encode(s) for s in strings]
