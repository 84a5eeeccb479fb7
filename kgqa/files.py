"""Writing outputs safely: never half a file, never over the file being read.

Every output goes to a temporary file beside its place and is renamed over it, so a reader (or
a crash) sees the old file or the new one, never a mix. An output that is one of the command's
inputs is refused before any work starts.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from kgqa.errors import ConfigError


def shared_mode(mode: int) -> int:
    """`mode` less the umask, as open() and mkdir() give it: mkstemp and mkdtemp make 0600 files and 0700
    folders, which a group sharing a cluster project could not read. (Read by setting it: meanwhile the
    strictest, so a file another thread makes then is never more open than it would be.)"""
    umask = os.umask(0o077)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it is flushed to disk and renamed to
    `path`, on an exception it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(fd, shared_mode(0o666))
        with open(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as f:
        f.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path, "wb") as f:
        f.write(data)


def swap_in_folder(target: Path, write: Callable[[Path], None]) -> None:
    """write(folder) into a new folder beside `target`, then swap it in: a reader never sees half of one,
    and a failed write leaves `target` as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fresh.chmod(shared_mode(0o777))
        write(fresh)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    stale = fresh.with_name(fresh.name + ".old")
    if target.exists():
        target.rename(stale)
    fresh.rename(target)
    shutil.rmtree(stale, ignore_errors=True)


def same_or_inside(output: str | Path, source: str | Path) -> bool:
    """True when writing `output` (a file or a folder) could overwrite `source`: the same file
    (links and relative paths resolved), or a folder that holds it."""
    out, src = Path(output).resolve(), Path(source).resolve()
    if out == src or (out.exists() and src.exists() and os.path.samefile(out, src)):
        return True
    return out in src.parents


def refuse_overwrite(output: str | Path | None, *inputs: str | Path | None, what: str = "output") -> None:
    """A ConfigError when an output would overwrite one of the inputs it is made from."""
    if output is None:
        return
    for source in inputs:
        if source is not None and same_or_inside(output, source):
            raise ConfigError(f"{what}={output} would overwrite the input {source}: choose another {what}")
