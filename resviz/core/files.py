"""Saving files without ever leaving a half-written one where a good one was.

Everything resviz writes (exports, reports, run records) goes to a temporary file in the target's
folder, is flushed to disk, given the permissions a normal ``open()`` would give (``mkstemp``
creates files readable by the owner only), and then moved over the target in one step.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ResvizError


def default_mode(path: Path) -> int:
    """The permissions a file written at ``path`` should get."""
    try:
        return os.stat(path).st_mode & 0o777  # keep an existing file's permissions
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (so the final move is atomic): (fd, name)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ResvizError(f"cannot write {path}: the folder {folder} does not exist")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise ResvizError(f"cannot write {path}: {e.strerror or e}") from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it vanishes."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield tmp
        if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
            raise ResvizError(f"could not write {path}: nothing was produced")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the result over ``path`` in one step."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class AtomicTextFile:
    """A text file streamed under a temporary name and moved into place on :meth:`commit`
    (run records are written step by step, so a whole-content writer does not fit)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fd, self.tmp = _temp_beside(self.path)
        self.file = open(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> Path:
        if self.file.closed:
            return self.path
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.chmod(self.tmp, default_mode(self.path))
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass
