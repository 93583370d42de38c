"""Reload on save: a QFileSystemWatcher that survives editors' atomic saves, with a debounce.

Editors save in different ways: in place (one or several change events), or by writing a temporary
file and renaming it over the original (the watched inode disappears, and QFileSystemWatcher drops
the path). Both end up here as one ``changed`` signal, emitted once the file has been quiet for
``debounce_ms``; a path that vanished is re-added as soon as it exists again.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, Signal


class QtFileWatcher(QObject):
    changed = Signal(str)  # the watched path, after it settled

    def __init__(self, parent: QObject | None = None, debounce_ms: int = 300):
        super().__init__(parent)
        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_event)
        self._path: str | None = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(debounce_ms)
        self._debounce.timeout.connect(self._fire)
        self._readd = QTimer(self)  # waits for a path removed by an atomic save to come back
        self._readd.setInterval(100)
        self._readd.timeout.connect(self._try_readd)
        self._readd_tries = 0

    @property
    def path(self) -> str | None:
        return self._path

    def watch(self, path: str | os.PathLike | None) -> None:
        """Watch ``path`` (one file); ``None`` stops watching."""
        self.unwatch()
        if path is None:
            return
        self._path = os.path.abspath(os.fspath(path))
        if os.path.exists(self._path):
            self._watcher.addPath(self._path)
        else:
            self._start_readd()

    def unwatch(self) -> None:
        files = self._watcher.files()
        if files:
            self._watcher.removePaths(files)
        self._path = None
        self._debounce.stop()
        self._readd.stop()

    # ---------------------------------------------------------------- events

    def _on_event(self, path: str) -> None:
        if self._path is None:
            return
        if self._path not in self._watcher.files():  # replaced or deleted: re-add when back
            self._start_readd()
        self._debounce.start()

    def _start_readd(self) -> None:
        self._readd_tries = 0
        self._readd.start()

    def _try_readd(self) -> None:
        if self._path is None:
            self._readd.stop()
            return
        self._readd_tries += 1
        if os.path.exists(self._path):
            if self._path not in self._watcher.files():
                self._watcher.addPath(self._path)
            self._readd.stop()
            self._debounce.start()  # the new file is the saved one
        elif self._readd_tries > 600:  # a minute: the file is gone; keep the last graph
            self._readd.stop()

    def _fire(self) -> None:
        if self._path is not None and os.path.exists(self._path):
            self.changed.emit(self._path)
