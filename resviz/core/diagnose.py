"""Explain a shortcut mismatch: which layers are responsible, why, and what code fixes it.

The tracer gives us, for the add, the value where the two paths fork and the ops on each path with
their input and output shapes. A mismatch is explained by comparing what each path does to the
channel count and to the spatial size, naming the layers that did it:

* channels: the residual branch changes them (a conv with more output channels) while the shortcut
  keeps them (identity, pooling), or a projection produces the wrong number;
* spatial size: a strided conv with an identity shortcut, a k×k conv without padding that shrinks
  the map, a projection with the wrong stride, or two downsamplers that round differently (an
  average pool rounds 7 down to 3 while a padded strided conv rounds up to 4 — odd sizes only);
* broadcasting: an (N,C,1,1) branch added to an (N,C,H,W) identity runs silently in PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .describe import conv_geometry, pool_geometry, short_label
from .records import Mismatch, Op, ResidualAdd
from .rules import broadcast
from .shapes import format_shape


@dataclass
class _Change:
    op: Op
    before: tuple[int, ...]
    after: tuple[int, ...]


def _fmt(shape) -> str:
    return format_shape(shape, batch=False)


def _changes(trace, path: list[int]) -> tuple[list[_Change], list[_Change]]:
    """Ops on a path that change the channel count, and ops that change the spatial size."""
    chans, spatial = [], []
    for i in path:
        op = trace.ops[i]
        if not op.inputs or not op.outputs:
            continue
        before = trace.values[op.inputs[0]].shape
        after = trace.values[op.outputs[0]].shape
        if len(before) >= 3 and len(after) >= 3 and len(before) == len(after):
            if before[1] != after[1]:
                chans.append(_Change(op, before, after))
            if before[2:] != after[2:]:
                spatial.append(_Change(op, before, after))
        elif before != after:
            chans.append(_Change(op, before, after))
    return chans, spatial


def _name(op: Op) -> str:
    return f"`{op.name}`"


def _conv_reason(ch: _Change) -> str:
    """Why a conv or pool changed the spatial size, in words."""
    g = conv_geometry(ch.op) or pool_geometry(ch.op)
    h0, h1 = ch.before[2], ch.after[2]
    if g is None:
        return f"{_name(ch.op)} ({ch.op.type}) changes {h0} to {h1}"
    k, s, p = g["kernel"][0], g["stride"][0], g["padding"]
    p = 0 if isinstance(p, str) else p[0]
    if s > 1:
        return f"{_name(ch.op)} ({short_label(ch.op)}) has stride {s}: {h0} → {h1}"
    if k > 1 and h1 < h0:
        return (
            f"{_name(ch.op)} is a {k}x{k} {'conv' if 'in' in g else 'pool'} with padding {p}: "
            f"it shrinks {h0} to {h1}"
        )
    return f"{_name(ch.op)} ({short_label(ch.op)}) changes {h0} to {h1}"


def _projection_code(cin: int, cout: int, stride: int, nd: int = 2) -> str:
    conv = f"nn.Conv{nd}d({cin}, {cout}, kernel_size=1, stride={stride}, bias=False)"
    return f"nn.Sequential({conv}, nn.BatchNorm{nd}d({cout}))"


def explain(trace, add: ResidualAdd) -> Mismatch:
    """Build the Mismatch record (cause, fix, culprits) for a residual add with unequal shapes."""
    res_shape = trace.values[add.residual].shape
    sc_shape = trace.values[add.shortcut].shape
    fork_shape = trace.values[add.fork].shape
    mm = Mismatch(
        block=add.block or "(model)", add_op=add.op, residual_shape=res_shape,
        shortcut_shape=sc_shape, broadcastable=broadcast(res_shape, sc_shape) is not None,
        cause="", fix="",
    )  # fmt: skip
    both = f"residual branch {_fmt(res_shape)} vs shortcut {_fmt(sc_shape)}"
    if mm.broadcastable:
        _explain_broadcast(trace, add, mm, both)
        return mm
    if len(res_shape) != len(sc_shape) or len(res_shape) < 3:
        _explain_generic(trace, add, mm, both)
        return mm
    res_ch, res_sp = _changes(trace, add.residual_ops)
    sc_ch, sc_sp = _changes(trace, add.shortcut_ops)
    causes, fixes, culprits = [], [], []
    nd = len(res_shape) - 2
    channels_differ = res_shape[1] != sc_shape[1]
    spatial_differ = res_shape[2:] != sc_shape[2:]
    stride = _ratio(fork_shape[2:], res_shape[2:])

    if add.kind in ("identity", "pool", "zero-pad") and not sc_ch and not _has_unpadded(res_sp):
        # The classic: a stage transition whose shortcut does not project.
        what = {"identity": "the shortcut is the identity", "pool": "the shortcut only pools",
                "zero-pad": "the shortcut only zero-pads"}[add.kind]  # fmt: skip
        details = []
        if res_sp:
            strided = [c for c in res_sp if (conv_geometry(c.op) or {}).get("stride", (1,))[0] > 1]
            for c in strided or res_sp:
                culprits.append(c.op.name)
        if channels_differ and res_ch:
            culprits.append(res_ch[-1].op.name)
        first = trace.ops[add.residual_ops[0]] if add.residual_ops else None
        for name in dict.fromkeys(culprits):
            op = next(o for o in (trace.ops[i] for i in add.residual_ops) if o.name == name)
            g = conv_geometry(op)
            bits = []
            if g and g["stride"][0] > 1:
                bits.append(f"stride {g['stride'][0]}")
            if g and channels_differ:
                bits.append(f"{g['out']} output channels")
            details.append(f"{_name(op)} has {' and '.join(bits) or short_label(op)}")
        if not details and first is not None:
            details.append(f"the residual branch starting at {_name(first)} changes the shape")
        causes.append(f"{'; '.join(details)} while {what}: {_fmt(sc_shape)} vs {_fmt(res_shape)}")
        if stride is None:
            stride = 1
        fixes.append(_projection_code(fork_shape[1], res_shape[1], stride, nd))
        mm.fix = fixes[0]
        mm.cause = causes[0]
        mm.culprits = list(dict.fromkeys(culprits))
        return mm

    if spatial_differ:
        unpadded = [c for c in res_sp + sc_sp if _is_unpadded(c)]
        if unpadded:
            for c in unpadded:
                causes.append(_conv_reason(c))
                culprits.append(c.op.name)
                g = conv_geometry(c.op) or pool_geometry(c.op)
                need = (g["kernel"][0] - 1) // 2 * (g.get("dilation", (1,))[0])
                fixes.append(f"{c.op.name}: padding={need}")
        else:
            res_total = _ratio(fork_shape[2:], res_shape[2:])
            sc_total = _ratio(fork_shape[2:], sc_shape[2:])
            res_strides = _stride_product(res_sp)
            sc_strides = _stride_product(sc_sp)
            if res_strides == sc_strides and res_strides > 1:
                # Same downsampling factor, different rounding: only odd sizes break.
                down = sc_sp[-1] if sc_sp else None
                up = res_sp[-1] if res_sp else None
                h = fork_shape[2]
                lo, hi = sorted((res_shape[2], sc_shape[2]))
                who_lo = down if sc_shape[2] == lo else up
                who_hi = up if who_lo is down else down
                causes.append(
                    f"{_name(who_lo.op) if who_lo else 'one path'} rounds {h} down to {lo} while "
                    f"{_name(who_hi.op) if who_hi else 'the other'} rounds up to {hi}: the size "
                    f"entering the block is odd ({h})"
                )
                culprits += [c.op.name for c in (who_lo, who_hi) if c]
                pool = next((c for c in sc_sp + res_sp if pool_geometry(c.op)), None)
                if pool is not None:
                    g = pool_geometry(pool.op)
                    k, s = g["kernel"][0], g["stride"][0]
                    fixes.append(
                        f"{pool.op.name}: nn.AvgPool2d({k}, stride={s}, ceil_mode=True, "
                        "count_include_pad=False)"
                    )
                mm.input_sizes = []  # filled by the analysis from a sweep of input sizes
            elif sc_sp and res_sp and res_total != sc_total:
                causes.append(
                    f"the paths downsample differently: residual {'; '.join(_conv_reason(c) for c in res_sp)}"
                    f", shortcut {'; '.join(_conv_reason(c) for c in sc_sp)}"
                )
                culprits += [c.op.name for c in sc_sp]
                proj = next((c for c in sc_sp if conv_geometry(c.op)), None)
                if proj is not None and res_total:
                    fixes.append(f"{proj.op.name}: stride={res_total}")
            elif res_sp and not sc_sp:
                causes.append(
                    "; ".join(_conv_reason(c) for c in res_sp) + " but the shortcut keeps "
                    f"{_fmt(sc_shape[2:])}"
                )
                culprits += [c.op.name for c in res_sp]
                proj = next((trace.ops[i] for i in add.shortcut_ops if conv_geometry(trace.ops[i])), None)
                if proj is not None and res_total:
                    fixes.append(f"{proj.name}: stride={res_total}")
                elif res_total:
                    fixes.append(_projection_code(fork_shape[1], res_shape[1], res_total, nd))
            elif sc_sp and not res_sp:
                causes.append(
                    "; ".join(_conv_reason(c) for c in sc_sp) + " but the residual branch keeps "
                    f"{_fmt(res_shape[2:])}"
                )
                culprits += [c.op.name for c in sc_sp]
                proj = next((c for c in sc_sp if conv_geometry(c.op)), None)
                if proj is not None:
                    fixes.append(f"{proj.op.name}: stride=1")

    if channels_differ:
        if sc_ch:
            proj = sc_ch[-1]
            g = conv_geometry(proj.op)
            causes.append(
                f"the projection {_name(proj.op)} outputs {proj.after[1]} channels but the "
                f"residual branch outputs {res_shape[1]}"
            )
            culprits.append(proj.op.name)
            if g is not None:
                s = g["stride"][0]
                fixes.append(
                    f"{proj.op.name}: nn.Conv{nd}d({g['in']}, {res_shape[1]}, kernel_size="
                    f"{g['kernel'][0]}, stride={s}, bias=False)"
                    + _bn_after(trace, add, proj.op, res_shape[1], nd)
                )
        elif res_ch:
            last = res_ch[-1]
            causes.append(
                f"{_name(last.op)} outputs {res_shape[1]} channels but the shortcut carries "
                f"{sc_shape[1]}"
            )
            culprits.append(last.op.name)
            fixes.append(_projection_code(fork_shape[1], res_shape[1], stride or 1, nd))

    if not causes:
        _explain_generic(trace, add, mm, both)
        return mm
    mm.cause = "; ".join(causes) + f" ({both})"
    mm.fix = "\n".join(dict.fromkeys(fixes)) if fixes else ""
    mm.culprits = list(dict.fromkeys(culprits))
    return mm


def _bn_after(trace, add: ResidualAdd, conv: Op, channels: int, nd: int) -> str:
    for i in add.shortcut_ops:
        op = trace.ops[i]
        if op.id > conv.id and op.type.startswith("BatchNorm"):
            return f"\n{op.name}: nn.BatchNorm{nd}d({channels})"
    return ""


def _is_unpadded(c: _Change) -> bool:
    g = conv_geometry(c.op) or pool_geometry(c.op)
    if g is None:
        return False
    k, s = g["kernel"][0], g["stride"][0]
    p = g["padding"]
    if isinstance(p, str):
        return False
    return s == 1 and k > 1 and c.after[2] < c.before[2]


def _has_unpadded(changes: list[_Change]) -> bool:
    return any(_is_unpadded(c) for c in changes)


def _stride_product(changes: list[_Change]) -> int:
    total = 1
    for c in changes:
        g = conv_geometry(c.op) or pool_geometry(c.op)
        if g is not None:
            total *= g["stride"][0]
        elif c.after[2] and c.before[2] > c.after[2]:
            total *= round(c.before[2] / c.after[2])
    return total


def _ratio(before, after) -> int | None:
    if not before or not after or after[0] == 0:
        return None
    r = before[0] / after[0]
    if abs(r - round(r)) < 0.26 and round(r) >= 1:
        return round(r)
    return None


def _explain_broadcast(trace, add: ResidualAdd, mm: Mismatch, both: str) -> None:
    res, sc = mm.residual_shape, mm.shortcut_shape
    small, small_ops, name = (res, add.residual_ops, "residual branch")
    if sum(sc) < sum(res):
        small, small_ops, name = (sc, add.shortcut_ops, "shortcut")
    squeezer = None
    for i in small_ops:
        op = trace.ops[i]
        if op.inputs and op.outputs:
            b = trace.values[op.inputs[0]].shape
            a = trace.values[op.outputs[0]].shape
            if len(a) == len(b) and any(x == 1 and y != 1 for x, y in zip(a, b)):
                squeezer = op
    where = f" at {_name(squeezer)} ({short_label(squeezer)})" if squeezer else ""
    mm.cause = (
        f"the {name} is reduced to {_fmt(small)}{where}; PyTorch broadcasts it over the other "
        f"operand without an error, so the block adds the same value at every position ({both})"
    )
    if squeezer is not None:
        mm.culprits = [squeezer.name]
    mm.fix = (
        f"remove {squeezer.name} from the {name}" if squeezer else f"make the {name} keep the full shape"
    ) + " — or, if it is a gate (squeeze-excitation), multiply instead of adding: out = x * gate"


def _explain_generic(trace, add: ResidualAdd, mm: Mismatch, both: str) -> None:
    res_ch, _ = _changes(trace, add.residual_ops)
    sc_ch, _ = _changes(trace, add.shortcut_ops)
    last = (res_ch or sc_ch or [None])[-1]
    if last is not None:
        mm.cause = f"{_name(last.op)} ({short_label(last.op)}) makes {_fmt(last.after)}: {both}"
        mm.culprits = [last.op.name]
    else:
        mm.cause = both
    r, s = mm.residual_shape, mm.shortcut_shape
    if len(r) == len(s) and r[:-1] == s[:-1]:
        mm.fix = f"nn.Linear({s[-1]}, {r[-1]}, bias=False)  # as the shortcut projection"
    else:
        mm.fix = f"make the shortcut produce {_fmt(r)} (a projection on the shortcut path)"
