"""Folders of arrays as the KB columns and the key trie are saved: a small JSON header that names
the format and the size and CRC-32 of every file beside it, read back checked.

A truncated, emptied, overwritten or foreign file is then a DataError that names it and says how
to get a good one, never a numpy or JSON traceback and never a trie walking garbage. Reading every
byte costs about a second per GB, so a file of REREAD_ABOVE bytes or more whose size and
modification time are still those the header recorded is not read again (a write through the file
system changes the time; the 954 MB trie of the full KB then loads in memory-map time); smaller
files, and any large one whose time changed (a copy without times kept, an edit), are checked whole.
"""
from __future__ import annotations

import json
import os
import tokenize
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from kgqa.errors import DataError
from kgqa.files import write_text

REREAD_ABOVE = 64 << 20  # bytes: larger files unchanged since written (size, mtime) are not re-read
REBUILD = "rebuild it with kgqa-kb (out=DIR, or action=merge kb_dir=DIR for a KB folder)"


def fingerprint(path: Path) -> list[int]:
    """[size, CRC-32] of a file, read a chunk at a time into one buffer: not memory-mapped, so the process's
    resident memory does not grow by the file's size (the 954 MB trie of the full KB is written and checked
    while the KB is in memory)."""
    crc = 0
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        buffer = bytearray(min(size, 1 << 24) or 1)
        with memoryview(buffer) as view:
            while read := f.readinto(buffer):
                crc = zlib.crc32(view[:read], crc)
    return [size, crc]


def write_header(folder: Path, name: str, header: dict) -> None:
    """`name` (JSON) with `header` and, for every other file of the folder, its fingerprint and
    modification time (ns), written last."""
    files = {p.name: fingerprint(p) + [p.stat().st_mtime_ns] for p in sorted(folder.iterdir())
             if p.name != name and p.is_file()}
    write_text(folder / name, json.dumps(header | {"files": files}, ensure_ascii=False))


def read_header(folder: Path, name: str, fmt: str, files: Iterable[str], what: str, fix: str) -> dict:
    """The header of a folder written with write_header, after checking it is `fmt`, lists `files`
    and that each is as it was written; `what` the folder is, `fix` how to get a good one."""
    path = Path(folder) / name
    if not path.is_file():
        raise DataError(f"{folder}: not a saved {what} (no {name} with format {fmt}); {fix}")
    header = read_json(path, fix)
    if not isinstance(header, dict) or header.get("format") != fmt or not isinstance(header.get("files"), dict):
        raise DataError(f"{path}: not a saved {what} (not format {fmt}: an older version, or damaged); {fix}")
    if sorted(header["files"]) != sorted(files):
        raise DataError(f"{path}: lists the files {sorted(header['files'])}, not {sorted(files)} (damaged); {fix}")
    for file, written in header["files"].items():
        if not (isinstance(written, list) and len(written) in (2, 3) and all(type(x) is int for x in written)):
            raise DataError(f"{path}: the entry of {file} is not [size, CRC-32, time] (damaged); {fix}")
        actual = unchanged_or_fingerprint(path.parent / file, written)
        if actual != written[:2]:
            state = "missing" if actual is None else "truncated" if actual[0] < written[0] else "changed"
            raise DataError(f"{path.parent / file}: {state} since it was saved (size and CRC-32 {actual}, "
                            f"written as {written}); {fix}")
    return header


def unchanged_or_fingerprint(path: Path, written: list) -> list[int] | None:
    """`written`'s [size, CRC-32] for a large file whose size and time are still as written; else the
    file's own fingerprint (None if it is missing)."""
    if not path.is_file():
        return None
    stat = path.stat()
    recorded_time = written[2] if len(written) == 3 else None
    if stat.st_size >= REREAD_ABOVE and [stat.st_size, stat.st_mtime_ns] == [written[0], recorded_time]:
        return written[:2]
    return fingerprint(path)


def read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable JSON ({e}); {fix}") from None


def load_array(path: Path, fix: str, mmap: bool = True, ndim: int = 1) -> np.ndarray:
    """A saved integer array of `ndim` dimensions (memory-mapped by default), or a DataError naming the file."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError) as e:  # what np.load makes of a bad header
        raise DataError(f"{path}: not a readable .npy array ({e}); {fix}") from None
    if array.ndim != ndim or array.dtype.kind not in "iu":
        raise DataError(f"{path}: a {array.ndim}-d {array.dtype} array, not a {ndim}-d integer one; {fix}")
    return np.asarray(array)  # a plain ndarray view of the map: indexing a np.memmap costs ~10x more per call
