"""The :class:`Report`: everything resviz knows about one model at one input shape.

A plain record (no torch here): reports drawn from a run directory or sent by a child process are
read where torch is never imported. :func:`resviz.core.analysis.pipeline.analyze` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..shapes import human_shape
from ..tracing.records import (
    Block,
    Call,
    Mismatch,
    ModuleIndex,
    Op,
    ResidualAdd,
    ShapeError,
    Stage,
    Value,
)

if TYPE_CHECKING:  # a type only: Input's module imports torch
    from ..inputs import Input


@dataclass(repr=False)
class Report:
    """Everything resviz knows about one model at one input shape."""

    model_name: str
    input_shape: tuple[int, ...]
    values: list[Value]
    ops: list[Op]
    calls: list[Call]
    residual_adds: list[ResidualAdd]
    blocks: list[Block]
    stages: list[Stage]
    mismatches: list[Mismatch]
    errors: list[ShapeError]
    complete: bool
    total_params: int
    trainable_params: int
    output_shapes: list[tuple[int, ...]]
    seconds: float = 0.0
    suggested_sizes: list[int] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)  # every input, in call order
    # the traced modules by path: the live model in this process, plain stand-ins in a report from
    # a child process or a run directory (records name their module, they do not hold it)
    modules: ModuleIndex = field(default_factory=ModuleIndex)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.errors and self.complete

    def __repr__(self) -> str:
        # one line: the generated dataclass repr printed every op with its live module
        shape = human_shape(self.input_shape) if self.input_shape else "?"
        nb, nm, ne = len(self.blocks), len(self.mismatches), len(self.errors)
        parts = [f"{nb} block{'s' if nb != 1 else ''}",
                 f"{nm} mismatch{'es' if nm != 1 else ''}"]  # fmt: skip
        if ne:
            parts.append(f"{ne} error{'s' if ne != 1 else ''}")
        if not self.complete:
            parts.append("incomplete")
        return f"<Report {self.model_name} {shape}: {', '.join(parts)}, {'ok' if self.ok else 'not ok'}>"

    @cached_property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops) + sum(c.macs for c in self.calls)

    def block(self, name: str) -> Block | None:
        return next((b for b in self.blocks if b.name == name), None)

    def op_named(self, name: str) -> Op | None:
        return next((o for o in self.ops if o.name == name), None)

    def module(self, path: str):
        """The module at ``path`` ('' is the model): the live ``nn.Module`` of a model analysed in
        this process, a :class:`~resviz.core.tracing.plain_module.PlainModule` (class name, class
        source, hyper-parameters) for one analysed in a child process or read from a run
        directory, a layer's stand-in for an archive; None where there is none."""
        return self.modules.get(path)

    @cached_property
    def graph(self):
        """The data-flow graph as a networkx MultiDiGraph: op ids as nodes, tensors as edges."""
        from .dataflow import to_networkx

        return to_networkx(self)

    def to_dict(self) -> dict[str, Any]:
        """Exactly what ``resviz check --json`` prints."""
        return {
            "model": self.model_name,
            "ok": self.ok,
            "complete": self.complete,
            "input_shape": list(self.input_shape),
            "inputs": [i.to_dict() for i in self.inputs],
            "output_shapes": [list(s) for s in self.output_shapes],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "stages": [
                {
                    "name": s.name,
                    "type": s.type,
                    "blocks": list(s.blocks),
                    "input_shape": _list(s.input_shape),
                    "output_shape": _list(s.output_shape),
                }
                for s in self.stages
            ],
            "blocks": [
                {
                    "name": b.name,
                    "type": b.type,
                    "stage": b.stage,
                    "shortcut": b.shortcut,
                    "shortcut_detail": "; ".join(self.residual_adds[i].detail for i in b.adds),
                    "input_shape": _list(b.input_shape),
                    "output_shape": _list(b.output_shape),
                    "params": b.params,
                    "macs": b.macs,
                    "broken": b.broken,
                }
                for b in self.blocks
            ],
            "mismatches": [
                {
                    "block": m.block,
                    "residual_shape": list(m.residual_shape),
                    "shortcut_shape": list(m.shortcut_shape),
                    "broadcastable": m.broadcastable,
                    "cause": m.cause,
                    "fix": m.fix,
                    "culprits": list(m.culprits),
                    "input_sizes": list(m.input_sizes),
                    "code_fix": m.code_fix or m.fix,
                    "spec_edits": [dict(e) for e in m.spec_edits],
                    "broken_path": m.broken_path,
                    "fix_title": m.fix_title,
                    "fix_where": m.fix_where,
                }
                for m in self.mismatches
            ],
            "errors": [
                {
                    "module": e.module,
                    "type": e.type,
                    "message": e.message,
                    "input_shapes": [list(s) for s in e.input_shapes],
                    "fatal": e.fatal,
                    "suggestion": e.suggestion,
                }
                for e in self.errors
            ],
            "suggested_input_sizes": list(self.suggested_sizes),
        }


def _list(shape):
    return None if shape is None else list(shape)
