"""Folders of arrays as the KB columns and the key trie are saved: a small JSON header that names
the format and the size and CRC-32 of every file beside it, read back checked.

A truncated, emptied, overwritten or foreign file is then a DataError that names it and says how
to get a good one, never a numpy or JSON traceback and never a trie walking garbage. The price:
a load reads every byte once (~1 GB/s), where the memory maps alone would read only what is used.
"""
from __future__ import annotations

import json
import mmap
import os
import tokenize
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from kgqa.errors import DataError
from kgqa.files import write_text

REBUILD = "rebuild it with kgqa-kb (out=DIR, or action=merge kb_dir=DIR for a KB folder)"


def fingerprint(path: Path) -> list[int]:
    """[size, CRC-32] of a file, memory-mapped and read in chunks (no copy: a GB of columns checks in about a second)."""
    crc = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
                for start in range(0, size, 1 << 24):
                    crc = zlib.crc32(view[start : start + (1 << 24)], crc)
    return [size, crc]


def write_header(folder: Path, name: str, header: dict) -> None:
    """`name` (JSON) with `header` and the fingerprint of every other file of the folder, written last."""
    files = {p.name: fingerprint(p) for p in sorted(folder.iterdir()) if p.name != name and p.is_file()}
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
        actual = fingerprint(path.parent / file) if (path.parent / file).is_file() else None
        if actual != written:
            state = "missing" if actual is None else "truncated" if actual[0] < written[0] else "changed"
            raise DataError(f"{path.parent / file}: {state} since it was saved (size and CRC-32 {actual}, "
                            f"written as {written}); {fix}")
    return header


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
