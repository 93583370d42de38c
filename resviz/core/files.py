"""Reading and saving files safely: never blocking on a special file, never reading without
bound, never leaving a half-written file where a good one was.

Everything resviz writes (exports, reports, run records) goes to a temporary file in the target's
folder, is flushed to disk, given the permissions a normal ``open()`` would give (``mkstemp``
creates files readable by the owner only), and then moved over the target in one step. A target
that is a symbolic link is written through: the file it points to is replaced, the link stays. A
target that is not a regular file (``/dev/stdout``, a pipe, a terminal) cannot be replaced and is
written directly. :func:`check_output` says up front, before any work, whether a target can be
written at all.
"""

from __future__ import annotations

import os
import stat
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


_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-directory file is, in words ('a named pipe (FIFO)'); else None."""
    return next((what for test, what in _SPECIAL if test(mode)), None)


def check_readable_file(path: str | os.PathLike, name: str | None = None) -> None:
    """Raise :class:`ResvizError` unless ``path`` (links followed) is a regular file: opening a
    FIFO waits forever for a writer, and /dev/zero or /dev/urandom never end."""
    name = name or str(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the caller's own open() says so in its words
    what = special_kind(mode)
    if what is not None:
        via = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise ResvizError(
            f"{name} is {what}{via}, not a regular file; resviz reads models, specs and data only "
            "from regular files."
        )


def read_bounded(path: str | os.PathLike, limit: int, what: str, name: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, refusing one larger than ``limit`` bytes."""
    name = name or str(path)
    check_readable_file(path, name)
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ResvizError(
            f"{name} is larger than {_size(limit)}, the limit for {what}; is it the right file?"
        )
    return data


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def human_bytes(n: float) -> str:
    """``1.5e9`` → ``'1.4 GiB'``."""
    return _size(int(n))


def _is_special(path: Path) -> bool:
    """Whether ``path`` exists and is something a rename cannot replace (/dev/stdout, a pipe)."""
    try:
        return special_kind(os.stat(path).st_mode) is not None
    except OSError:
        return False


def check_output(path: str | os.PathLike, what: str = "output") -> Path:
    """Say now, before any work, whether ``path`` can be written: not a directory, its folder
    exists and is writable. Returns the path written in the end (links resolved)."""
    given = Path(path)
    if str(path).endswith(("/", os.sep)) or (given.is_dir() and not given.is_symlink()):
        raise ResvizError(f"cannot write the {what} to {path}: it is a directory; give a file name")
    if _is_special(given):
        return given
    real = Path(os.path.realpath(given))
    if real.is_dir():
        raise ResvizError(f"cannot write the {what} to {path}: it links to the directory {real}")
    folder = real.parent
    if not folder.is_dir():
        raise ResvizError(f"cannot write the {what} to {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ResvizError(f"cannot write the {what} to {path}: the folder {folder} is not writable")
    if real.exists() and not os.access(real, os.W_OK):
        raise ResvizError(f"cannot write the {what} to {path}: the file is read-only")
    return real


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (so the final move is atomic): (fd, name)."""
    if path.is_dir():
        raise ResvizError(f"cannot write {path}: it is a directory; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ResvizError(f"cannot write {path}: the folder {folder} does not exist")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise ResvizError(f"cannot write {path}: {e.strerror or e}") from None


def _replace(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise ResvizError(f"cannot write {path}: {e.strerror or e}") from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces ``path`` (the file a link at
    ``path`` points to), on error it vanishes. A special file is yielded itself, to write directly."""
    path = Path(path)
    if _is_special(path):
        yield str(path)
        return
    path = Path(os.path.realpath(path))
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        yield tmp
        if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
            raise ResvizError(f"could not write {path}: nothing was produced")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode(path))
        _replace(tmp, path)
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
        self.tmp: str | None = None
        if _is_special(self.path):  # /dev/stdout, a pipe: nothing to replace, write straight in
            try:
                self.file = open(self.path, "w", encoding="utf-8", newline="")
            except OSError as e:
                raise ResvizError(f"cannot write {self.path}: {e.strerror or e}") from None
            return
        self._target = Path(os.path.realpath(self.path))  # through a link, to the file it names
        fd, self.tmp = _temp_beside(self._target)
        self.file = open(fd, "w", encoding="utf-8", newline="")

    def commit(self) -> Path:
        if self.file.closed:
            return self.path
        self.file.flush()
        if self.tmp is None:
            self.file.close()
            return self.path
        try:
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp, default_mode(self._target))
            _replace(self.tmp, self._target)
        finally:
            self._unlink_tmp()
        return self.path

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self._unlink_tmp()

    def _unlink_tmp(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
