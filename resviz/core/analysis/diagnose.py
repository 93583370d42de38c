"""Explain a shortcut mismatch: which layers are responsible, why, and what code fixes it.

The tracer gives us, for the add, the value where the two paths fork and the ops on each path with
their geometry (kernel, stride, padding). The diagnosis works like a person with a pencil:

1. padding — a k×k conv with less than ``(k-1)/2`` padding shrinks the map (32 → 30): fix its
   padding first, on either path;
2. downsampling — with padding fixed, recompute both paths' sizes from the layers' formulas. If the
   paths downsample by different factors, the shortcut is brought in line with the residual branch
   (set its conv's stride, remove a pool, or give it a projection); if they downsample by the same
   factor but still differ, they round differently at odd sizes (an average pool rounds 7 down to
   3, a padded strided conv rounds up to 4): ``ceil_mode=True``, or an even input size;
3. channels — a projection with the wrong width is corrected; a shortcut that cannot change
   channels (identity, pooling) gets ``nn.Sequential(conv1x1, BatchNorm)``.

The residual branch is taken as the intended shape (tracing also carries on with it). Every fix is
re-checked by recomputing both paths with the fix applied before it is offered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..shapes import human_shape
from ..tracing.records import Mismatch, Op, ResidualAdd
from ..tracing.shape_rules import broadcast, conv_out, pool_out
from .blame import declared_width, feature_difference, feature_setter
from .describe import conv_geometry, hyperparams, pool_geometry, short_label
from .fix_text import layer_code, norm_width
from .fix_text import render as render_fix
from .residual import common_module_path


def _fmt(shape) -> str:
    return human_shape(shape, batch=False)


def _name(op: Op) -> str:
    return f"`{op.name}`"


def _projection_code(cin: int, cout: int, stride: int, nd: int = 2) -> str:
    conv = f"nn.Conv{nd}d({cin}, {cout}, kernel_size=1, stride={stride}, bias=False)"
    return f"nn.Sequential({conv}, nn.BatchNorm{nd}d({cout}))"


def _geometry(trace, op: Op):
    return conv_geometry(op, trace.modules) or pool_geometry(op, trace.modules)


def _in_out(trace, op: Op):
    if not op.inputs or not op.outputs:
        return None, None
    return trace.values[op.inputs[0]].shape, trace.values[op.outputs[0]].shape


def _need_padding(g) -> int:
    return g["dilation"][0] * (g["kernel"][0] - 1) // 2


def _is_unpadded(trace, op: Op) -> bool:
    """A conv that shrinks the map more than its stride does: it lacks 'same' padding."""
    g = conv_geometry(op, trace.modules)
    if g is None or isinstance(g["padding"], str):
        return False
    before, after = _in_out(trace, op)
    if before is None or len(before) < 3 or len(after) != len(before):
        return False
    k, s = g["kernel"][0], g["stride"][0]
    return k > 1 and g["padding"][0] < _need_padding(g) and after[2] < -(-before[2] // s)


def _simulate(trace, ops: list[Op], size: int, dim: int, over: dict) -> int | None:
    """Size along spatial ``dim`` after ``ops`` for an input of ``size``, with overrides applied.

    Layers with a known geometry use PyTorch's formulas; any other layer that changed the size is
    scaled by the ratio it showed in the trace (None when that ratio is not exact).
    """
    for op in ops:
        before, after = _in_out(trace, op)
        if before is None or len(before) <= dim or len(after) <= dim:
            continue
        o = over.get(op.id, {})
        if o.get("remove"):
            continue
        g = conv_geometry(op, trace.modules)
        i = dim - 2
        if g is not None and not isinstance(g["padding"], str):
            k, s = g["kernel"][i], o.get("stride", g["stride"][i])
            p, d = o.get("padding", g["padding"][i]), g["dilation"][i]
            size = conv_out(size, k, s, p, d)
            continue
        pg = pool_geometry(op, trace.modules)
        if pg is not None:
            k, s, p = pg["kernel"][i], o.get("stride", pg["stride"][i]), pg["padding"][i]
            size = pool_out(size, k, s, p, 1, o.get("ceil_mode", pg["ceil_mode"]))
            continue
        if before[dim] != after[dim]:
            if (size * after[dim]) % before[dim]:
                return None if size != before[dim] else after[dim]
            size = size * after[dim] // before[dim]
    return size


def _stride(trace, op: Op, over: dict) -> int:
    if over.get(op.id, {}).get("remove"):
        return 1
    g = _geometry(trace, op)
    return over.get(op.id, {}).get("stride", g["stride"][0]) if g else 1


def _stride_product(trace, ops: list[Op], over: dict) -> int:
    total = 1
    for op in ops:
        total *= _stride(trace, op, over)
    return total


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
    elif _explain_features(trace, add, mm, both):
        pass
    elif len(res_shape) != len(sc_shape) or len(res_shape) < 3 or len(fork_shape) != len(res_shape):
        _explain_generic(trace, add, mm, both)
    elif not _explain_missing_projection(trace, add, mm):
        _explain_layers(trace, add, mm, both)
    mm.fix_edits = [f for f in mm.fix.splitlines() if f]
    text = render_fix(trace, add, mm.fix_edits)
    mm.fix, mm.fix_title, mm.fix_where = text.text, text.title, text.where
    return mm


def _explain_features(trace, add: ResidualAdd, mm: Mismatch, both: str) -> bool:
    """One feature axis differs and one layer declares the residual branch's width: blame that
    layer when the residual branch is the broken path (``blame.py``), and explain token-shaped and
    channel-last layouts in a Linear's own terms; NCHW convs keep the texts below."""
    diff = feature_difference(trace, add)
    if diff is None:
        return False
    axis, rw, sw = diff
    setter = feature_setter(trace, add.residual_ops, add.residual, rw)
    if setter is None:
        return False
    conv_like = conv_geometry(setter, trace.modules) or "out_channels" in hyperparams(setter, trace.modules)
    attr = "out_channels" if conv_like else "out_features"
    unit = "channels" if attr == "out_channels" else "features"
    if add.intended == "shortcut":
        mm.broken_path = "residual"
        cause = (f"{_name(setter)} has {attr} {rw} but {sw} are expected: the shortcut carries {sw} "
                 f"{unit}")  # fmt: skip
        if add.evidence:
            cause += f", and so must the block's output: with {rw}, {add.evidence}"
        mm.cause = f"{cause} ({both})"
        mm.culprits = [setter.name]
        fixes = [_layer_fix(trace, setter, sw, f"{attr}={sw}")]
        for i in add.residual_ops:
            op = trace.ops[i]
            if op.id > setter.id and _norm_width(trace, op) == rw:
                fixes.append(_layer_fix(trace, op, sw, f"num_features={sw}"))
                mm.culprits.append(op.name)
        mm.fix = "\n".join(fixes)
        return True
    if attr == "out_channels" and axis == 1:
        return False  # an NCHW conv: the stride/channel texts below say it in a conv's terms
    mm.cause = (f"{_name(setter)} has {attr} {rw} but the shortcut carries {sw} {unit} "
                f"({both})")  # fmt: skip
    mm.culprits = [setter.name]
    widths = ((trace.ops[i], declared_width(trace.ops[i], trace.modules)) for i in reversed(add.shortcut_ops))
    proj = next((op for op, w in widths if w), None)
    if proj is not None and declared_width(proj, trace.modules) == sw:
        mm.cause = (f"the projection {_name(proj)} has {attr} {sw} but the residual branch's "
                    f"{_name(setter)} has {rw} ({both})")  # fmt: skip
        mm.culprits = [proj.name]
        mm.fix = _layer_fix(trace, proj, rw, f"{attr}={rw}")
        return True
    res = mm.residual_shape
    if axis == len(res) - 1:
        code = f"nn.Linear({sw}, {rw}, bias=False)"
    else:
        code = _projection_code(sw, rw, 1, max(len(res) - 2, 1)).replace("stride=1, ", "")
    mm.fix = _shortcut_prefix(trace, add) + code
    return True


def _layer_fix(trace, op: Op, width: int, fallback: str) -> str:
    module = trace.modules.of(op)
    code = layer_code(module, width) if isinstance(module, nn.Module) else None
    if code is None:  # a TorchScript/export layer: say it, for the code the model was made from
        return f"give `{op.name}` {fallback}"
    return f"{op.name}: {code}"


def _norm_width(trace, op: Op) -> int | None:
    """The width a norm layer is built for, in any front-end (a module, or recorded attrs)."""
    module = trace.modules.of(op)
    if isinstance(module, nn.Module) and norm_width(module) is not None:
        return norm_width(module)
    if "Norm" not in op.type:
        return None
    hp = hyperparams(op, trace.modules)
    w = hp.get("num_features", hp.get("num_channels"))
    shape = hp.get("normalized_shape")
    if w is None and isinstance(shape, (list, tuple)) and len(shape) == 1:
        w = shape[0]
    return w if isinstance(w, int) else None


def _explain_missing_projection(trace, add: ResidualAdd, mm: Mismatch) -> bool:
    """The classic: a stage transition (stride and/or wider) whose shortcut does not project."""
    res_ops = [trace.ops[i] for i in add.residual_ops]
    sc_ops = [trace.ops[i] for i in add.shortcut_ops]
    if add.kind not in ("identity", "pool", "zero-pad") or any(_is_unpadded(trace, o) for o in res_ops):
        return False
    if any(_changes(trace, o, channels=True) for o in sc_ops):
        return False
    fork, res, sc = trace.values[add.fork].shape, mm.residual_shape, mm.shortcut_shape
    nd = len(res) - 2
    stride = _stride_product(trace, res_ops, {})
    # a 1x1 projection with that stride must land exactly on the residual branch's size
    if any(conv_out(f, 1, stride, 0, 1) != r for f, r in zip(fork[2:], res[2:])):
        return False
    what = {"identity": "the shortcut is the identity", "pool": "the shortcut only pools",
            "zero-pad": "the shortcut only zero-pads"}[add.kind]  # fmt: skip
    details, culprits = [], []
    for op in res_ops:
        g = conv_geometry(op, trace.modules)
        if g is None:
            continue
        bits = []
        if g["stride"][0] > 1:
            bits.append(f"stride {g['stride'][0]}")
        if res[1] != sc[1] and g["out"] == res[1] and g["in"] != g["out"]:
            bits.append(f"{g['out']} output channels")
        if bits:
            details.append(f"{_name(op)} has {' and '.join(bits)}")
            culprits.append(op.name)
    if not details:
        return False
    mm.cause = f"{'; '.join(details)} while {what}: residual {_fmt(res)} vs shortcut {_fmt(sc)}"
    mm.fix = _shortcut_prefix(trace, add) + _projection_code(fork[1], res[1], stride, nd)
    mm.culprits = culprits
    return True


def _shortcut_prefix(trace, add: ResidualAdd) -> str:
    """``path: `` when the shortcut is one named module the fix can replace, else nothing."""
    mods = [trace.ops[i] for i in add.shortcut_ops if trace.ops[i].kind == "module"]
    if not mods:
        return ""
    names = [o.name for o in mods]
    if len(names) == 1:
        return f"{names[0]}: "
    prefix = common_module_path(names)
    return f"{prefix}: " if prefix and prefix != add.block else ""


def _changes(trace, op: Op, channels: bool) -> bool:
    before, after = _in_out(trace, op)
    if before is None or len(before) < 3 or len(before) != len(after):
        return False
    return before[1] != after[1] if channels else before[2:] != after[2:]


@dataclass
class _Finding:
    """What one step of the pencil diagnosis found: why, which layers, and the settings that fix it."""

    causes: list[str] = field(default_factory=list)
    culprits: list[str] = field(default_factory=list)
    over: dict[int, dict] = field(default_factory=dict)  # op id -> the settings the fix gives it
    whole_projection: bool = False  # the shortcut is replaced by a projection instead

    def then(self, later: _Finding) -> _Finding:
        """This finding followed by ``later``: causes and culprits in order, settings merged."""
        return _Finding(
            self.causes + later.causes, self.culprits + later.culprits, _merged(self.over, later.over),
            self.whole_projection or later.whole_projection,
        )  # fmt: skip


def _merged(over: dict[int, dict], more: dict[int, dict]) -> dict[int, dict]:
    """Layer settings ``over`` with ``more`` applied on top (a new copy; neither is changed)."""
    out = {k: dict(v) for k, v in over.items()}
    for k, v in more.items():
        out.setdefault(k, {}).update(v)
    return out


def _explain_layers(trace, add: ResidualAdd, mm: Mismatch, both: str) -> None:
    res_ops = [trace.ops[i] for i in add.residual_ops]
    sc_ops = [trace.ops[i] for i in add.shortcut_ops]
    fork, res, sc = trace.values[add.fork].shape, mm.residual_shape, mm.shortcut_shape
    found = _padding_finding(trace, res_ops + sc_ops)
    found = found.then(_downsampling_finding(trace, res_ops, sc_ops, fork, found.over))
    found = found.then(_channel_finding(trace, res_ops, sc_ops, res[1], sc[1]))
    if not found.causes:
        _explain_generic(trace, add, mm, both)
        return
    mm.cause = "; ".join(found.causes) + f" ({both})"
    mm.culprits = list(dict.fromkeys(found.culprits))
    mm.fix = _layers_fix(trace, add, res_ops, sc_ops, found, fork[1], res[1], len(res) - 2)


def _padding_finding(trace, ops: list[Op]) -> _Finding:
    """Step 1: convs on either path that lack 'same' padding, and the padding each needs."""
    found = _Finding()
    for op in ops:
        if _is_unpadded(trace, op):
            g = conv_geometry(op, trace.modules)
            before, after = _in_out(trace, op)
            k, s, p = g["kernel"][0], g["stride"][0], g["padding"][0]
            extra = f" with stride {s}" if s > 1 else ""
            found.causes.append(f"{_name(op)} is a {k}×{k} conv{extra} with padding {p}: it shrinks "
                                f"{before[2]} to {after[2]}")  # fmt: skip
            found.culprits.append(op.name)
            found.over[op.id] = {"padding": _need_padding(g)}
    return found


def _path_sizes(trace, res_ops: list[Op], sc_ops: list[Op], fork, over: dict) -> tuple[list, list]:
    """Each spatial size at the end of the residual branch and of the shortcut, with ``over`` applied."""
    r = [_simulate(trace, res_ops, fork[d], d, over) for d in range(2, len(fork))]
    s = [_simulate(trace, sc_ops, fork[d], d, over) for d in range(2, len(fork))]
    return r, s


def _downsampling_finding(trace, res_ops: list[Op], sc_ops: list[Op], fork, over: dict) -> _Finding:
    """Step 2: with the padding in ``over`` fixed, do the paths still end at different sizes?

    Different downsampling factors bring the shortcut in line with the residual branch; equal
    factors that still differ round differently at an odd size. When the settings found do not make
    the sizes agree, the shortcut gets a whole projection."""
    r_sp, s_sp = _path_sizes(trace, res_ops, sc_ops, fork, over)
    if r_sp == s_sp or None in r_sp + s_sp:
        return _Finding()
    rs, ss = _stride_product(trace, res_ops, over), _stride_product(trace, sc_ops, over)
    if rs == ss and rs > 1:
        found = _rounding_finding(trace, res_ops, sc_ops, fork[2], r_sp[0], s_sp[0], over)
    elif ss < rs:
        found = _shortcut_strides_less(trace, res_ops, sc_ops, rs, ss, over)
    else:
        found = _shortcut_strides_more(trace, res_ops, sc_ops, rs, ss, over)
    if not found.whole_projection:
        r_sp, s_sp = _path_sizes(trace, res_ops, sc_ops, fork, _merged(over, found.over))
        found.whole_projection = r_sp != s_sp
    return found


def _rounding_finding(trace, res_ops: list[Op], sc_ops: list[Op], h: int, r: int, s: int,
                      over: dict) -> _Finding:  # fmt: skip
    """Both paths downsample by the same factor but round the odd size ``h`` differently (to ``r``
    and ``s``): the first pool that rounds down is set to ``ceil_mode``."""
    strided_res = [o for o in res_ops if _stride(trace, o, over) > 1]
    strided_sc = [o for o in sc_ops if _stride(trace, o, over) > 1]
    lo_op = (strided_sc if s < r else strided_res)[-1:]
    hi_op = (strided_res if s < r else strided_sc)[-1:]
    found = _Finding()
    found.causes.append(
        f"{_name(lo_op[0]) if lo_op else 'one path'} rounds {h} down to "
        f"{min(r, s)} while {_name(hi_op[0]) if hi_op else 'the other'} rounds "
        f"up to {max(r, s)}: the size entering the block is odd ({h})"
    )
    found.culprits += [o.name for o in lo_op + hi_op]
    for o in sc_ops + res_ops:
        pg = pool_geometry(o, trace.modules)
        if pg is not None and not pg["ceil_mode"] and _stride(trace, o, over) > 1:
            found.over[o.id] = {"ceil_mode": True}
            break
    return found


def _shortcut_strides_less(trace, res_ops: list[Op], sc_ops: list[Op], rs: int, ss: int,
                           over: dict) -> _Finding:  # fmt: skip
    """The residual branch downsamples by ``rs``, the shortcut by less (``ss``): the shortcut's
    conv takes the missing stride, or the shortcut gets a whole projection."""
    strided_res = [o for o in res_ops if _stride(trace, o, over) > 1]
    found = _Finding()
    found.causes.append(f"{_strides_text(trace, strided_res, over)}: the residual branch downsamples by {rs} "
                        f"but the shortcut by {ss}")  # fmt: skip
    found.culprits += [o.name for o in strided_res]
    conv = next((o for o in sc_ops if conv_geometry(o, trace.modules)), None)
    if conv is not None and rs % ss == 0:
        found.over[conv.id] = {"stride": _stride(trace, conv, over) * rs // ss}
        found.culprits.append(conv.name)
    else:
        found.whole_projection = True
    return found


def _shortcut_strides_more(trace, res_ops: list[Op], sc_ops: list[Op], rs: int, ss: int,
                           over: dict) -> _Finding:  # fmt: skip
    """The shortcut downsamples by ``ss``, more than the residual branch's ``rs``: the last strided
    shortcut layer that can give up the difference does (a pool that would stride 1 is removed)."""
    strided_sc = [o for o in sc_ops if _stride(trace, o, over) > 1]
    found = _Finding()
    found.causes.append(f"{_strides_text(trace, strided_sc, over)}: the shortcut downsamples by {ss} but the "
                        f"residual branch by {rs}")  # fmt: skip
    found.culprits += [o.name for o in strided_sc]
    for o in reversed(strided_sc):
        if ss % rs:
            break
        new = _stride(trace, o, over) * rs // ss
        if pool_geometry(o, trace.modules) is not None and new == 1:
            found.over[o.id] = {"remove": True}
            break
        if new >= 1 and _stride(trace, o, over) % (ss // rs) == 0:
            found.over[o.id] = {"stride": _stride(trace, o, over) // (ss // rs)}
            break
    return found


def _channel_finding(trace, res_ops: list[Op], sc_ops: list[Op], res_c: int, sc_c: int) -> _Finding:
    """Step 3: the paths carry ``res_c`` and ``sc_c`` channels. A shortcut projection of the wrong
    width is corrected; a shortcut that cannot change channels gets a whole projection."""
    found = _Finding()
    if res_c == sc_c:
        return found
    sc_chan = [o for o in sc_ops if _changes(trace, o, channels=True)]
    if sc_chan and conv_geometry(sc_chan[-1], trace.modules):
        proj = sc_chan[-1]
        found.causes.append(f"the projection {_name(proj)} outputs {sc_c} channels but the residual "
                            f"branch outputs {res_c}")  # fmt: skip
        found.culprits.append(proj.name)
        found.over[proj.id] = {"out_channels": res_c}
        return found
    res_chan = [o for o in res_ops if _changes(trace, o, channels=True)]
    last = res_chan[-1] if res_chan else None
    found.causes.append(f"{_name(last) if last else 'the residual branch'} outputs {res_c} channels but "
                        f"the shortcut carries {sc_c}")  # fmt: skip
    if last is not None:
        found.culprits.append(last.name)
    found.whole_projection = True
    return found


def _layers_fix(trace, add: ResidualAdd, res_ops: list[Op], sc_ops: list[Op], found: _Finding,
                cin: int, cout: int, nd: int) -> str:  # fmt: skip
    """The fix's lines: a whole projection for the shortcut when one is needed (the shortcut's own
    settings then go), and each layer's new settings."""
    fixes: list[str] = []
    over = found.over
    if found.whole_projection:
        stride = _stride_product(trace, res_ops, over)
        fixes.append(_shortcut_prefix(trace, add) + _projection_code(cin, cout, stride, nd))
        sc_ids = {o.id for o in sc_ops}
        over = {k: v for k, v in over.items() if k not in sc_ids}
    for op in res_ops + sc_ops:
        o = over.get(op.id)
        if o:
            fixes.append(_fix_line(trace, op, o, add, nd))
    return "\n".join(f for f in dict.fromkeys(fixes) if f)


def _strides_text(trace, ops: list[Op], over: dict) -> str:
    return ", ".join(f"{_name(o)} has stride {_stride(trace, o, over)}" for o in ops) or "no layer strides"


def _fix_line(trace, op: Op, o: dict, add: ResidualAdd, nd: int) -> str:
    if o.get("remove"):
        return f"{op.name}: nn.Identity()  # remove {short_label(op, trace.modules)}"
    g = conv_geometry(op, trace.modules)
    if "out_channels" in o and g is not None:
        s = o.get("stride", g["stride"][0])
        line = (f"{op.name}: nn.Conv{nd}d({g['in']}, {o['out_channels']}, kernel_size="
                f"{g['kernel'][0]}, stride={s}, bias=False)")  # fmt: skip
        for i in add.shortcut_ops:
            bn = trace.ops[i]
            if bn.id > op.id and bn.type.startswith("BatchNorm"):
                line += f"\n{bn.name}: nn.BatchNorm{nd}d({o['out_channels']})"
                break
        return line
    if "ceil_mode" in o:
        pg = pool_geometry(op, trace.modules)
        k, s = pg["kernel"][0], o.get("stride", pg["stride"][0])
        kind = "AvgPool" if "Avg" in op.type else "MaxPool"
        extra = ", count_include_pad=False" if kind == "AvgPool" else ""
        return f"{op.name}: nn.{kind}{nd}d({k}, stride={s}, ceil_mode=True{extra})"
    parts = [f"{k}={v}" for k, v in o.items()]
    return "\n".join(f"{op.name}: {p}" for p in parts)


def _explain_broadcast(trace, add: ResidualAdd, mm: Mismatch, both: str) -> None:
    res, sc = mm.residual_shape, mm.shortcut_shape
    small, small_ops, name = (res, add.residual_ops, "residual branch")
    if sum(sc) < sum(res):
        small, small_ops, name = (sc, add.shortcut_ops, "shortcut")
    squeezer = None
    for i in small_ops:
        op = trace.ops[i]
        b, a = _in_out(trace, op)
        if b is not None and len(a) == len(b) and any(x == 1 and y != 1 for x, y in zip(a, b)):
            squeezer = op
    where = f" at {_name(squeezer)} ({short_label(squeezer, trace.modules)})" if squeezer else ""
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
    last = None
    for i in add.residual_ops + add.shortcut_ops:
        op = trace.ops[i]
        b, a = _in_out(trace, op)
        if b is not None and b != a:
            last = op
    if last is not None:
        out = trace.values[last.outputs[0]].shape
        mm.cause = f"{_name(last)} ({short_label(last, trace.modules)}) makes {_fmt(out)}: {both}"
        mm.culprits = [last.name]
    else:
        mm.cause = both
    r, s = mm.residual_shape, mm.shortcut_shape
    if len(r) == len(s) and r[:-1] == s[:-1]:
        mm.fix = f"nn.Linear({s[-1]}, {r[-1]}, bias=False)  # as the shortcut projection"
    else:
        mm.fix = f"make the shortcut produce {_fmt(r)} (a projection on the shortcut path)"
