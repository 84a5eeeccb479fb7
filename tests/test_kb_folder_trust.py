"""A KB folder under real concurrent processes, damage and bad keys: nothing lost, nothing torn,
never a traceback (kgqa/kb/folder.py, kgqa/saved.py, kgqa-kb)."""
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import ROOT, run_cli
from kgqa.kb.columns import FILES as KB_FILES
from kgqa.kb.columns import KnowledgeBase
from kgqa.data.tokenizer import CharTokenizer, encode_key
from kgqa.data.triples import Key, Triple
from kgqa.errors import ConfigError, DataError, KgqaError
from kgqa.kb.changes import CHANGES
from kgqa.kb.folder import KNOWLEDGE, KbFolder
from kgqa.kb.knowledge_txt import read_knowledge
from kgqa.trie import ARRAYS as TRIE_ARRAYS
from kgqa.trie import MAX_LENGTH

CHARS = "甲乙丙丁戊己庚辛壬癸"
SPAWN = multiprocessing.get_context("spawn")  # fresh interpreters, as separate kgqa-kb runs are


def name(i: int, width: int = 4) -> str:
    return "".join(CHARS[(i // 10**k) % 10] for k in range(width))


def make_folder(path: Path, n: int) -> KbFolder:
    """n keys; big enough that a merge takes a while (~0.3 s at 3000), so the other process lands inside it."""
    triples = [Triple(Key(name(i), name(7 * i + 3, 2)), f"o{i}") for i in range(n)]
    return KbFolder.create(path, KnowledgeBase(triples), CharTokenizer.build(list(CHARS + "o0123456789")), ["spm"])


def write_tsv(path: Path, rows) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def new_triple(worker: int, i: int) -> Triple:
    """A key of its own per worker and step (5-character subjects are not in the base)."""
    return Triple(Key(name(1000 * worker + i, 5), "乙"), f"w{worker}o{i}")


# --- workers, each in its own process, all started together at a barrier --------------
def adder(path, worker, steps, barrier):
    barrier.wait()
    for i in range(steps):
        t = new_triple(worker, i)
        rows = write_tsv(Path(path).parent / f"add-{worker}-{i}.tsv", [(t.key.full_subject, t.key.predicate, t.obj)])
        KbFolder(path).record("add", rows)


def merger(path, worker, steps, barrier):
    barrier.wait()
    for _ in range(steps):
        KbFolder(path).merge()


def reader(path, worker, steps, barrier):
    """Loads the folder as kb=folder does (KgqaDataModule.setup) and checks its KB and trie agree."""
    barrier.wait()
    for _ in range(steps):
        assert_consistent(KbFolder(path))


def assert_consistent(folder: KbFolder) -> None:
    """Every trie key is a live KB key with the tokens of that key, and every live key is in the trie."""
    kb = folder.build()
    tokenizer = folder.tokenizer(["什么问题"])
    keyspace = folder.keyspace(kb, tokenizer, "spm")
    values = sorted(keyspace.trie.values_under(keyspace.trie.ROOT).tolist())
    assert values == kb.live_ids(), "the trie's keys are not the KB's live keys"
    for i in values[:: max(1, len(values) // 50)] + values[-20:]:
        state = keyspace.trie.walk(encode_key(tokenizer, kb.keys[i], "spm"))
        assert state >= 0 and keyspace.trie.values_under(state).tolist() == [i]


def run_together(path: Path, *jobs) -> None:
    """Each (worker function, steps) in its own process, released together; all must succeed."""
    barrier = SPAWN.Barrier(len(jobs))
    procs = [SPAWN.Process(target=job, args=(str(path), w, steps, barrier)) for w, (job, steps) in enumerate(jobs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def kb_triples(folder_path: Path) -> set[Triple]:
    return set(KbFolder(folder_path).kb.triples())


ADDS = 12


@pytest.mark.parametrize("jobs", [
    [(adder, ADDS), (merger, 4)],             # a change while merges run
    [(adder, ADDS), (adder, ADDS)],           # two writers of changes.tsv
    [(merger, 3), (merger, 3), (adder, ADDS)],  # two merges, with something to merge
], ids=["add-merge", "add-add", "merge-merge"])
def test_no_change_is_lost_between_concurrent_writers(tmp_path, jobs):
    path = tmp_path / "kb"
    before = set(make_folder(path, 3000).kb.triples())
    run_together(path, *jobs)
    added = {new_triple(w, i) for w, (job, steps) in enumerate(jobs) if job is adder for i in range(steps)}
    text = (path / KNOWLEDGE).read_text(encoding="utf-8")
    log = (path / CHANGES).read_text(encoding="utf-8") if (path / CHANGES).exists() else ""
    for t in added:  # on record in one file or the other
        assert f"{t.key.full_subject}\t{t.key.predicate}\t{t.obj}\n" in text + log.replace("add\t", "")
    assert kb_triples(path) == before | added  # and in the KB as loaded
    assert_consistent(KbFolder(path))
    assert not [p.name for p in path.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporaries left


def test_a_reader_never_sees_half_a_merge(tmp_path):
    path = tmp_path / "kb"
    make_folder(path, 3000)
    run_together(path, (reader, 40), (merger, 6), (adder, ADDS))


def test_kgqa_kb_add_while_a_merge_runs(tmp_path):
    """The users' report, as they ran it: both exit 0 and the added triple is kept."""
    path = tmp_path / "kb"
    make_folder(path, 20000)  # a merge of a few seconds: the add, started with it, comes in while it runs
    t = new_triple(9, 0)
    rows = write_tsv(tmp_path / "add.tsv", [(t.key.full_subject, t.key.predicate, t.obj)])
    cmd = [sys.executable, "-m", "kgqa.cli.kb", f"kb_dir={path}"]
    merge = subprocess.Popen(cmd + ["action=merge"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    add = subprocess.Popen(cmd + ["action=add", f"triples={rows}"], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert add.wait(120) == 0 and merge.wait(120) == 0
    assert t in kb_triples(path)


# --- never over an input; nothing half-written ----------------------------------------------
def test_out_over_its_own_input_is_refused_before_any_work(tmp_path):
    path = tmp_path / "kb"
    make_folder(path, 50)
    knowledge = path / KNOWLEDGE
    with open(knowledge, "a", encoding="utf-8") as f:
        f.write("bad line\n")  # skipped with on_bad_line=skip, and dropped by a rewrite
    original = knowledge.read_bytes()
    for inputs in (["kb=file", f"kb.path={knowledge}", "data.on_bad_line=skip"], ["kb=folder", f"kb.path={path}"],
                   ["data=kgclue", f"data.root={path}"]):  # the QA files would be DIR/train.json ...
        proc = run_cli("kb", *inputs, f"out={path}", check=False)
        last_line = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last_line.startswith(f"kgqa: out={path} would overwrite")
        assert "Traceback" not in proc.stderr
    assert knowledge.read_bytes() == original


def long_key_kb(tmp_path: Path) -> tuple[Path, KnowledgeBase]:
    rows = [("甲", "乙", "一"), ("丙" * (MAX_LENGTH + 1), "丁", "二"), ("戊", "己", "三")]
    knowledge = write_tsv(tmp_path / "long.txt", rows)
    return knowledge, KnowledgeBase(read_knowledge(knowledge))


def test_kgqa_kb_names_the_line_of_a_key_too_long(tmp_path):
    knowledge, _ = long_key_kb(tmp_path)
    proc = run_cli("kb", "kb=file", f"kb.path={knowledge}", f"out={tmp_path / 'out'}", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith(f"kgqa: {knowledge}:2: the key '丙丙丙")
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_a_key_too_long_for_the_trie_names_its_line_and_writes_nothing(tmp_path):
    knowledge, kb = long_key_kb(tmp_path)
    with pytest.raises(DataError, match=rf"^{knowledge}:2: the key '丙丙丙.*' is {MAX_LENGTH + 5} tokens long"):
        KbFolder.create(tmp_path / "out", kb, CharTokenizer.build(kb.strings()), ["spm"], source=knowledge)
    assert not (tmp_path / "out").exists()
    folder = make_folder(tmp_path / "kb", 50)  # an existing folder is left as it was
    saved = {p: p.read_bytes() for p in folder.path.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match=f"^{knowledge}:2:"):
        KbFolder.create(folder.path, kb, CharTokenizer.build(kb.strings()), ["spm"], source=knowledge)
    assert {p: p.read_bytes() for p in folder.path.rglob("*") if p.is_file()} == saved


def test_an_added_key_too_long_names_the_change_line(tmp_path):
    folder = make_folder(tmp_path / "kb", 50)
    rows = write_tsv(tmp_path / "add.tsv", [("甲甲甲甲甲", "乙", "x"), ("甲" * MAX_LENGTH, "乙", "y")])
    with pytest.raises(DataError, match=rf"^{rows}:2: the key '甲甲.*' is {MAX_LENGTH + 4} tokens long"):
        folder.record("add", rows)
    assert not (folder.path / CHANGES).exists()


def test_an_added_key_that_encodes_like_an_earlier_one_names_both(tmp_path):
    """Characters outside vocab.json read as [UNK]: 子丑 and 卯辰 are one path; the first is on record."""
    folder = make_folder(tmp_path / "kb", 50)
    folder.record("add", write_tsv(tmp_path / "first.tsv", [("甲甲甲甲甲", "乙", "x"), ("子丑", "寅", "x")]))
    rows = write_tsv(tmp_path / "add.tsv", [("乙乙乙乙乙", "乙", "x"), ("卯辰", "寅", "y")])
    with pytest.raises(DataError, match=rf"^{rows}:2: the key '卯辰\\t寅' encodes like the key '子丑\\t寅' "
                                         rf"\({folder.path / CHANGES}:2\)"):
        folder.record("add", rows)
    assert "乙乙乙乙乙" not in (folder.path / CHANGES).read_text(encoding="utf-8")  # nothing of it recorded


def test_kgqa_kb_bad_arguments_are_one_line(tmp_path):
    for args, message in [(["action=add"], "kgqa: action=add needs kb_dir=DIR"),
                          (["action=merge"], "kgqa: action=merge needs kb_dir=DIR"),
                          (["action=rebuild"], "kgqa: action=rebuild: not an action; choose one of ['add', 'build'")]:
        proc = run_cli("kb", *args, check=False)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert proc.stderr.startswith(message)


# --- a damaged folder ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A saved folder with a change recorded: every kind of file it can hold."""
    tmp = tmp_path_factory.mktemp("pristine")
    folder = make_folder(tmp / "kb", 40)
    t = new_triple(0, 0)
    folder.record("add", write_tsv(tmp / "add.tsv", [(t.key.full_subject, t.key.predicate, t.obj)]))
    return folder.path


FILES = ([KNOWLEDGE, "vocab.json", CHANGES] + [f"kb/{f}" for f in ("kb.json", *KB_FILES)]
         + [f"trie-spm/{f}" for f in ("trie.json", *(f"{name}.npy" for name in TRIE_ARRAYS))])
# files whose damage may leave a working folder: a change log cut at a line end, a header the columns
# are then not used without (Knowledge.txt is read instead)
MAY_STILL_WORK = {CHANGES, "kb/kb.json"}


def load_damaged(pristine: Path, tmp_path: Path, file: str, data: bytes) -> Path:
    path = tmp_path / "kb"
    shutil.copytree(pristine, path)
    (path / file).write_bytes(data)
    return path


def outcome(path: Path, file: str) -> str:
    """"error" (a KgqaError naming the file) or "works" (KB and trie agree); anything else fails."""
    try:
        assert_consistent(KbFolder(path))
        return "works"
    except KgqaError as e:
        assert str(path / file) in str(e), f"{e} does not name {path / file}"
        assert "kgqa-kb" in str(e) or CHANGES in file or KNOWLEDGE in file, f"{e} does not say how to fix it"
        return "error"


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("damage", ["truncated", "emptied", "garbage"])
def test_a_damaged_file_is_named(pristine, tmp_path, file, damage):
    data = (pristine / file).read_bytes()
    data = {"truncated": data[: len(data) // 2], "emptied": b"", "garbage": bytes(range(256))[::-1] * 3}[damage]
    result = outcome(load_damaged(pristine, tmp_path, file, data), file)
    assert result == "error" or file in MAY_STILL_WORK


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(FILES), data=st.binary(max_size=300), keep=st.integers(0, 400), in_place=st.booleans())
def test_any_bytes_in_any_file_give_a_working_folder_or_a_named_error(pristine, tmp_path_factory, file, data, keep,
                                                                     in_place):
    """The file's first `keep` bytes, then arbitrary ones, then (in place) the rest of the file."""
    original = (pristine / file).read_bytes()
    damaged = original[:keep] + data + (original[keep + len(data) :] if in_place else b"")
    outcome(load_damaged(pristine, tmp_path_factory.mktemp("damaged"), file, damaged), file)


def test_the_undamaged_folder_works(pristine):
    """... and FILES is every file it has (the lock file aside)."""
    assert sorted(str(p.relative_to(pristine)) for p in pristine.rglob("*") if p.is_file() and p.name != ".lock") == \
        sorted(FILES)
    assert outcome(pristine, KNOWLEDGE) == "works"
    assert isinstance(KbFolder(pristine).base.columns.base, np.memmap)


def test_a_config_error_for_an_unknown_change(pristine, tmp_path):
    with pytest.raises(ConfigError, match=r"action=rename: not a change; choose one of \('add', 'delete'\)"):
        KbFolder(pristine).record("rename", write_tsv(tmp_path / "x.tsv", [("甲", "乙", "丙")]))


def test_a_large_file_unchanged_since_written_is_not_read_again_but_an_edit_is_caught(tmp_path, monkeypatch):
    """Above REREAD_ABOVE bytes a file whose size and time are as written is trusted without reading it
    (the full KB's trie would cost seconds per load); an edit in place changes its time and is read."""
    import time

    import kgqa.saved as saved

    np.save(tmp_path / "a.npy", np.arange(1000, dtype=np.int32))
    saved.write_header(tmp_path, "h.json", {"format": "x"})
    monkeypatch.setattr(saved, "REREAD_ABOVE", 1)
    read = []
    monkeypatch.setattr(saved, "fingerprint", lambda path, real=saved.fingerprint: read.append(path) or real(path))
    saved.read_header(tmp_path, "h.json", "x", ["a.npy"], "thing", "fix")
    assert read == []
    time.sleep(0.01)
    with open(tmp_path / "a.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\x01")
    with pytest.raises(DataError, match="a.npy: changed since it was saved"):
        saved.read_header(tmp_path, "h.json", "x", ["a.npy"], "thing", "fix")
    assert read == [tmp_path / "a.npy"]
