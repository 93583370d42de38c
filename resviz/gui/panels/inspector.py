"""The Inspector tab: everything known about the selected node.

For a layer: qualified name, type, hyper-parameters, input and output shapes, parameters, MACs and
where its class is defined. For a block: the layers it holds, its shortcut and, when broken, the
mismatch. The source location is looked up lazily (``inspect`` reads files) after the rest is
shown, once per class.
"""

from __future__ import annotations

import html
import inspect
from collections import Counter

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtWidgets import QTextBrowser, QWidget

from ...core.analysis.describe import hyperparams
from ...render.text import human, verdict
from ...render.view import shape_label

_SOURCE_CACHE: dict[type, str] = {}


def class_source(cls: type) -> str:
    """``file.py:123`` where ``cls`` is defined, or '' (builtins, C extensions, lost files)."""
    if isinstance(cls, str):  # a module traced in a child process: looked up there (PlainModule)
        return cls
    if cls in _SOURCE_CACHE:
        return _SOURCE_CACHE[cls]
    text = ""
    try:
        path = inspect.getsourcefile(cls)
        if path:
            _, line = inspect.getsourcelines(cls)
            text = f"{path}:{line}"
    except (TypeError, OSError, IndexError, AttributeError, ValueError, SyntaxError):
        # builtins and C classes (TypeError), lost files (OSError), a file edited since into
        # something Python cannot parse (SyntaxError): no place to show, the rest of the page stays
        text = ""
    _SOURCE_CACHE[cls] = text
    return text


class QtInspector(QTextBrowser):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.node = None
        self._report = None
        self._source_for: type | str | None = None
        self._source_text = ""
        self.clear_node()

    # ---------------------------------------------------------------- public

    def set_report(self, report) -> None:
        self._report = report
        self.clear_node()

    def clear_node(self) -> None:
        """Nothing selected: an overview of the model, and how to get details."""
        self.node = None
        r = self._report
        if r is None:
            self.setHtml("<p style='color:gray'>No model loaded.</p>")
            return
        nm, ne = len(r.mismatches), len(r.errors)
        status = f"<span style='color:#16a34a'>✓ {_e(verdict(r))}</span>"
        if nm or ne or not r.complete:
            parts = [f"{nm} shortcut mismatch{'es' if nm != 1 else ''}"] if nm else []
            parts += [f"{ne} shape error{'s' if ne != 1 else ''}"] if ne else []
            parts += [] if r.complete else ["trace incomplete"]
            status = f"<span style='color:#dc2626'><b>{', '.join(parts)}</b> (see Issues)</span>"
        kinds = Counter(b.shortcut for b in r.blocks)
        rows = [
            (
                "input",
                _e(shape_label(r.input_shape)) + f" (batch {r.input_shape[0]})" if r.input_shape else "?",
            ),
            ("output", _e(", ".join(shape_label(s) for s in r.output_shapes) or "—")),
            ("params", f"{r.total_params:,} ({human(r.total_params)})"),
            ("MACs", _macs(r.macs)),
            ("stages", str(len(r.stages))),
            (
                "blocks",
                f"{len(r.blocks)}"
                + (" — " + ", ".join(f"{c} {k}" for k, c in kinds.items()) if kinds else ""),
            ),
            ("status", status),
        ]
        table = "".join(
            f"<tr><td style='color:gray; padding-right:10px'>{k}</td><td>{v}</td></tr>" for k, v in rows
        )
        self.setHtml(
            f"<h3 style='margin-bottom:2px'>{_e(r.model_name)}</h3><table style='margin-top:6px'>{table}</table>"
            "<p style='color:gray'>Click a node for its details; double-click a block to open or close it.</p>"
        )

    def show_node(self, node) -> None:
        """Fill in ``node`` (a ViewNode of the current report); None clears."""
        if node is None or self._report is None:
            self.clear_node()
            return
        self.node = node
        self._source_for = self._class_of(node)
        self._source_text = _SOURCE_CACHE.get(self._source_for, "…") if self._source_for else ""
        self._render()
        if self._source_for is not None and self._source_for not in _SOURCE_CACHE:
            QTimer.singleShot(0, self._fill_source)

    def text(self) -> str:
        return self.toPlainText()

    # ---------------------------------------------------------------- content

    def _class_of(self, node) -> type | str | None:
        r = self._report
        module = None
        if node.call is not None and 0 <= node.call < len(r.calls):
            module = r.modules.of(r.calls[node.call])
        elif node.ops:
            module = r.modules.of(r.ops[node.ops[0]])
        if module is None:
            return None
        from ...core.session.isolation import PlainModule

        return module.class_source if isinstance(module, PlainModule) else type(module)

    def _fill_source(self) -> None:
        cls = self._source_for
        if cls is None:
            return
        self._source_text = class_source(cls)
        if self._source_for is cls and self.node is not None:
            self._render()

    def _render(self) -> None:
        n = self.node
        rows: list[tuple[str, str]] = [("type", _e(n.type))]
        body: list[str] = []
        if n.kind in ("block", "rollup", "module"):
            rows += self._block_rows(n, body)
        else:
            rows += self._op_rows(n)
        rows += [("params", f"{n.params:,}" if n.params else "0"), ("MACs", _macs(n.macs))]
        if self._source_for is not None:
            src = self._source_text
            if src and src != "…":
                path, _, line = src.rpartition(":")
                url = QUrl.fromLocalFile(path).toString()
                rows.append(("class source", f"<a href='{_e(url)}'>{_e(src)}</a>"))
            else:
                rows.append(("class source", "…" if src == "…" else "<i>not available</i>"))
        if n.error:
            body.insert(0, f"<p style='color:#dc2626'><b>{_e(n.error)}</b></p>")
        table = "".join(
            f"<tr><td style='color:gray; padding-right:10px'>{k}</td><td>{v}</td></tr>" for k, v in rows
        )
        self.setHtml(
            f"<h3 style='margin-bottom:2px'>{_e(n.label)}</h3>"
            + (f"<div style='color:gray'>{_e(n.name)}</div>" if n.name != n.label else "")
            + f"<table style='margin-top:6px'>{table}</table>{''.join(body)}"
        )

    def _op_rows(self, n) -> list[tuple[str, str]]:
        r = self._report
        op = r.ops[n.ops[0]]
        rows = []
        params = hyperparams(op, r.modules)
        if params:
            text = "<br>".join(f"{_e(k)} = {_e(_fmt(v))}" for k, v in params.items())
            rows.append(("hyper-parameters", text))
        ins = [shape_label(r.values[v].shape) for v in op.inputs]
        outs = [shape_label(r.values[v].shape) for v in op.outputs]
        batch = f" (batch {r.input_shape[0]})" if r.input_shape else ""
        rows.append(("input", _e(", ".join(ins) or "—") + batch))
        rows.append(("output", _e(", ".join(outs) or "—")))
        if op.source:
            rows.append(("called at", _e(f"{op.source[0]}:{op.source[1]}")))
        return rows

    def _block_rows(self, n, body: list[str]) -> list[tuple[str, str]]:
        r = self._report
        rows = [("input", _e(shape_label(n.in_shape))), ("output", _e(shape_label(n.out_shape)))]
        if n.kind == "rollup":
            rows.insert(0, ("repeats", f"{n.repeat} identical blocks"))
        block = r.block(n.name)
        call = r.calls[n.call] if n.call is not None else None
        if call is not None:
            ops = r.ops[call.first_op : call.last_op + 1]
            counts = Counter(o.type for o in ops if o.kind in ("module", "function"))
            summary = ", ".join(f"{c}× {t}" if c > 1 else t for t, c in counts.items())
            rows.append(("layers", _e(summary) or "—"))
        if block is not None:
            details = "; ".join(r.residual_adds[i].detail for i in block.adds if r.residual_adds[i].detail)
            rows.append(
                ("shortcut", f"<b>{_e(block.shortcut)}</b>" + (f" — {_e(details)}" if details else ""))
            )
            if block.stage:
                rows.append(("stage", _e(block.stage)))
            for m in r.mismatches:
                if m.block == block.name:
                    body.append(
                        "<p style='color:#dc2626'><b>Shortcut mismatch:</b> residual "
                        f"{_e(shape_label(m.residual_shape))} ≠ shortcut {_e(shape_label(m.shortcut_shape))}"
                        f"<br>{_e(m.cause)}</p><pre>{_e(m.fix)}</pre>"
                    )
        elif call is not None:
            blocks = [b for b in r.blocks if b.stage == n.name]
            if blocks:
                rows.append(("blocks", str(len(blocks))))
        return rows

    def _open_link(self, url: QUrl) -> None:
        from PySide6.QtGui import QDesktopServices

        QDesktopServices.openUrl(url)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v) -> str:
    if isinstance(v, list):
        return "×".join(map(str, v)) if len(set(v)) > 1 else str(v[0]) if v else "[]"
    return str(v)


def _macs(m: int) -> str:
    return f"{human(m)} ({m:,})" if m >= 1000 else str(m)
