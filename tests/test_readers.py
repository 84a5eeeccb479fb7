"""KgCLUE readers (QA JSON lines, Knowledge TSV, change files), the sources built on them, and the
KnowledgeBase built from triples. Any-bytes properties of the readers: test_reader_properties.py."""
import gzip
import json
import logging

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from cli import run_cli
from kgqa.data.kgclue import read_qa
from kgqa.data.sources import KgclueSource, ToySource
from kgqa.kb.changes import CHANGES, Change, format_change, read_change_log, read_changes
from kgqa.kb.columns import KnowledgeBase
from kgqa.kb.knowledge_txt import read_knowledge
from kgqa.kb.sources import FileKB, GoldKB, KbSource
from kgqa.data.triples import Key, Triple
from kgqa.errors import ConfigError, DataError
from kgqa.trusted import CONF
from kgqa.kb.folder import VOCAB, KbFolder
from kgqa.kb.folder import KNOWLEDGE as KNOWLEDGE_FILE


def qa_line(question=None, answer=None, **extra):
    row = dict(extra)
    if question is not None:
        row["question"] = question
    if answer is not None:
        row["answer"] = answer
    return json.dumps(row, ensure_ascii=False)


GOOD = [
    qa_line("张三主要讲什么课程", "张三 ||| 主讲课程 ||| 数学", id=7),
    qa_line("郑多彬是做什么的", "郑多彬（韩国女演员（2000年出生）） ||| 职业 ||| 演员   歌手", id=8),
]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_qa_good_lines(tmp_path):
    path = write(tmp_path / "train.json", [GOOD[0], "", "   ", GOOD[1]])  # blank lines are ignored
    examples = read_qa(path)
    assert [e.id for e in examples] == [7, 8]
    assert [e.question for e in examples] == ["张三主要讲什么课程", "郑多彬是做什么的"]
    assert examples[0].triple == Triple(Key("张三", "主讲课程"), "数学")
    assert examples[1].triple == Triple(Key("郑多彬", "职业", "韩国女演员（2000年出生）"), "演员 歌手")


def test_read_qa_default_id_is_line_index(tmp_path):
    path = write(tmp_path / "dev.json", [qa_line("q1", "a ||| b ||| c"), qa_line("q2", "d ||| e ||| f")])
    assert [e.id for e in read_qa(path)] == [0, 1]


def test_read_qa_unlabelled(tmp_path):
    path = write(tmp_path / "test.json", [qa_line("q1", id=1), qa_line("q2", "a ||| b ||| c", id=2)])
    examples = read_qa(path, labelled=False)
    assert [e.triple for e in examples] == [None, Triple(Key("a", "b"), "c")]
    with pytest.raises(DataError, match=r"test\.json:1:"):
        read_qa(path)  # labelled by default: a missing answer is an error


def test_read_qa_unlabelled_non_string_answer(tmp_path):
    path = write(tmp_path / "test.json", [qa_line("q1", id=1), json.dumps({"question": "q2", "answer": None})])
    with pytest.raises(DataError, match=r"test\.json:2:"):
        read_qa(path, labelled=False)


BAD_QA = {
    "not json": '{"question": "q", "answer": ',
    "json but not an object": '["q", "a ||| b ||| c"]',
    "missing question": qa_line(answer="a ||| b ||| c"),
    "question not a string": json.dumps({"question": 3, "answer": "a ||| b ||| c"}),
    "missing answer": qa_line("q"),
    "answer with one separator": qa_line("q", "a ||| b"),
    "answer without spaced separators": qa_line("q", "a|||b|||c"),
    "answer with three separators": qa_line("q", "a ||| b ||| c ||| d"),
    "answer with an empty predicate": qa_line("q", "a |||  ||| c"),
    "question with a lone surrogate": json.dumps({"question": "q\ud800", "answer": "a ||| b ||| c"}),
    "nested too deep": "[" * 5000 + "]" * 5000,
}


@pytest.mark.parametrize("bad", list(BAD_QA.values()), ids=list(BAD_QA))
@pytest.mark.parametrize("lineno", [1, 3])
def test_read_qa_bad_line_names_file_and_line(tmp_path, bad, lineno):
    lines = [GOOD[0], GOOD[1]]
    lines.insert(lineno - 1, bad)
    path = write(tmp_path / "train.json", lines)
    with pytest.raises(DataError) as err:
        read_qa(path)
    assert f"{path}:{lineno}:" in str(err.value)


def test_read_qa_skip_counts_and_logs(tmp_path, caplog):
    path = write(tmp_path / "train.json", [BAD_QA["not json"], GOOD[0], BAD_QA["missing answer"], GOOD[1]])
    with caplog.at_level(logging.WARNING, logger="kgqa.data.kgclue"):
        examples = read_qa(path, on_bad_line="skip")
    assert [e.id for e in examples] == [7, 8]
    assert any("skipped 2" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_read_qa_skip_logs_nothing_when_clean(tmp_path, caplog):
    path = write(tmp_path / "train.json", GOOD)
    with caplog.at_level(logging.WARNING, logger="kgqa.data.kgclue"):
        assert len(read_qa(path, on_bad_line="skip")) == 2
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]


def test_on_bad_line_must_be_known(tmp_path):
    path = write(tmp_path / "train.json", GOOD)
    with pytest.raises(ValueError, match="on_bad_line"):
        read_qa(path, on_bad_line="ignore")


# --- knowledge ---------------------------------------------------------------------------
KNOWLEDGE = [
    "张三\t主讲课程\t数学",
    "郑多彬（韩国女演员（2000年出生））\t职业\t演员   歌手",
    "张三\t主要成就\t一等奖",
]
EXPECTED = [
    Triple(Key("张三", "主讲课程"), "数学"),
    Triple(Key("郑多彬", "职业", "韩国女演员（2000年出生）"), "演员 歌手"),
    Triple(Key("张三", "主要成就"), "一等奖"),
]


def test_read_knowledge_tsv(tmp_path):
    path = write(tmp_path / "Knowledge.txt", KNOWLEDGE)
    assert list(read_knowledge(path)) == EXPECTED


def test_read_knowledge_crlf(tmp_path):
    path = tmp_path / "Knowledge.txt"
    path.write_bytes(("\r\n".join(KNOWLEDGE) + "\r\n").encode("utf-8"))
    assert list(read_knowledge(path)) == EXPECTED


def test_read_knowledge_gz(tmp_path):
    path = tmp_path / "Knowledge.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(KNOWLEDGE) + "\n")
    assert list(read_knowledge(path)) == EXPECTED


BAD_KNOWLEDGE = {
    "two fields": "张三\t主讲课程",
    "four fields": "张三\t主讲课程\t数学\t物理",
    "empty subject": "\t主讲课程\t数学",
    "empty predicate": "张三\t\t数学",
    "blank object": "张三\t主讲课程\t  ",
}


@pytest.mark.parametrize("bad", list(BAD_KNOWLEDGE.values()), ids=list(BAD_KNOWLEDGE))
def test_read_knowledge_bad_line(tmp_path, bad):
    path = write(tmp_path / "Knowledge.txt", KNOWLEDGE[:2] + [bad] + KNOWLEDGE[2:])
    with pytest.raises(DataError) as err:
        list(read_knowledge(path))
    assert f"{path}:3:" in str(err.value)


def test_read_knowledge_skip_counts(tmp_path, caplog):
    lines = [BAD_KNOWLEDGE["two fields"], KNOWLEDGE[0], KNOWLEDGE[1], BAD_KNOWLEDGE["four fields"],
             BAD_KNOWLEDGE["empty predicate"], KNOWLEDGE[2]]
    path = write(tmp_path / "Knowledge.txt", lines)
    with caplog.at_level(logging.WARNING, logger="kgqa.data.kgclue"):
        assert list(read_knowledge(path, on_bad_line="skip")) == EXPECTED
    assert any("skipped 3" in r.getMessage() for r in caplog.records)


# --- knowledge base ----------------------------------------------------------------------
def test_kb_objects_in_file_order_without_duplicates():
    k1, k2 = Key("张三", "主讲课程"), Key("李四", "职业", "演员")
    triples = [Triple(k1, "数学"), Triple(k2, "演员"), Triple(k1, "物理"), Triple(k1, "数学"),
               Triple(k2, "演员"), Triple(k1, "化学")]
    kb = KnowledgeBase(triples)
    assert len(kb) == 2
    assert k1 in kb and k2 in kb and Key("张三", "职业") not in kb
    assert kb.keys == sorted([k1, k2])
    assert kb.objects[kb.key_id(k1)] == ["数学", "物理", "化学"]
    assert kb.objects[kb.key_id(k2)] == ["演员"]
    assert kb.answer(kb.key_id(k1)) == "数学"
    assert kb.answer(kb.key_id(k2)) == "演员"
    # triples() gives every distinct (key, object) once, keys in id order, objects in file order
    assert list(kb.triples()) == [Triple(k, o) for k in kb.keys for o in {k1: ["数学", "物理", "化学"], k2: ["演员"]}[k]]


def test_kb_key_ids_do_not_depend_on_input_order():
    triples = EXPECTED + [Triple(Key("王五", "职业"), "教师")]
    a, b = KnowledgeBase(triples), KnowledgeBase(list(reversed(triples)))
    assert a.keys == b.keys
    assert all(a.key_id(k) == b.key_id(k) == i for i, k in enumerate(a.keys))


def test_kb_from_knowledge_file(tmp_path):
    path = write(tmp_path / "Knowledge.txt", KNOWLEDGE + ["张三\t主讲课程\t物理", "张三\t主讲课程\t数学"])
    kb = KnowledgeBase(read_knowledge(path))
    assert len(kb) == 3
    key = Key("张三", "主讲课程")
    assert kb.objects[kb.key_id(key)] == ["数学", "物理"]
    assert kb.answer(kb.key_id(key)) == "数学"
    stats = kb.stats()
    assert stats["triples"] == 4 and stats["keys"] == 3 and stats["subjects"] == 2 and stats["predicates"] == 3


def test_read_knowledge_ignores_blank_lines(tmp_path):
    path = write(tmp_path / "kb.txt", ["张三\t主讲课程\t物理", "", "李四\t职业\t教师", ""])
    assert [t.key.subject for t in read_knowledge(path)] == ["张三", "李四"]


# --- what every reader does with the bytes: one LineReader -------------------------------
BOM = "\ufeff".encode()
READERS = {  # file name -> read it all, on_bad_line
    "train.json": lambda p, on_bad_line="error": read_qa(p, on_bad_line),
    "Knowledge.txt": lambda p, on_bad_line="error": list(read_knowledge(p, on_bad_line)),
    "Knowledge.txt.gz": lambda p, on_bad_line="error": list(read_knowledge(p, on_bad_line)),
    "add.tsv": lambda p, on_bad_line="error": read_changes(p, "add", on_bad_line),
    "delete.tsv": lambda p, on_bad_line="error": read_changes(p, "delete", on_bad_line),
    "changes.tsv": lambda p, on_bad_line="error": read_change_log(p, on_bad_line),
}
GOOD_LINES = {"train.json": GOOD, "Knowledge.txt": KNOWLEDGE, "Knowledge.txt.gz": KNOWLEDGE, "add.tsv": KNOWLEDGE,
              "delete.tsv": ["张三\t主讲课程", KNOWLEDGE[1]],
              "changes.tsv": ["add\t" + KNOWLEDGE[0], "delete\t张三\t主讲课程"]}


def write_bytes(path, data: bytes):
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def good_bytes(name, end="\n") -> bytes:
    return "".join(line + end for line in GOOD_LINES[name]).encode("utf-8")


@pytest.mark.parametrize("name", list(READERS))
def test_bom_and_crlf_read_as_plain_lines(tmp_path, name):
    """A byte-order mark at the start (or where files were concatenated) and CRLF change nothing."""
    plain = READERS[name](write_bytes(tmp_path / name, good_bytes(name)))
    assert plain and READERS[name](write_bytes(tmp_path / name, BOM + good_bytes(name, "\r\n"))) == plain
    twice = READERS[name](write_bytes(tmp_path / name, BOM + good_bytes(name) + BOM + good_bytes(name)))
    if name == "train.json":
        assert [(e.question, e.triple) for e in twice] == [(e.question, e.triple) for e in plain * 2]
    else:
        assert twice == plain * 2


def test_bom_is_not_part_of_the_first_subject(tmp_path):
    (first, *_) = read_knowledge(write_bytes(tmp_path / "Knowledge.txt", BOM + good_bytes("Knowledge.txt")))
    assert first.key.subject == "张三"


NOT_TEXT = {  # a line's bytes -> what the message says
    "GBK": ("张三\t主讲课程\t数学".encode("gbk"), "not UTF-8 text"),
    "Latin-1": ("Zoë\tkind\tcafé".encode("latin-1"), "not UTF-8 text"),
    "cut UTF-8": ("张三\t主讲课程\t数学".encode()[:-1], "not UTF-8 text"),
    "NUL": (b"a\x00b\tc\td", "NUL byte"),
}


@pytest.mark.parametrize("bad", list(NOT_TEXT.values()), ids=list(NOT_TEXT))
@pytest.mark.parametrize("name", list(READERS))
def test_a_line_that_is_not_utf8_names_file_and_line(tmp_path, name, bad):
    raw, why = bad
    lines = good_bytes(name).splitlines(keepends=True)
    path = write_bytes(tmp_path / name, lines[0] + raw + b"\n" + b"".join(lines[1:]))
    with pytest.raises(DataError, match=why) as err:
        READERS[name](path)
    assert str(err.value).startswith(f"{path}:2: ")
    assert READERS[name](path, "skip") == READERS[name](write_bytes(tmp_path / name, good_bytes(name)))


def test_utf16_is_refused_as_a_file(tmp_path):
    path = tmp_path / "Knowledge.txt"
    path.write_bytes("\n".join(KNOWLEDGE).encode("utf-16"))
    with pytest.raises(DataError, match=r"Knowledge\.txt: UTF-16 text: save it as UTF-8"):
        list(read_knowledge(path, on_bad_line="skip"))


def test_truncated_gzip_names_file_and_last_line_read(tmp_path):
    lines = [f"张三{i}\t主讲课程\t数学{i}" for i in range(5000)]
    packed = gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1)
    path = tmp_path / "Knowledge.txt.gz"
    path.write_bytes(packed[: len(packed) // 2])
    read = []
    with pytest.raises(DataError, match=r"Knowledge\.txt\.gz: truncated or corrupt gzip data after line (\d+)") as err:
        read.extend(read_knowledge(path, on_bad_line="skip"))
    assert 0 < len(read) < len(lines) and str(err.value).split("after line ")[1].startswith(f"{len(read)} ")


def test_gz_name_and_gzip_data_go_together(tmp_path):
    plain = tmp_path / "Knowledge.txt.gz"
    plain.write_text("\n".join(KNOWLEDGE), encoding="utf-8")
    with pytest.raises(DataError, match=r"Knowledge\.txt\.gz: named \.gz but not gzip data"):
        list(read_knowledge(plain))
    packed = tmp_path / "Knowledge.txt"
    packed.write_bytes(gzip.compress("\n".join(KNOWLEDGE).encode()))
    with pytest.raises(DataError, match=r"Knowledge\.txt: gzip data in a file not named \.gz"):
        list(read_knowledge(packed))


EMPTY = {"nothing": b"", "a BOM": BOM, "blank lines": b"\n  \r\n\t\n"}


@pytest.mark.parametrize("content", list(EMPTY.values()), ids=list(EMPTY))
@pytest.mark.parametrize("name", [n for n in READERS if n != "changes.tsv"])
def test_an_empty_file_is_an_error(tmp_path, name, content):
    path = write_bytes(tmp_path / name, content)
    for on_bad_line in ("error", "skip"):
        with pytest.raises(DataError, match=r": empty: no ") as err:
            READERS[name](path, on_bad_line)
        assert str(err.value).startswith(f"{path}: ")


@pytest.mark.parametrize("name", [n for n in READERS if n != "changes.tsv"])
def test_no_valid_line_after_skipping_is_an_error(tmp_path, name, caplog):
    path = write_bytes(tmp_path / name, b"\n\xff\xfe\n\nnot a line\n\x00\n")
    with caplog.at_level(logging.WARNING, logger="kgqa.data.kgclue"):
        with pytest.raises(DataError, match=r": no valid .*: all 3 non-blank line\(s\) were bad and skipped") as err:
            READERS[name](path, "skip")
    assert str(err.value).startswith(f"{path}: ")
    assert [r.getMessage() for r in caplog.records] == [f"{path}: skipped 3 bad line(s)"]


def test_an_empty_change_log_is_no_changes(tmp_path):
    for content in EMPTY.values():
        assert read_change_log(write_bytes(tmp_path / "changes.tsv", content)) == []


def test_change_log_reads_back_what_format_change_wrote(tmp_path):
    changes = [Change("add", Key("张三", "主讲课程", "老师（数学）"), "数学 物理"),
               Change("delete", Key("李四", "职业")), Change("delete", Key("王五", "职业"), "演员")]
    path = tmp_path / "changes.tsv"
    path.write_text("".join(format_change(c) for c in changes), encoding="utf-8")
    assert read_change_log(path) == changes


def test_kb_folder_changes_read_the_log_as_the_other_files(tmp_path):
    """KbFolder.changes is read_change_log: a BOM, CRLF and blank lines are fine, a bad byte names its line."""
    for name in (KNOWLEDGE_FILE, VOCAB):  # enough of a folder for KbFolder; changes() reads only the log
        (tmp_path / name).write_text("", encoding="utf-8")
    folder = KbFolder(tmp_path)
    assert folder.changes() == []
    (tmp_path / CHANGES).write_bytes(BOM + b"add\t\xe5\xbc\xa0\t\xe8\x81\x8c\t\xe6\x95\x99\r\n\r\ndelete\tb\tc\r\n")
    assert folder.changes() == [Change("add", Key("张", "职"), "教"), Change("delete", Key("b", "c"))]
    (tmp_path / CHANGES).write_bytes(b"delete\tb\tc\ndelete\t\xe5\xbc\tc\n")
    with pytest.raises(DataError, match=rf"^{tmp_path / CHANGES}:2: not UTF-8 text"):
        folder.changes()


@pytest.mark.parametrize("line", ["add\t张三\t主讲课程", "change\t张三\t主讲课程\t数学", "delete\t张三",
                                  "add\t\t主讲课程\t数学"])
def test_change_log_bad_line(tmp_path, line):
    path = tmp_path / "changes.tsv"
    path.write_text(f"delete\t李四\t职业\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}:2: "):
        read_change_log(path)


# --- sources: emptiness and limits found when the data module is set up ------------------
def kgclue_folder(tmp_path, **contents):
    files = {"train": "train.json", "val": "dev.json", "test": "test_public.json"}
    for split, name in files.items():
        (tmp_path / name).write_text(contents.get(split, "\n".join(GOOD) + "\n"), encoding="utf-8")
    return files


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_is_an_error_before_training(tmp_path, split):
    files = kgclue_folder(tmp_path, **{split: "\n\n"})
    source = KgclueSource(str(tmp_path), files)  # built by Hydra: nothing read yet
    with pytest.raises(DataError, match=rf"^{tmp_path / files[split]}: empty: no questions"):
        source.splits
    with pytest.raises(DataError, match=rf"^{tmp_path / files[split]}: empty"):
        GoldKB().build(KgclueSource(str(tmp_path), files))


def test_skipped_lines_are_counted_once_per_file(tmp_path, caplog):
    files = kgclue_folder(tmp_path, train="\n".join([BAD_QA["not json"], *GOOD, BAD_QA["missing answer"]]))
    source = KgclueSource(str(tmp_path), files, on_bad_line="skip", limit=1)
    with caplog.at_level(logging.WARNING, logger="kgqa.data.kgclue"):
        kb = GoldKB().build(source)
        splits = source.splits
    assert [r.getMessage() for r in caplog.records] == [f"{tmp_path / 'train.json'}: skipped 2 bad line(s)"]
    assert {name: len(examples) for name, examples in splits.items()} == {"train": 1, "val": 1, "test": 1}
    assert len(kb) == 2  # the gold KB takes every question, not only the first `limit`


@pytest.mark.parametrize("limit", [0, -1, "all"])
def test_limit_must_be_positive(tmp_path, limit):
    source = KgclueSource(str(tmp_path), kgclue_folder(tmp_path), limit=limit)
    with pytest.raises(ConfigError, match=rf"data\.source\.limit={limit}: give a positive number"):
        source.splits


def test_toy_with_too_few_entities_is_a_config_error():
    with pytest.raises(ConfigError, match="no val or test questions.*n_entities"):
        ToySource(n_entities=5).splits


def test_an_empty_kb_file_is_an_error(tmp_path):
    path = tmp_path / "Knowledge.txt"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}: empty: no triples"):
        FileKB(str(path)).build(KgclueSource(str(tmp_path), kgclue_folder(tmp_path)))


def test_train_on_an_empty_split_exits_1_before_training(tmp_path):
    kgclue_folder(tmp_path, train="")
    run = tmp_path / "run"
    proc = run_cli("train", "data=kgclue", f"data.root={tmp_path}", "kb=gold", "logger=csv", f"hydra.run.dir={run}",
                   check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"kgqa: {tmp_path / 'train.json'}: empty: no questions"
    assert not (run / "checkpoints").exists()


def test_every_kb_option_is_a_kb_source():
    """The data module calls build, tokenizer and keyspace on whatever `kb=` gives, checking no types."""
    options = sorted((CONF / "kb").glob("*.yaml"))
    assert len(options) >= 4
    for path in options:
        assert issubclass(get_class(OmegaConf.load(path)._target_), KbSource), path
