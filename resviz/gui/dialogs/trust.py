"""Asking before a file is unpickled: the app's counterpart of the command line's ``--trust``.

A whole pickled model (``torch.save(model)``) or an archive part that is a pickle can only be
opened by unpickling it, and unpickling runs whatever code the file names. The app never does it
on its own: the load error offers "Trust this file…", which warns in plain words and reloads with
trust only when the user confirms, for that file and this session only.
"""

from __future__ import annotations

import os

from PySide6.QtWidgets import QAbstractButton, QMessageBox, QWidget

TRUST_ACTION = "Trust this file…"


def warning_text(path: str) -> str:
    return (
        f"Opening {os.path.basename(path)} means unpickling it, and unpickling runs any code the "
        "file contains, with your permissions: it could read, change or delete your files.\n\n"
        "Only trust files you made yourself or got from someone you trust.\n\n"
        f"{path} stays trusted until you quit resviz; it is not remembered after that."
    )


def trust_box(parent: QWidget | None, path: str) -> tuple[QMessageBox, QAbstractButton]:
    """The warning, with Cancel as the default and a button that says what it does."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Trust this file?", warning_text(path),
                      QMessageBox.StandardButton.Cancel, parent)  # fmt: skip
    trust = box.addButton("Trust and open", QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setEscapeButton(QMessageBox.StandardButton.Cancel)
    return box, trust


def confirm_trust(parent: QWidget | None, path: str) -> bool:
    """Warn about running the file's code; True only when the user chose to trust it."""
    box, trust = trust_box(parent, path)
    box.exec()
    return box.clickedButton() is trust
