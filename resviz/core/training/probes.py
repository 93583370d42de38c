"""Per-block probes and the plain twin, by per-instance wrappers on a training copy.

Nothing global is patched. On the *training copy* only, each residual block's ``forward`` is
replaced by a :class:`BlockWatch` instance attribute (``nn.Module.__call__`` looks up
``self.forward``, so the class and every other instance are untouched). While the block runs,
the watch holds a thread-local ``TorchFunctionMode`` that sees the add calls (``out += identity``
arrives as ``Tensor.add_``, ``a + b`` as ``Tensor.add``) and picks the block's residual add:

* by its position among the adds made directly in the block's call (adds inside child modules are
  recognised by a ``Module._call_impl`` frame between the add and the watch, and skipped), checked
  against the operand shapes of the trace; or, when the trace recorded a source line inside the
  block's own code, by (source line, ordinal among adds at that line in the call);
* the shortcut is the operand at the position the trace found it (``ops[add.op].inputs``).

At the matched add the watch takes ``‖F(x)‖`` and ``‖x‖`` (before an in-place add mutates
``out``), or, for a plain twin, returns the residual operand alone. The mode costs ~10 µs per torch
call inside the block, so a probing watch uses it only to learn the block's *plan*: on the first
measured call it notes which direct child's output (a :class:`ChildTap` on each child sees them) or
the block's input each operand is, unchanged since; later calls take the norms there, without the
mode, and commit them when the children were called as in the learned call. Around the call it registers
tensor hooks on the block input and output; a hook registered before a later in-place change of
the tensor still receives the gradient of the version it was registered on, so ``x`` and ``H``
are measured correctly under ``ReLU(inplace=True)`` and ``out += identity``.

A residual operand that a BatchNorm layer returned in training (the residual branch of nearly
every ResNet block, and a projection shortcut) is not read: its norm follows from the layer's saved
per-channel statistics and its weight and bias (:class:`_BatchNormLater`), taken for all such
operands in one batch at the first gradient hook of the backward pass (CPU float32).

Norms are kept on the device as 0-d tensors and summed per slot with one ``index_add_``; the
trainer packs them with the loss and the parameter-gradient norms (``torch._foreach_norm``) into
one tensor and copies it to the host once per step.
"""

from __future__ import annotations

import copy
import copy as _copy
import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..tracing import shape_rules as rules
from .runreport import probe_blocks  # noqa: F401 - re-exported: its home needs no torch

_TORCH_DIR = os.path.dirname(torch.__file__)
_CORE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # resviz/core
_CALL_CODES = frozenset({nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__})
_ADD_FUNCS = rules.ADD_FUNCS

# probe slots per block, in the activation-norm vector
IN, OUT, RES, SC = 0, 1, 2, 3
SLOTS = 4


@dataclass(frozen=True, slots=True)
class AddSite:
    """Where a block's residual add is, in terms that can be recognised at run time."""

    add: int  # index into report.residual_adds
    index: int  # position among the add ops made directly in the block's call
    source: tuple[str, int] | None
    src_ordinal: int  # position among the direct add ops at that source line
    shortcut_pos: int  # which operand (0 or 1) is the shortcut
    shapes: tuple[tuple[int, ...], tuple[int, ...]]  # operand shapes in the trace


@dataclass(slots=True)
class BlockSites:
    name: str
    sites: list[AddSite] = field(default_factory=list)
    by_source: bool = False

    def lookup(self) -> dict:
        if self.by_source:
            return {(s.source, s.src_ordinal): s for s in self.sites}
        return {s.index: s for s in self.sites}


def block_sites(report, module: nn.Module | None = None, match: str = "auto") -> dict[str, BlockSites]:
    """For every block of ``report`` with residual adds, where its adds are (see module doc).

    ``match``: ``"auto"`` (by source line where the trace's line lies in the block's own code,
    else by position), ``"index"`` (always by position) or ``"source"``.
    """
    if match not in ("auto", "index", "source"):
        raise ValueError(f"match must be auto, index or source, not {match!r}")
    out: dict[str, BlockSites] = {}
    ops = report.ops
    for block in report.blocks:
        if not block.adds:
            continue
        bs = out.setdefault(block.name, BlockSites(block.name))
        for ai in block.adds:
            ra = report.residual_adds[ai]
            call = report.calls[ra.call]
            # adds of two distinct tensors made directly in the call: what the watch counts
            direct = [
                o for o in ops[call.first_op : call.last_op + 1]
                if o.scope == ra.call and o.kind == "function" and o.type == "add"
                and len(o.inputs) == 2 and o.inputs[0] != o.inputs[1]
            ]  # fmt: skip
            ids = [o.id for o in direct]
            if ra.op not in ids:
                continue
            index = ids.index(ra.op)
            op = ops[ra.op]
            src_ordinal = sum(1 for o in direct[:index] if o.source == op.source)
            if len(op.inputs) != 2 or ra.shortcut not in op.inputs:
                continue
            pos = op.inputs.index(ra.shortcut)
            shapes = (tuple(report.values[op.inputs[0]].shape), tuple(report.values[op.inputs[1]].shape))
            site = AddSite(ai, index, op.source, src_ordinal, pos, shapes)
            if site not in bs.sites:
                bs.sites.append(site)
        sub = _get(module, block.name) if module is not None else None
        code_file = _forward_file(sub)
        # The tracer names the user's line, skipping torch and resviz/core; only trust it when it
        # points into the block's own forward file.
        bs.by_source = match == "source" or (
            match == "auto"
            and bool(bs.sites)
            and code_file is not None
            and all(s.source is not None and s.source[0] == code_file for s in bs.sites)
        )
    return {k: v for k, v in out.items() if v.sites}


def _get(module: nn.Module, name: str) -> nn.Module | None:
    try:
        return module.get_submodule(name) if name else module
    except AttributeError:
        return None


def _forward_file(module: nn.Module | None) -> str | None:
    if module is None:
        return None
    fwd = getattr(type(module), "forward", None)
    code = getattr(fwd, "__code__", None)
    if code is None or code.co_filename.startswith((_TORCH_DIR, _CORE_DIR)):
        return None
    return code.co_filename


def _first_tensor(obj):
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


# ------------------------------------------------------------------------------------ the sink


_F32 = torch.float32


def _dot_ok(t: torch.Tensor) -> bool:
    return t.dtype is _F32 and t.is_cpu and t.is_contiguous()  # ~0.3 µs (t.device.type: ~1 µs)


def _sq_norm(t: torch.Tensor):
    """The squared L2 norm of ``t``, safe from float32 overflow (a norm above ~1.8e19 squares past
    float32's range). On the CPU: a BLAS dot product in float32 (~3x faster than
    ``vector_norm``), read at once (no device to wait for) and redone in float64 in the rare case
    it overflowed: a Python float, squared. Elsewhere: the norm as a 0-d float64 tensor (float64
    accumulation), *not yet squared*: :meth:`ProbeSink.reduce` squares them all in one op (one
    kernel launch fewer per norm on a GPU)."""
    t = t.detach()
    if t.dtype is _F32 and t.is_cpu and t.is_contiguous():  # _dot_ok, inlined: 28 calls a step
        f = t.view(-1)
        d = torch.dot(f, f).item()
        if d == math.inf:
            d = torch.linalg.vector_norm(f, dtype=torch.float64).square().item()
        return d
    return torch.linalg.vector_norm(t, dtype=torch.float64)


_BN_BACKWARD = getattr(torch._C._functions, "NativeBatchNormBackward0", None)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _output_batchnorm(module: nn.Module) -> nn.Module | None:
    """The BatchNorm layer whose output ``module`` returns as is (the module itself, or the last
    layer of a ``Sequential`` such as a projection shortcut ``conv, bn``), or None."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    if type(module) not in _BN_TYPES:
        return None
    fwd = module.__dict__.get("forward")  # only the class's forward (a tap calls it through)
    return module if fwd is None or (isinstance(fwd, ChildTap) and fwd.prev_forward is None) else None


class _BatchNormLater:
    """The squared norm of a BatchNorm layer's output in training (batch statistics), taken from
    the layer's per-channel numbers instead of a read of the output, after the forward pass, with
    the others in one batch (:func:`_batchnorm_values`); see :func:`_batchnorm_later`.

    Batch-normalised values have, per channel c over its M = numel/C entries, zero mean and mean
    square ``var/(var+eps) = 1 - eps*invstd^2``, so
    ``||gamma*xhat + beta||^2 = M * sum_c(gamma_c^2 * (1 - eps*invstd_c^2) + beta_c^2)``: exact up
    to the float32 rounding of the stored values (tested against a read).

    Why: on the CPU a norm is one more pass over a tensor that is out of cache by then (~10-15 GB/s
    here), and the residual operand of nearly every ResNet block (and a projection shortcut) is a
    BatchNorm output. Why later, in a batch: right after a layer has streamed megabytes through
    the cache, every small Python or torch operation costs ~10-15 us (its state was evicted), ten
    times its cost in a loop that does nothing else. ``gamma`` and ``beta`` must be unchanged since
    the forward (their versions), so the batch runs before the optimizer steps: at the first
    gradient hook of the backward pass; one whose layer changed by then goes unmeasured."""

    __slots__ = ("invstd", "eps", "w", "b", "w_version", "b_version", "per_channel")

    def __init__(self, invstd, eps, w, b, per_channel):
        self.invstd, self.eps, self.w, self.b, self.per_channel = invstd, eps, w, b, per_channel
        self.w_version = w._version if w is not None else 0
        self.b_version = b._version if b is not None else 0

    def unchanged(self) -> bool:
        w, b = self.w, self.b
        return (w is None or w._version == self.w_version) and (b is None or b._version == self.b_version)


def _batchnorm_values(items: list[_BatchNormLater]) -> list[float | None]:
    """The squared norms of ``items`` (None for one whose layer changed since), computed together:
    one concatenation per per-channel quantity and a handful of vector operations in all."""
    out: list[float | None] = [None] * len(items)
    ok = [i for i, it in enumerate(items) if it.unchanged()]
    if not ok:
        return out
    sizes = [items[i].invstd.numel() for i in ok]

    def cat(get, fill: float) -> np.ndarray:
        parts = []
        for i, n in zip(ok, sizes):
            t = get(items[i])
            parts.append(t.detach().reshape(-1) if t is not None else torch.full((n,), fill))
        return torch.cat(parts).numpy().astype(np.float64)

    inv = cat(lambda it: it.invstd, 1.0)
    gamma = cat(lambda it: it.w, 1.0)
    beta = cat(lambda it: it.b, 0.0)
    eps = np.repeat(np.array([items[i].eps for i in ok], dtype=np.float64), sizes)
    frac = 1.0 - eps * inv * inv
    np.maximum(frac, 0.0, out=frac)  # var/(var+eps) >= 0; only rounding makes it negative
    frac *= gamma * gamma
    frac += beta * beta
    sums = np.add.reduceat(frac, np.cumsum([0, *sizes[:-1]]))
    for i, v in zip(ok, sums.tolist()):
        out[i] = v * items[i].per_channel
    return out


def _batchnorm_later(t: torch.Tensor, bn: nn.Module) -> _BatchNormLater | None:
    """``t``'s norm from BatchNorm layer ``bn``'s statistics, or None where ``t`` is not shown to be
    its training-mode output, unchanged: its autograd node is a batch norm in training whose saved
    weight is ``bn``'s own, and ``t`` is at version 0. CPU float32 only (elsewhere a read is
    cheap or asynchronous, and the stored values' rounding would exceed the test tolerance)."""
    g = t.grad_fn
    if _BN_BACKWARD is None or type(g) is not _BN_BACKWARD or t._version or not g._saved_training:
        return None
    if t.dtype is not _F32 or not t.is_cpu or t.dim() < 2:
        return None
    w = bn.weight
    if g._saved_weight is not w:
        return None
    invstd = g._saved_result2
    channels = invstd.numel()
    if channels == 0 or t.shape[1] != channels:
        return None
    return _BatchNormLater(invstd, g._saved_eps, w, bn.bias, t.numel() // channels)


class ProbeSink:
    """Collects 0-d norm tensors during one step; ``reduce()`` sums squares per slot on device."""

    def __init__(self, n_blocks: int):
        self.n_slots = n_blocks * SLOTS
        self.active = False
        # squared norms as Python floats (CPU), norms as 0-d float64 tensors, or deferred ones
        self.vals: list = []
        self.slots: list[int] = []
        self.later = False  # some of vals are _BatchNormLater: flush() before reading them
        # The output of one block is usually the input of the next, at the same version: one
        # gradient hook serves both (``alias[input slot] = output slot``).
        self.alias: dict[int, int] = {}
        self._last_out: tuple[torch.Tensor, int, int] | None = None

    def begin(self) -> None:
        self.clear()
        self.active = True

    def end(self) -> None:
        self.active = False
        self._last_out = None

    def hook_input(self, x: torch.Tensor, slot: int) -> None:
        last = self._last_out
        if last is not None and last[0] is x and last[1] == x._version:
            self.alias[slot] = last[2]
            return
        self._hook(x, slot)

    def hook_output(self, y: torch.Tensor, slot: int) -> None:
        self._hook(y, slot)
        self._last_out = (y, y._version, slot)

    def _hook(self, t: torch.Tensor, slot: int) -> None:
        # A tensor hook (``grad_fn.register_prehook`` is ~1.5 us cheaper per call; no gain above
        # the noise for ~10 a step, so the documented semantics stay: the hook gets the gradient
        # of this version of ``t`` even if ``t`` is changed in place later.)
        t.register_hook(lambda g, k=slot: self.grad_hook(k, g))

    def grad_hook(self, slot: int, grad: torch.Tensor) -> None:
        # fires during backward (the hook was registered in this step's forward); the first one
        # also takes the forward pass's deferred norms, before any optimizer step
        if self.later:
            self.flush()
        self.vals.append(_sq_norm(grad))
        self.slots.append(slot)

    def add_norms(self, slot_res: int, res: torch.Tensor, sc: torch.Tensor) -> None:
        if not (res.is_floating_point() and sc.is_floating_point()):
            return
        self.vals += (_sq_norm(res), _sq_norm(sc))
        self.slots += (slot_res, slot_res + 1)

    def measure(self, t: torch.Tensor, made_by: nn.Module | None = None):
        """Squared norm of one residual-add operand, taken where a learned plan finds it (see
        :class:`BlockWatch`); committed with :meth:`commit` once the block's call matched its plan.
        ``made_by``: the child module that returned ``t``; a BatchNorm layer's output is measured
        from its statistics after the forward pass (a :class:`_BatchNormLater`, CPU float32), any
        other tensor by a read now. None when it cannot be measured."""
        if made_by is not None:
            bn = _output_batchnorm(made_by)
            if bn is not None:
                later = _batchnorm_later(t, bn)
                if later is not None:
                    return later
        return _sq_norm(t)

    def flush(self) -> None:
        """Take the deferred (:class:`_BatchNormLater`) norms now, in one batch; one that no longer
        holds is dropped (its slot goes unmeasured). The lists hold only values afterwards, even
        when the batch raises."""
        if not self.later:
            return
        self.later = False
        pending = {id(v): v for v in self.vals if isinstance(v, _BatchNormLater)}  # one value each
        values: dict[int, float | None] = {}
        try:
            values = dict(zip(pending, _batchnorm_values(list(pending.values()))))
        finally:  # on a failure every deferred value is dropped: the lists must hold only numbers
            kept = [
                (slot, values.get(id(v)) if isinstance(v, _BatchNormLater) else v)
                for slot, v in zip(self.slots, self.vals)
            ]
            self.slots[:] = [slot for slot, v in kept if v is not None]
            self.vals[:] = [v for slot, v in kept if v is not None]

    def commit(self, pending: list) -> None:
        for slot, v in pending:
            self.vals.append(v)
            self.slots.append(slot)
            if isinstance(v, _BatchNormLater):
                self.later = True

    def reduce_host(self) -> tuple[list[float], set[int], dict[int, int]] | None:
        """:meth:`reduce` as Python floats, without a tensor op, when every value already is one
        (CPU float32 tensors); None otherwise."""
        self.flush()
        sums = [0.0] * self.n_slots
        for slot, v in zip(self.slots, self.vals):
            if type(v) is not float:
                return None
            sums[slot] += v
        return sums, set(self.slots), dict(self.alias)

    def reduce(self, device) -> tuple[torch.Tensor, set[int], dict[int, int]]:
        """Sum of squared norms per slot (a float64 device tensor), the set of slots measured and
        the slot aliases (host side)."""
        self.flush()
        sums = [0.0] * self.n_slots  # the squares already on the host (CPU float32 tensors)
        norms, norm_slots = [], []  # the others: norms on the device, squared here in one op
        for slot, v in zip(self.slots, self.vals):
            if type(v) is float:
                sums[slot] += v
            else:
                norms.append(v if v.device == device else v.to(device))
                norm_slots.append(slot)
        out = torch.tensor(sums, dtype=torch.float64, device=device)
        if norms:
            idx = torch.tensor(norm_slots, device=device)
            out.index_add_(0, idx, torch.stack(norms).square())
        return out, set(self.slots), dict(self.alias)

    def clear(self) -> None:
        self.vals.clear()
        self.slots.clear()
        self.later = False
        self.alias.clear()
        self._last_out = None


# ------------------------------------------------------------------------------------ the watch


class _AddMode(TorchFunctionMode):
    __slots__ = ("watch",)

    def __init__(self, watch: BlockWatch):
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _ADD_FUNCS:
            return self.watch._on_add(func, args, kwargs or {})
        return func(*args, **(kwargs or {}))


INPUT = (-1, 0)  # a plan's source: the block's first tensor argument, at entry
# A learned plan is checked by the children's call counts on every call; control flow that changes
# only functional ops would not show there, so the plan is learned afresh (one watched call) after
# this many calls: a stale plan lasts at most that long.
RELEARN_CALLS = 100


@dataclass(slots=True)
class _Plan:
    """Where a block's residual-add operands come from, learned on one watched call: each source
    is ``(child index, call ordinal)`` (the ordinal-th output of that direct child in the block's
    call) or :data:`INPUT`; the value at the add is that tensor at the version it had then."""

    slots: dict  # source -> [slot, ...]: the RES and SC slots its norm goes to
    n_values: int  # values one call contributes
    signature: list  # calls of each direct child in the learned call
    calls: int = 0  # calls measured by this plan


class _Call:
    """The state of one call of a watched block: direct-child calls counted so far, and either what
    was seen (learning) or the norms measured for the plan (pending until the call matches it)."""

    __slots__ = ("counts", "learning", "caps", "found", "bad", "pending", "failed")

    def __init__(self, n_children: int, learning: bool):
        self.counts = [0] * n_children
        self.learning = learning
        self.caps: list = []  # learning: (source, tensor, version)
        self.found: list = []  # learning: (residual source, shortcut source) per matched add
        self.bad = False  # learning: an operand that no direct child or the input gave
        self.pending: list = []  # plan: (slot, squared norm)
        self.failed = False  # plan: a norm could not be taken


class _ForwardWrapper:
    """What :class:`ChildTap` and :class:`BlockWatch` share: each replaces ``forward`` on one module
    instance (an instance attribute, so the class and every other instance are untouched), calls
    through to the forward it replaced, and puts it back on :meth:`uninstall`."""

    module: nn.Module
    prev_forward: object

    def install(self):
        self.module.__dict__["forward"] = self
        return self

    def uninstall(self) -> None:
        if self.module.__dict__.get("forward") is self:
            if self.prev_forward is None:
                del self.module.__dict__["forward"]
            else:
                self.module.__dict__["forward"] = self.prev_forward

    def _forward(self, args, kwargs):
        fwd = self.prev_forward
        if fwd is not None:
            return fwd(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)


class ChildTap(_ForwardWrapper):
    """Replaces ``forward`` on a direct child of a watched block (an instance attribute, as
    :class:`BlockWatch`): counts the child's calls inside the block's call and hands its output to
    the block's plan. One tap serves every watched block the module is a child of."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.prev_forward = module.__dict__.get("forward")
        self.owners: list = []  # (BlockWatch, index of this child in it)

    def __deepcopy__(self, memo):  # a copy calls through and serves no block
        new = object.__new__(ChildTap)
        memo[id(self)] = new
        new.module = copy.deepcopy(self.module, memo)
        new.prev_forward = copy.deepcopy(self.prev_forward, memo)
        new.owners = []
        return new

    def __getstate__(self):
        return {"module": self.module, "prev_forward": self.prev_forward, "owners": []}

    def __call__(self, *args, **kwargs):
        out = self._forward(args, kwargs)
        for watch, index in self.owners:
            if watch._calls:
                watch._child_out(index, out)
        return out


class BlockWatch(_ForwardWrapper):
    """Replaces ``module.forward`` on one block of a training copy (an instance attribute).

    ``drop_shortcut``: return only the residual operand at the block's residual adds (plain twin).
    ``sink``/``block_index``: record input/output gradient norms and the residual ratio.
    Deep copies of the module carry a copy of the watch bound to the new module (without a sink).

    The residual ratio is found by watching the adds (a ``TorchFunctionMode``, ~10 µs per torch
    call inside the block) only until the block's plan is learned: on the first measured call the
    watch notes which tensor each operand of its residual add(s) was — a direct child's output
    (seen by a :class:`ChildTap`) or the block's input, at the same version (not changed in place
    since). From then on the norms are taken there, where the tensor is made, and the mode is not
    entered. A call whose children are not called as in the learned call (another path through
    the block) measures no ratio and the plan is learned again on the next measured call; a block
    whose operand no child gives (``out * scale + x``) keeps the mode. Every
    :data:`RELEARN_CALLS` calls the plan is learned afresh.
    """

    def __init__(self, module: nn.Module, sites: BlockSites | None, *, drop_shortcut: bool = False):
        self.module = module
        self.sites = sites
        self._lookup = sites.lookup() if sites is not None else {}
        self.by_source = bool(sites and sites.by_source)
        self.drop_shortcut = drop_shortcut
        self.sink: ProbeSink | None = None
        self.block_index = -1
        self.prev_forward = module.__dict__.get("forward")  # an instance forward we wrap, if any
        self._frames: list = []
        self._counts: list = []
        self._calls: list[_Call] = []
        self.taps: list[ChildTap] = []  # on the direct children, in order (see ProbeSet.tap_children)
        self.plan: _Plan | None | bool = None  # None: not learned yet; False: keeps the mode
        self.matched = 0  # residual adds recognised so far (for diagnostics)
        self.missed = 0  # calls where an expected residual add was not found

    # copies and pickles -------------------------------------------------------------------

    def _fresh(self) -> None:
        self.sink = None
        self.block_index = -1
        self._frames = []
        self._counts = []
        self._calls = []
        self.taps = []
        self.plan = None

    def __deepcopy__(self, memo):
        new = object.__new__(BlockWatch)
        memo[id(self)] = new
        new.__dict__.update(self.__dict__)
        new.module = copy.deepcopy(self.module, memo)
        new.prev_forward = copy.deepcopy(self.prev_forward, memo)
        new._fresh()
        return new

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(sink=None, block_index=-1, _frames=[], _counts=[], _calls=[], taps=[], plan=None)
        return state

    # the call -----------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        sink = self.sink if self.sink is not None and self.sink.active else None
        grad = sink is not None and torch.is_grad_enabled()
        x = None
        if grad:
            x = _first_tensor(args) if args else _first_tensor(kwargs)
            if x is not None and x.requires_grad:
                sink.hook_input(x, self.block_index * SLOTS + IN)
        if not self._lookup or not (self.drop_shortcut or grad):
            out = self._forward(args, kwargs)  # no add to change or measure (no_grad: no probe)
        elif grad and self.plan and not self.drop_shortcut:
            out = self._call_planned(sink, x, args, kwargs)
        else:
            learn = grad and self.plan is None and not self.drop_shortcut and bool(self.taps)
            out = self._call_watched(x if learn else None, learn, args, kwargs)
        if grad:
            y = _first_tensor(out)
            if y is not None and y.requires_grad:
                sink.hook_output(y, self.block_index * SLOTS + OUT)
        return out

    def _call_watched(self, x, learn: bool, args, kwargs):
        """The call under the add-watching mode; ``learn``: also learn the plan from it."""
        call = None
        if learn:
            call = _Call(len(self.taps), True)
            if x is not None:
                call.caps.append((INPUT, x, x._version))
            self._calls.append(call)
        self._frames.append(sys._getframe())
        self._counts.append([0, {}, 0, call])  # direct adds seen, per-source counts, matched, learning
        try:
            with _AddMode(self):
                out = self._forward(args, kwargs)
        finally:
            self._frames.pop()
            matched = self._counts.pop()[2]
            if matched < len(self._lookup):
                self.missed += 1
            if call is not None:
                self._calls.pop()
        if call is not None and matched == len(self._lookup):
            self._learn(call)
        return out

    def _learn(self, call: _Call) -> None:
        if call.bad or len(call.found) != len(self._lookup):
            self.plan = False
            return
        base = self.block_index * SLOTS
        slots: dict = {}
        for res_src, sc_src in call.found:
            slots.setdefault(res_src, []).append(base + RES)
            slots.setdefault(sc_src, []).append(base + SC)
        self.plan = _Plan(slots, 2 * len(call.found), list(call.counts))

    def _source(self, call: _Call, t: torch.Tensor):
        """Which capture of this call ``t`` is, unchanged since (the latest such), or None."""
        version = t._version
        for src, c, v in reversed(call.caps):
            if c is t and v == version:
                return src
        return None

    def _call_planned(self, sink: ProbeSink, x, args, kwargs):
        plan = self.plan
        call = _Call(len(self.taps), False)
        slots = plan.slots.get(INPUT)
        if slots is not None:
            self._measure(sink, call, x, slots)
        self._calls.append(call)
        try:
            out = self._forward(args, kwargs)
        finally:
            self._calls.pop()
        if call.failed:
            return out
        if call.counts == plan.signature and len(call.pending) == plan.n_values:
            sink.commit(call.pending)
            self.matched += plan.n_values // 2
            plan.calls += 1
            if plan.calls >= RELEARN_CALLS:
                self.plan = None
        else:  # another path through the block: no ratio this call; learn again next time
            self.missed += 1
            self.plan = None
        return out

    def _measure(self, sink: ProbeSink, call: _Call, t, slots, made_by: nn.Module | None = None) -> None:
        if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
            return
        v = sink.measure(t, made_by)
        if v is None:
            call.failed = True
            return
        for slot in slots:
            call.pending.append((slot, v))

    def _child_out(self, index: int, out) -> None:
        """A direct child returned ``out`` inside this block's current call (from its tap)."""
        call = self._calls[-1]
        n = call.counts[index]
        call.counts[index] = n + 1
        if call.learning:
            if isinstance(out, torch.Tensor):
                call.caps.append(((index, n), out, out._version))
            return
        slots = self.plan.slots.get((index, n))
        if slots is not None:
            self._measure(self.sink, call, out, slots, self.taps[index].module)

    def _scope_source(self):
        """(in the block's own call?, source line of the add) by walking up the frames."""
        stop = self._frames[-1]
        f = sys._getframe(1)  # frames of this file and of torch are skipped below
        source = None
        want_source = self.by_source
        while f is not None and f is not stop:
            code = f.f_code
            if code in _CALL_CODES:
                return False, None
            if want_source and source is None:
                fn = code.co_filename
                if not fn.startswith((_TORCH_DIR, _CORE_DIR)):
                    source = (fn, f.f_lineno)
            f = f.f_back
        return f is stop, source

    def _on_add(self, func, args, kwargs):
        a = args[0] if len(args) > 0 else kwargs.get("input")
        b = args[1] if len(args) > 1 else kwargs.get("other")
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a is b:
            return func(*args, **kwargs)
        in_scope, source = self._scope_source()
        if not in_scope:
            return func(*args, **kwargs)
        counts = self._counts[-1]
        if self.by_source:
            ordinal = counts[1].get(source, 0)
            counts[1][source] = ordinal + 1
            site = self._lookup.get((source, ordinal))
        else:
            site = self._lookup.get(counts[0])
        counts[0] += 1
        if site is None or not _shapes_agree(a, b, site.shapes):
            return func(*args, **kwargs)
        counts[2] += 1
        self.matched += 1
        if site.shortcut_pos == 0:
            sc, res = a, b
        else:
            res, sc = a, b
        sink = self.sink if self.sink is not None and self.sink.active else None
        if self.drop_shortcut:
            return _residual_only(func, args, kwargs, res, site.shortcut_pos)
        if sink is not None:
            call = counts[3]
            if call is not None:
                srcs = (self._source(call, res), self._source(call, sc))
                if None in srcs or not (res.is_floating_point() and sc.is_floating_point()):
                    call.bad = True
                call.found.append(srcs)
            sink.add_norms(self.block_index * SLOTS + RES, res, sc)  # before an in-place add
        return func(*args, **kwargs)


def _shapes_agree(a: torch.Tensor, b: torch.Tensor, shapes) -> bool:
    sa, sb = shapes
    return (
        a.dim() == len(sa)
        and b.dim() == len(sb)
        and tuple(a.shape[1:]) == sa[1:]
        and tuple(b.shape[1:]) == sb[1:]
    )


def _residual_only(func, args, kwargs, res: torch.Tensor, shortcut_pos: int):
    """What the add returns in the plain twin: the residual operand alone (same object rules)."""
    alpha = kwargs.get("alpha", 1)
    if alpha != 1 and shortcut_pos == 0:  # alpha scales the second operand: here the residual
        res = res * alpha
    if _ADD_FUNCS.get(func, False):  # in-place: the result is the first operand
        target = args[0]
        if target is res:
            return target  # `out += identity` → `out` unchanged
        return target.copy_(res)  # `identity += out` → the residual's value in the shortcut's tensor
    return res.clone()  # a new tensor, as `a + b` would give: later in-place ops stay safe


# ------------------------------------------------------------------------------------ probe sets


class ProbeSet:
    """The probes installed on one training copy.

    ``names``: probed block names (in model order). ``params``: every trainable parameter of the
    model (the trainer takes norms of their gradients in this order); ``param_index`` and
    ``block_index`` pair each block with its own parameters for ``grad_norm``.
    """

    def __init__(self, model: nn.Module, report, names: list[str] | None = None, *,
                 residual_ratio: bool = True, device=None, match: str = "auto"):  # fmt: skip
        self.model = model
        sites = block_sites(report, model, match) if residual_ratio else {}
        self.names, modules = _probed_modules(model, probe_blocks(report) if names is None else names)
        self.sink = ProbeSink(len(self.names))
        self.notes: list[str] = []
        self.watches: list[BlockWatch] = _install_watches(self.names, modules, sites, self.sink)
        self.params, pi, bi = _block_params(model, modules)
        device = device or (self.params[0].device if self.params else torch.device("cpu"))
        self.param_index = torch.tensor(pi, dtype=torch.long, device=device)
        self.block_index = torch.tensor(bi, dtype=torch.long, device=device)
        self.block_params: list[list[int]] = [[] for _ in self.names]  # for sums on the host
        for p, b in zip(pi, bi):
            self.block_params[b].append(p)
        self.ratio_blocks = {w.block_index for w in self.watches if w._lookup and not w.drop_shortcut}

    def remove(self) -> None:
        for w in self.watches:  # the taps first: a watch is never under a tap
            for tap in w.taps:
                tap.owners = [(o, i) for o, i in tap.owners if o is not w]
                if not tap.owners:
                    tap.uninstall()
            w.taps = []
            w.plan = None
        for w in self.watches:
            w.sink = None
            if not w.drop_shortcut:
                w.uninstall()
        self.watches.clear()

    def block_grad_sq(self, param_sq: torch.Tensor) -> torch.Tensor:
        """Sum of squared parameter-gradient norms per block (device tensor)."""
        out = torch.zeros(len(self.names), device=param_sq.device, dtype=param_sq.dtype)
        if len(self.param_index):
            out.index_add_(0, self.block_index, param_sq.index_select(0, self.param_index))
        return out

    def decode(self, block_sq: list[float], act_sq: list[float], measured: set[int],
               alias: dict[int, int] | None = None) -> dict[str, dict[str, float]]:  # fmt: skip
        """Host-side: per-block probe values from the packed sums of squares."""
        out = {}
        nan = math.nan
        alias = alias or {}
        for i, name in enumerate(self.names):
            base = i * SLOTS

            def root(k, base=base):
                slot = alias.get(base + k, base + k)
                return math.sqrt(act_sq[slot]) if slot in measured else nan

            gin, gout = root(IN), root(OUT)
            res, sc = root(RES), root(SC)
            ratio = res / sc if sc > 0 else (nan if math.isnan(sc) or math.isnan(res) else math.inf)
            gain = gin / gout if gout > 0 else nan
            out[name] = {
                "grad_norm": math.sqrt(block_sq[i]),
                "input_grad_norm": gin,
                "output_grad_norm": gout,
                "residual_ratio": ratio,
                "gain": gain,
            }
        return out

    def nonfinite_origin(self, blocks: dict[str, dict[str, float]], measured: set[int],
                         alias: dict[int, int] | None = None) -> tuple[str, str] | None:  # fmt: skip
        """Where a NaN/Inf first appears on the backward path (from the loss towards the input):
        ``(block, "inside")`` for the deepest block whose output gradient was finite but whose
        input or parameter gradient was not; ``(block, "after")`` when the gradient at a block's
        output was already non-finite with every deeper block finite (it arose between that block
        and the loss); None when every measured gradient was finite."""
        alias = alias or {}

        def bad(i: int, slot: int, probe: str) -> bool:
            s = alias.get(i * SLOTS + slot, i * SLOTS + slot)
            return s in measured and not math.isfinite(blocks[self.names[i]][probe])

        for i in reversed(range(len(self.names))):
            d = blocks.get(self.names[i], {})
            if bad(i, OUT, "output_grad_norm"):
                return self.names[i], "after"
            if bad(i, IN, "input_grad_norm") or not math.isfinite(d.get("grad_norm", 0.0)):
                return self.names[i], "inside"
        return None


def _probed_modules(model: nn.Module, names: list[str]) -> tuple[list[str], list[nn.Module]]:
    """The names that are submodules of ``model`` (not the model itself), and those modules."""
    found, modules = [], []
    for name in names:
        sub = _get(model, name)
        if sub is None or sub is model:
            continue
        found.append(name)
        modules.append(sub)
    return found, modules


def _install_watches(
    names: list[str], modules: list[nn.Module], sites: dict, sink: ProbeSink
) -> list[BlockWatch]:
    """A :class:`BlockWatch` on each block feeding ``sink`` (a plain twin's watch is reused: it keeps
    its sites and measures gradients only), then the taps on the children of every watch that
    measures a residual ratio."""
    watches = []
    for i, (name, sub) in enumerate(zip(names, modules)):
        w = sub.__dict__.get("forward")
        if not isinstance(w, BlockWatch):
            w = BlockWatch(sub, sites.get(name)).install()
        w.sink = sink
        w.block_index = i
        watches.append(w)
    for w in watches:
        if w._lookup and not w.drop_shortcut:
            _tap_children(w)
    return watches


def _block_params(
    model: nn.Module, modules: list[nn.Module]
) -> tuple[list[nn.Parameter], list[int], list[int]]:
    """Every trainable parameter of ``model`` and, for each (parameter, block) pair of a block's
    own parameters, the parameter's index and the block's."""
    params = [p for p in model.parameters() if p.requires_grad]
    pid = {id(p): i for i, p in enumerate(params)}
    pi, bi = [], []
    for b, sub in enumerate(modules):
        for p in sub.parameters():
            if id(p) in pid:
                pi.append(pid[id(p)])
                bi.append(b)
    return params, pi, bi


def _tap_children(watch: BlockWatch) -> None:
    """A :class:`ChildTap` on each direct child of the watched block. A child with an instance
    ``forward`` of its own (a probed block, the user's) is left alone: it cannot be a plan's source
    and that block keeps watching its adds with the mode."""
    for child in _callable_children(watch.module):
        fwd = child.__dict__.get("forward")
        if fwd is None:
            fwd = ChildTap(child).install()
        elif not isinstance(fwd, ChildTap):
            continue
        fwd.owners.append((watch, len(watch.taps)))
        watch.taps.append(fwd)


def _callable_children(module: nn.Module, seen: set | None = None):
    """The modules a block's own forward calls directly, once each: its children, looking through
    the containers it can only iterate (``ModuleList``, ``ModuleDict``)."""
    seen = set() if seen is None else seen
    for child in module.children():
        if id(child) in seen:
            continue
        seen.add(id(child))
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _callable_children(child, seen)
        else:
            yield child


def strip_probes(model: nn.Module) -> None:
    """Take every probe wrapper (watch and tap) off ``model``, e.g. a deep copy of a probed
    training copy; a plain twin's watches, which make it plain, stay."""
    for sub in model.modules():
        w = sub.__dict__.get("forward")
        if isinstance(w, ChildTap) or (isinstance(w, BlockWatch) and not w.drop_shortcut):
            w.uninstall()


def param_sq_norms(grads: list[torch.Tensor], exact: bool = False) -> torch.Tensor:
    """Squared norms of ``grads`` as a float64 device tensor. The fast path takes float32 norms
    (``_foreach_norm``), which overflow for a norm past ~1.8e19; ``exact=True`` accumulates in
    float64 (redo with it before calling a step non-finite)."""
    if exact:
        return torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads]).square()
    return torch.stack(torch._foreach_norm(grads)).double().square()


# ------------------------------------------------------------------------------------ plain twin


def plain_twin(model: nn.Module, report, *, copy: bool = True) -> nn.Module:
    """A deep copy of ``model`` whose residual adds return the residual branch alone.

    Works for any traced model: at each residual add of the report the shortcut operand is dropped
    (``out += identity`` leaves ``out`` unchanged; ``out + identity`` gives a copy of ``out``).
    ``model`` itself is not modified. The copy has the same parameters and state dict, so it
    starts from the same weights. ``copy=False`` converts ``model`` itself (for a copy you own).
    """
    twin = _copy.deepcopy(model) if copy else model
    sites = block_sites(report, twin)
    for name, bs in sites.items():
        sub = _get(twin, name)
        if sub is None:
            continue
        existing = sub.__dict__.get("forward")
        if isinstance(existing, BlockWatch):
            existing.drop_shortcut = True
            continue
        BlockWatch(sub, bs, drop_shortcut=True).install()
    return twin


def is_plain_twin(model: nn.Module) -> bool:
    return any(
        isinstance(m.__dict__.get("forward"), BlockWatch) and m.__dict__["forward"].drop_shortcut
        for m in model.modules()
    )
