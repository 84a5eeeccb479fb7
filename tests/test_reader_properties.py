"""Every reader of user files, on any bytes: records, or a DataError naming the file (and the line
for a line-level problem), never another exception; with on_bad_line=skip, no line-level error at
all, the skipped lines counted once, and exactly the records of the lines that are good on their own."""
import gzip
import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kgqa.data.kgclue import BOM, GZIP_MAGIC, UTF16_BOMS, read_qa
from kgqa.errors import DataError
from kgqa.kb.changes import read_change_log, read_changes
from kgqa.kb.knowledge_txt import read_knowledge

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READERS = {  # name -> (file name, reader(path, on_bad_line) -> records)
    "qa": ("train.json", lambda p, skip: read_qa(p, skip)),
    "qa-unlabelled": ("test.json", lambda p, skip: read_qa(p, skip, labelled=False)),
    "knowledge": ("Knowledge.txt", lambda p, skip: list(read_knowledge(p, skip))),
    "knowledge-gz": ("Knowledge.txt.gz", lambda p, skip: list(read_knowledge(p, skip))),
    "add": ("add.tsv", lambda p, skip: read_changes(p, "add", skip)),
    "delete": ("delete.tsv", lambda p, skip: read_changes(p, "delete", skip)),
    "log": ("changes.tsv", lambda p, skip: read_change_log(p, skip)),
}
# file-level problems: they name the file but no line
FILE_LEVEL = re.compile(r"empty: no |no valid .*: all \d+ non-blank line|not gzip data|gzip data in a file not named|"
                        r"UTF-16 text|truncated or corrupt gzip data")

HEADS = (GZIP_MAGIC, *UTF16_BOMS)

# --- lines: good ones of each format, plausible bad ones, and pieces that break them ---------
# \x85 and \u2028 end a line for str.splitlines, never for these readers
text = st.text(st.sampled_from("张三李（）() \t|\u3000\x85\u2028ab\r\"\\{}:,"), max_size=8)
word = st.text(st.sampled_from("张三李（）()ab|\\{}\x85\u2028"), min_size=1, max_size=6)  # no tab, seldom blank
tsv = st.lists(text, min_size=1, max_size=5).map("\t".join)
triple = st.lists(word, min_size=3, max_size=3)
key_or_triple = st.lists(word, min_size=2, max_size=3).map("\t".join)
answer = st.lists(text, min_size=1, max_size=4).map(" ||| ".join) | triple.map(" ||| ".join)
qa = st.fixed_dictionaries({"question": text | st.integers()},
                           optional={"answer": answer | st.none(), "id": st.integers()})
json_line = st.builds(json.dumps, qa, ensure_ascii=st.booleans())
logged = st.tuples(st.sampled_from(["add", "delete", "ad"]), tsv | key_or_triple).map("\t".join)
piece = st.sampled_from([b"\t", b"\r", b"\x00", BOM, b"\xff", b"\xe4\xb8", b"\xed\xa0\x80", "（演员）".encode(),
                         b'"\\ud800"', b"[" * 3000, b"add\t", b"delete\t", b"{", b"}", b" ||| "])
raw_line = st.lists(piece | text.map(str.encode), max_size=6).map(b"".join)
line = st.one_of(text, tsv, key_or_triple, json_line, logged).map(str.encode) | raw_line | st.binary(max_size=12)
good_qa = st.builds(lambda q, a: json.dumps({"question": q, "answer": " ||| ".join(a)}, ensure_ascii=False),
                    word, triple)
GOOD = {  # reader -> lines it takes
    "qa": good_qa,
    "qa-unlabelled": good_qa | st.builds(lambda q: json.dumps({"question": q}), word),
    "knowledge": triple.map("\t".join),
    "add": triple.map("\t".join),
    "delete": key_or_triple,
    "log": st.tuples(st.just("add"), triple.map("\t".join)).map("\t".join)
    | st.tuples(st.just("delete"), key_or_triple).map("\t".join),
}


@st.composite
def contents(draw, name: str) -> bytes:
    """A file's uncompressed bytes: lines ended by LF or CRLF, maybe a BOM first, maybe no final line end."""
    lines = draw(st.lists(GOOD[name.removesuffix("-gz")].map(str.encode) | line, max_size=8))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = end.join(lines) + (end if lines and draw(st.booleans()) else b"")
    return (BOM if draw(st.booleans()) else b"") + body


@st.composite
def file_bytes(draw, name: str) -> bytes:
    """What lies on disk: the contents, gzip'd for a .gz name (sometimes cut short, or not gzip'd at all)."""
    data = draw(contents(name))
    if not READERS[name][0].endswith(".gz"):
        return draw(st.sampled_from([data] * 4 + [gzip.compress(data), b"\xff\xfe" + data]))
    packed = gzip.compress(data)
    return draw(st.sampled_from([packed] * 3 + [packed[: draw(st.integers(0, len(packed)))], data]))


@contextmanager
def warnings_logged():
    """The warning messages of the readers' logger while inside."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("kgqa.data.kgclue")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def read(name: str, path: Path, on_bad_line: str):
    """The records, or the DataError; any other exception fails the test."""
    try:
        return READERS[name][1](path, on_bad_line)
    except DataError as e:
        return e


def alone(name: str, folder: Path, raw: bytes):
    """What one line gives in a file of its own: its records ([] for a blank line) or its DataError.
    It goes second, after a blank line, so it is never mistaken for a file-level head."""
    path = folder / ("alone" + "".join(Path(READERS[name][0]).suffixes).removesuffix(".gz"))
    path.write_bytes(b"\n" + raw + b"\n")
    result = read(name, path, "error")
    if isinstance(result, DataError) and "empty: no " in str(result):
        return []
    return result


def check_error(error: DataError, path: Path) -> None:
    message = str(error)
    assert message.startswith(f"{path}:"), message
    assert re.match(rf"{re.escape(str(path))}:\d+: ", message) or FILE_LEVEL.search(message), message


def comparable(records) -> list:
    """Records without the QA id (a default id is the line index, which differs in a file of one line)."""
    return [(r.question, r.triple) if hasattr(r, "question") else r for r in records]


@pytest.mark.parametrize("name", list(READERS))
@SETTINGS
@given(data=st.data())
def test_any_bytes_give_records_or_a_data_error(tmp_path_factory, name, data):
    path = tmp_path_factory.mktemp(name) / READERS[name][0]
    path.write_bytes(data.draw(file_bytes(name)))
    result = read(name, path, "error")
    if isinstance(result, DataError):
        check_error(result, path)
    else:
        assert result or name == "log"  # an empty change log is no changes; any other empty input is an error


@pytest.mark.parametrize("name", [n for n in READERS if not n.endswith("-gz")])
@SETTINGS
@given(data=st.data())
def test_skip_counts_each_bad_line_once(tmp_path_factory, name, data):
    folder = tmp_path_factory.mktemp(name)
    path = folder / READERS[name][0]
    body = data.draw(contents(name))
    assume(body[:2] not in HEADS)  # a file-level error, whatever the lines
    path.write_bytes(body)
    with warnings_logged() as warnings:
        result = read(name, path, "skip")
    each = [alone(name, folder, raw) for raw in body.split(b"\n")]
    bad = sum(isinstance(r, DataError) for r in each)
    assert all(":2: " in str(r) for r in each if isinstance(r, DataError))
    skipped = [m for m in warnings if "skipped" in m]
    assert skipped == ([f"{path}: skipped {bad} bad line(s)"] if bad else [])
    good = [record for r in each if not isinstance(r, DataError) for record in r]
    if isinstance(result, DataError):
        check_error(result, path)
        assert not re.match(rf"{re.escape(str(path))}:\d+: ", str(result))  # never a line-level error
        assert not good and name != "log"
        assert (f"all {bad} non-blank" if bad else "empty: no ") in str(result)
    else:
        assert comparable(result) == comparable(good)


@pytest.mark.parametrize("name", ["knowledge-gz"])
@SETTINGS
@given(data=st.data())
def test_gzip_reads_as_the_plain_file(tmp_path_factory, name, data):
    """A whole .gz gives what its contents give uncompressed."""
    folder = tmp_path_factory.mktemp(name)
    body = data.draw(contents(name))
    assume(body[:2] not in HEADS)  # a plain file that starts so is refused whole, a line in a .gz is only a bad line
    (folder / "Knowledge.txt.gz").write_bytes(gzip.compress(body))
    (folder / "Knowledge.txt").write_bytes(body)
    packed, plain = (read(name, folder / f, "skip") for f in ("Knowledge.txt.gz", "Knowledge.txt"))
    if isinstance(plain, DataError):
        assert str(packed) == str(plain).replace("Knowledge.txt", "Knowledge.txt.gz", 1)
    else:
        assert packed == plain
