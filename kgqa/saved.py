"""Folders of arrays as the KB columns and the key trie are saved: a small JSON header that names
the format and the size of every file beside it, read back checked.

A truncated, emptied, appended-to or foreign file is then a DataError that names it and says how
to get a good one, never a numpy or JSON traceback and never a trie walking garbage. (Bytes
changed in place, same size, are not caught: that would mean reading every byte at each load.)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kgqa.errors import DataError
from kgqa.files import write_text

REBUILD = "rebuild it with kgqa-kb (out=DIR, or action=merge kb_dir=DIR for a KB folder)"


def write_header(folder: Path, name: str, header: dict) -> None:
    """`name` (JSON) with `header` and the size of every other file of the folder, written last."""
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.name != name and p.is_file()}
    write_text(folder / name, json.dumps(header | {"files": sizes}, ensure_ascii=False))


def read_header(folder: Path, name: str, fmt: str, what: str, fix: str) -> dict:
    """The header of a folder written with write_header, after checking it is `fmt` and that every
    file it lists has its size; `what` the folder is, `fix` how to get a good one."""
    path = Path(folder) / name
    if not path.is_file():
        raise DataError(f"{folder}: not a saved {what} (no {name} with format {fmt}); {fix}")
    header = read_json(path, fix)
    if not isinstance(header, dict) or header.get("format") != fmt or not isinstance(header.get("files"), dict):
        raise DataError(f"{path}: not a saved {what} (not format {fmt}: an older version, or damaged); {fix}")
    for file, size in header["files"].items():
        actual = (path.parent / file).stat().st_size if (path.parent / file).is_file() else None
        if actual != size:
            state = "missing" if actual is None else f"{actual} bytes, written as {size}"
            raise DataError(f"{path.parent / file}: {state} (truncated or changed since it was saved); {fix}")
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
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e}); {fix}") from None
    if array.ndim != ndim or array.dtype.kind not in "iu":
        raise DataError(f"{path}: a {array.ndim}-d {array.dtype} array, not a {ndim}-d integer one; {fix}")
    return np.asarray(array)  # a plain ndarray view of the map: indexing a np.memmap costs ~10x more per call
