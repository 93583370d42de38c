"""When to read a followed run directory: file watching plus a polling timer (Qt side).

:class:`QtRunWatch` polls a headless :class:`~resviz.gui.training.follow.RunFollower` on the UI thread:
at once when ``QFileSystemWatcher`` says ``steps.jsonl`` or ``run.json`` changed, and every
:data:`POLL_MS` besides, because change notifications do not arrive for a folder on shared or
network storage written by another machine (NFS, SMB, sshfs). Each poll reads only the bytes
appended since the last one and at most ``run_follow.POLL_BYTES`` of them; when more is waiting it
polls again on the next turn of the event loop, so a burst is filed in slices and the UI never
waits long.
"""

from __future__ import annotations

from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, Signal

from .follow import RunFollower

POLL_MS = 1000  # the fallback for file systems that send no change notifications
SOON_MS = 30  # a change notification is followed by a poll this soon (bursts coalesce)


class QtRunWatch(QObject):
    """Polls ``follower`` when its files change and on a timer; ``updated(n)`` after new records."""

    updated = Signal(int)  # records filed by the last poll (0: only run.json changed)

    def __init__(self, follower: RunFollower, parent: QObject | None = None, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self.follower = follower
        self.polls = 0
        self._state = follower.state
        self._version = follower.store.version
        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._soon)
        self._watcher.directoryChanged.connect(self._on_dir)
        self._watch_files()
        self._timer = QTimer(self)
        self._timer.setInterval(int(poll_ms))
        self._timer.timeout.connect(self.poll)
        self._timer.start()
        self._soon_timer = QTimer(self)
        self._soon_timer.setSingleShot(True)
        self._soon_timer.setInterval(SOON_MS)
        self._soon_timer.timeout.connect(self.poll)
        self._more = QTimer(self)  # more is waiting: the next slice on the next event-loop turn
        self._more.setSingleShot(True)
        self._more.setInterval(0)
        self._more.timeout.connect(self.poll)

    def _watch_files(self) -> None:
        f = self.follower
        paths = [str(p) for p in (f.path, f.reader.path, f.path / "run.json") if p.exists()]
        missing = [p for p in paths if p not in self._watcher.files() + self._watcher.directories()]
        if missing:
            self._watcher.addPaths(missing)

    def _on_dir(self, _path: str) -> None:
        self._watch_files()  # steps.jsonl created, or run.json replaced (a new inode to watch)
        self._soon()

    def _soon(self, _path: str = "") -> None:
        if not self._soon_timer.isActive():
            self._soon_timer.start()

    def poll(self) -> int:
        """Read what was appended now; returns the number of new records."""
        f = self.follower
        self.polls += 1
        try:
            n = f.poll()
        except Exception:  # noqa: BLE001 - an unreadable file for a moment (shared storage): next time
            return 0
        state, version = f.state, f.store.version
        if n or state is not self._state or version != self._version:
            self._state, self._version = state, version
            self.updated.emit(n)
        if f.behind:
            self._more.start()
        return n

    def stop(self) -> None:
        self._timer.stop()
        self._soon_timer.stop()
        self._more.stop()
        paths = self._watcher.files() + self._watcher.directories()
        if paths:
            self._watcher.removePaths(paths)
