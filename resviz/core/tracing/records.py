"""Plain records written by the tracers (through ``builder.TraceBuilder``) and the analysis passes.

They hold numbers and strings only (plus a reference to the traced module where one exists), so the
renderer, the GUI and the JSON report can read them without knowing anything about tracing. The
split follows torchinfo's ``LayerInfo`` and torch.fx's ``node.meta``: passes write records,
formatting lives elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: records are read where torch is not imported (drawing a run)
    from ..inputs import Input

Shape = tuple[int, ...]


@dataclass(slots=True)
class Value:
    """One tensor flowing through the model (an edge of the data-flow graph)."""

    id: int
    shape: Shape
    dtype: str
    producer: int | None  # id of the Op that made it; None for constants created inside forward


@dataclass(slots=True)
class Op:
    """A node of the data-flow graph: a leaf-module call or a functional op (add, cat, flatten...)."""

    id: int
    kind: str  # 'input' | 'module' | 'function' | 'output'
    name: str  # qualified: 'layer1.0.conv1' for modules, 'layer1.0.add' for functions
    type: str  # 'Conv2d', 'add', 'flatten', ...
    scope: int  # id of the innermost non-leaf Call that made this op (0 is the model itself)
    inputs: list[int]  # Value ids, in argument order
    outputs: list[int]  # Value ids
    params: int = 0  # parameters owned by this module (counted once per module, not per call)
    macs: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)  # hyper-parameters: kernel, stride, ...
    call_index: int = 0  # >0 when the same module is called again (torchvision's shared `relu`)
    source: tuple[str, int] | None = None  # file and line that made the call, when known
    module: Any = None  # the traced (original) nn.Module for module ops; read only

    @property
    def path(self) -> str:
        """The module path of a module op; for a functional op, the module that called it."""
        return self.name


@dataclass(slots=True)
class Call:
    """One call of a non-leaf module (model, stage, block, container): the grouping skeleton."""

    id: int
    path: str  # '' for the model itself
    type: str  # class name
    parent: int | None
    inputs: list[int]
    outputs: list[int] = field(default_factory=list)
    first_op: int = 0  # ops with ids in [first_op, last_op] happened during this call
    last_op: int = -1
    source: tuple[str, int] | None = None  # where the module's class is defined
    module: Any = None
    # parameters of the module not counted by any op inside it (its own gamma, a fused norm's
    # affine, a child's weight read directly): counted once, at the module's first call
    params: int = 0
    macs: int = 0  # of the weight and bias the module applies itself (a fused norm's affine)


@dataclass(slots=True)
class ShapeError:
    """Any other failure to compute a shape: wrong in_features, too few channels, a failing op."""

    module: str  # qualified name of the module or op
    op: int | None
    type: str
    message: str
    input_shapes: list[Shape] = field(default_factory=list)
    fatal: bool = False  # tracing had to stop here
    suggestion: str = ""


@dataclass(slots=True, repr=False)
class Trace:
    """The recorded graph of one forward pass, as a tracer's
    :class:`~resviz.core.tracing.builder.TraceBuilder` finished it: plain records, no tracing state."""

    input_shape: Shape
    inputs: list[Input]  # every input, in call order
    dtype: Any  # the first input's torch dtype
    device: Any  # the torch device the trace ran on ('meta' unless asked otherwise)
    values: list[Value]
    ops: list[Op]
    calls: list[Call]
    errors: list[ShapeError]
    candidate_adds: list[int]  # add ops of two distinct traced tensors, for the residual analysis
    complete: bool  # the forward ran to the end
    output_values: list[int]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "stopped"
        return f"<Trace {len(self.ops)} ops, {len(self.calls)} calls, {len(self.errors)} errors, {state}>"


@dataclass(slots=True)
class ResidualAdd:
    """An add whose two operands both derive from one block input through different paths."""

    op: int  # the add Op
    block: str  # module path of the block (innermost module that owns the add)
    call: int  # the block's Call id
    fork: int  # Value where the two paths split (usually the block input)
    shortcut: int  # Value id of the shortcut operand
    residual: int  # Value id of the residual-branch operand
    shortcut_ops: list[int]  # ops between fork and shortcut operand, in order
    residual_ops: list[int]  # ops between fork and residual operand, in order
    kind: str  # 'identity' | 'projection' | 'zero-pad' | 'pool' | 'other'
    detail: str  # e.g. 'downsample: Conv2d 1x1 stride 2 + BatchNorm2d'
    shapes_match: bool = True
    source: tuple[str, int] | None = None
    ordinal: int = 0  # how many residual adds at the same source line came before, in this call
    # Which operand carries the intended shape past a mismatched add: 'residual' unless the rest of
    # the network shows that the residual branch is the broken path (then 'shortcut').
    intended: str = "residual"
    evidence: str = ""  # what showed it: the first layer after the add that the other shape breaks

    @property
    def intended_value(self) -> int:
        return self.shortcut if self.intended == "shortcut" else self.residual


@dataclass(slots=True)
class Mismatch:
    """A residual add whose two operands do not have equal shapes."""

    block: str
    add_op: int
    residual_shape: Shape
    shortcut_shape: Shape
    broadcastable: bool  # PyTorch would run it silently, broadcasting one operand
    cause: str
    fix: str
    culprits: list[str] = field(default_factory=list)  # module names held responsible
    input_sizes: list[int] = field(default_factory=list)  # square input sizes for which it works
    # Nets built from a spec (resviz.core.fixes.spec_edits): ``fix`` is then said as a spec edit, the
    # PyTorch code moves here, and the edits as plain dicts (field, value, delete, text).
    code_fix: str = ""
    spec_edits: list[dict] = field(default_factory=list)
    broken_path: str = "shortcut"  # the path the fix changes: 'shortcut' or 'residual'
    fix_title: str = ""  # one line saying what the fix does ("Give layer2.0 a projection shortcut")
    fix_where: str = ""  # where it goes: module path and, where known, file:line
    # the diagnosis's edits in their terse form (``path: nn.X(...)``, ``path: attr=value``, a bare
    # ``nn.Sequential(...)`` for the block's shortcut): what "Apply fix" applies (patch_fix.py)
    fix_edits: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Block:
    """A residual block (a module owning a residual add), or a repeated unit of a plain net."""

    name: str
    type: str
    call: int
    stage: str | None
    index: int  # position in the model, 0-based
    input_shape: Shape | None
    output_shape: Shape | None
    shortcut: str  # kind of its shortcut: 'identity', 'projection', ..., or 'none' in plain nets
    adds: list[int] = field(default_factory=list)  # indexes into Report.residual_adds
    params: int = 0
    macs: int = 0
    ops: list[int] = field(default_factory=list)
    broken: bool = False


@dataclass(slots=True)
class Stage:
    """A module whose children are blocks (torchvision's layer1..layer4)."""

    name: str
    type: str
    blocks: list[str]
    input_shape: Shape | None
    output_shape: Shape | None
