"""Plain records written by the tracers (through ``builder.TraceBuilder``) and the analysis passes.

They hold numbers and strings only, so the renderer, the GUI and the JSON report can read them
without knowing anything about tracing. A record names its module by qualified path; the module
itself (for hyper-parameters, the Inspector's class source, a fix's definition site) is asked of the
trace's one :class:`ModuleIndex` (``trace.modules`` / ``report.module(path)``), never kept per record. The
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
    # parameters of the module not counted by any op inside it (its own gamma, a fused norm's
    # affine, a child's weight read directly): counted once, at the module's first call
    params: int = 0
    macs: int = 0  # of the weight and bias the module applies itself (a fused norm's affine)


class ModuleIndex:
    """The modules of one trace by qualified path: what ``report.module(path)`` answers.

    One object per trace, not one reference per record. It looks a path up on demand in

    * stand-ins: path → an object that reads like the module (its hyper-parameters as attributes):
      what the TorchScript and torch.export front-ends recover of a layer (``layers``, by module
      op), a :class:`~resviz.core.tracing.plain_module.PlainModule` per module op and call for a
      report that crossed a process boundary or was read back from a run directory (:meth:`plain`);
    * ``root``: the traced model itself (an eager ``nn.Module`` or a ScriptModule), walked along
      ``_modules`` as the tracers walked it, for a path without a stand-in. ``None`` once the
      report holds no live module.

    Costs nothing per layer at trace time: building it stores one reference. A module op and the
    call of the same path (a model that is one layer) keep their own stand-ins.
    """

    __slots__ = ("root", "layers", "calls", "_walked")

    def __init__(self, root: Any = None, layers: dict[str, Any] | None = None,
                 calls: dict[str, Any] | None = None):  # fmt: skip
        self.root = root
        self.layers: dict[str, Any] = layers if layers is not None else {}
        self.calls: dict[str, Any] = calls if calls is not None else {}
        self._walked: dict[str, Any] = {}  # path -> what the walk found: a redraw asks every layer

    def get(self, path: str) -> Any:
        """The module (or its stand-in) at ``path`` ('' is the model), or None."""
        m = self.layers.get(path)
        if m is None:
            m = self.calls.get(path)
        return self._walk(path) if m is None else m

    def of(self, record: Op | Call) -> Any:
        """The module of a module op or a call; None for any other op (a functional op's name may
        equal a module's path: ``layer1.0.relu`` from ``F.relu`` beside a ``self.relu``)."""
        if isinstance(record, Call):
            m = self.calls.get(record.path)
            return self._walk(record.path) if m is None else m
        if record.kind != "module":
            return None
        m = self.layers.get(record.name)
        return self._walk(record.name) if m is None else m

    def _walk(self, path: str) -> Any:
        m = self._walked.get(path)
        if m is not None or self.root is None:
            return m
        m = self.root
        for part in path.split(".") if path else ():
            try:
                m = m._modules[part]
            except (AttributeError, KeyError, TypeError):  # not a module, or no such child
                return None
            if m is None:
                return None
        self._walked[path] = m
        return m

    def plain(self, ops: list[Op], calls: list[Call], convert) -> ModuleIndex:
        """An index holding no live module: the module of every module op and call as
        ``convert(module)`` (a :class:`~resviz.core.tracing.plain_module.PlainModule`), by path. A
        module reached by two paths is converted once."""
        converted: dict[int, Any] = {}  # the modules stay alive in self: ids are not reused

        def plain_of(m):
            key = id(m)
            if key not in converted:
                converted[key] = convert(m)
            return converted[key]

        index = ModuleIndex()
        for records, table in ((ops, index.layers), (calls, index.calls)):
            for rec in records:
                path = rec.path if isinstance(rec, Call) else rec.name
                if path in table:
                    continue
                m = self.of(rec)
                p = None if m is None else plain_of(m)
                if p is not None:
                    table[path] = p
        return index

    def __reduce__(self):
        return ModuleIndex, (self.root, self.layers, self.calls)

    def __repr__(self) -> str:
        root = "no live model" if self.root is None else f"root {type(self.root).__name__}"
        return f"<ModuleIndex {root}, {len(self.layers) + len(self.calls)} stand-ins>"


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
    modules: ModuleIndex = field(default_factory=ModuleIndex)  # the traced modules by path

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
