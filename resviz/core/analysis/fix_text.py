"""A fix as a person pastes it: where it goes, and code that runs there.

The diagnosis (``diagnose.py``) decides *what* to change as a list of edits in a terse internal
form — ``path: nn.Conv2d(...)`` (replace a layer), ``path: stride=2`` (set an attribute), a bare
``nn.Sequential(...)`` (the block's new shortcut) — and :func:`render` turns them into text that
pastes: comment lines saying where (the module and, where known, the file:line that made it), then
statements on the loaded model (``model.layer2[0].downsample = nn.Sequential(...)``). A block that
adds its input inline (``out += identity``) has no shortcut module to replace: the text says to add
one in ``__init__`` and apply it in ``forward``, at the add's own line, with both lines written out.
"""

from __future__ import annotations

import ast
import linecache
import os
import re
from dataclasses import dataclass

from torch import nn

from ..tracing.records import ResidualAdd

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# attributes a block keeps its (optional) shortcut module in, torchvision's `downsample` first
_SLOTS = ("downsample", "shortcut", "skip", "short_cut", "proj", "projection", "residual")
_EDIT = re.compile(r"^([\w.]+): (.+)$")


@dataclass
class FixText:
    title: str
    where: str
    text: str


def module_expr(path: str, root: str = "model") -> str:
    """``layer1.1.conv3`` -> ``model.layer1[1].conv3``: an expression that pastes."""
    out = root
    for seg in path.split(".") if path else []:
        if seg.isdigit():
            out += f"[{seg}]"
        elif seg.isidentifier():
            out += f".{seg}"
        else:
            out += f"[{seg!r}]"
    return out


def render(trace, add: ResidualAdd, lines: list[str]) -> FixText:
    """The text of a fix made of the internal edit ``lines``."""
    model = _root_module(trace)
    body: list[str] = []
    titles: list[str] = []
    wheres: list[str] = []
    on_model = False
    for line in lines:
        m = _EDIT.match(line)
        if line.startswith("nn."):
            fix = _shortcut_fix(trace, add, model, line)
            on_model = on_model or fix.text.startswith("model")
            titles.append(fix.title)
            wheres.append(fix.where)
            body.append(fix.text)
            continue
        if m is None:  # advice, not code
            body.append(f"# {line}")
            titles.append(line[:1].upper() + line.split(" — ")[0][1:])
            named = re.match(r"give `([\w.]+)`", line)
            if named:
                wheres.append(f"`{named.group(1)}`")
            continue
        on_model = True
        path, rhs = m.groups()
        site = definition_site(model, path)
        wheres.append(f"`{path}`" + (f", {site}" if site else ""))
        made = f"  # set at {site}" if site else ""
        if "(" in rhs and rhs.split("(")[0].replace(".", "").isidentifier():
            code, _, remark = rhs.partition("  # ")
            made = f"  # {remark}" + (f"; set at {site}" if site else "") if remark else made
            body.append(f"{module_expr(path)} = {code}{made}")
            titles.append(f"Replace `{path}`" if not remark else f"Remove `{path}`")
        else:
            attr, _, value = rhs.partition("=")
            why = f"  # {attr}={value}" + (f"; set at {site}" if site else "")
            body.append(f"{module_expr(path)}.{attr} = {_attr_value(model, path, attr, value)}{why}")
            titles.append(f"Set `{path}`'s {attr} to {value}")
    head = ["# on the loaded model (`model`), or in the code that builds it:"] if on_model else []
    where = "; ".join(dict.fromkeys(w for w in wheres if w))
    if not where and add.source:  # advice only: it is about the block's forward, at its add
        where = f"`{add.block or '(model)'}`'s forward, {_at(add.source)}"
        head = [f"# in {where}: `{_source_text(add.source)}`"] if _source_text(add.source) else []
    return FixText(title="; ".join(dict.fromkeys(titles)), where=where, text="\n".join(head + body))


def _attr_value(model, path: str, attr: str, value: str) -> str:
    """A conv keeps stride/padding as tuples: write one of the right length."""
    try:
        current = getattr(model.get_submodule(path), attr) if model is not None else None
    except (AttributeError, KeyError):
        current = None
    if isinstance(current, int) and attr in ("stride", "padding", "dilation"):
        current = rules_tuple(model.get_submodule(path), current)
    if isinstance(current, tuple) and value.strip().lstrip("-").isdigit():
        v = value.strip()
        return "(" + ", ".join([v] * len(current)) + ("," if len(current) == 1 else "") + ")"
    return value


def rules_tuple(module: nn.Module, value: int) -> tuple | int:
    """A conv's int hyper-parameter as the tuple its constructor would have made."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return (value,) * len(module.kernel_size)
    return value


def _shortcut_fix(trace, add: ResidualAdd, model, code: str) -> FixText:
    """The block's new shortcut module ``code``: into its empty shortcut slot when it has one
    (torchvision's ``downsample = None``), else added in ``__init__`` and applied in ``forward``."""
    block = _submodule(model, add.block)
    bname = add.block or "(model)"
    if block is None:  # an archive: no Python class to point at
        return FixText(f"Give `{bname}` a projection shortcut", f"`{bname}`",
                       f"# the new shortcut of `{bname}`, in the code the archive was made from:\n{code}")  # fmt: skip
    cls = type(block).__name__
    slot = _empty_slot(block)
    if slot is not None:
        path = f"{add.block}.{slot}" if add.block else slot
        site = definition_site(model, path)
        where = f"`{path}`" + (f", {site}" if site else "")
        made = f"  # set at {site}" if site else ""
        return FixText(f"Give `{bname}` a projection shortcut", where,
                       f"{module_expr(path)} = {code}{made}")  # fmt: skip
    init = _class_site(type(block))
    at = _at(add.source)
    line = _source_text(add.source)
    applied = _apply_line(trace, add, line) if line else None
    text = [
        f"# `{bname}` ({cls}{', ' + init if init else ''}) adds its skip unchanged"
        + (f" at {at}: `{line}`" if line else "") + ".",
        f"# Add a shortcut module in {cls}.__init__:",
        f"self.shortcut = {code}",
        "# and apply it to the skip in forward"
        + (f", at {at}:" if at else ":"),
        applied or "#     ... + self.shortcut(<the skip>)",
    ]  # fmt: skip
    where = f"{cls}.__init__ and forward" + (f" ({at})" if at else "")
    return FixText(f"Add a shortcut module to `{bname}`", where, "\n".join(text))


def _apply_line(trace, add: ResidualAdd, line: str) -> str | None:
    """The add's source line with ``self.shortcut(...)`` around the skip operand."""
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return None
    idx = trace.ops[add.op].inputs.index(add.shortcut) if add.shortcut in trace.ops[add.op].inputs else 1
    text = line.strip()
    for node in ast.walk(tree):
        operands = None
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
            operands = [node.target, node.value]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "add", "add_") and len(node.args) >= 2:  # fmt: skip
            operands = node.args[:2]
        if operands is None:
            continue
        target = operands[idx]
        seg = ast.get_source_segment(text, target)
        if seg is None:
            return None
        if isinstance(node, ast.AugAssign) and idx == 0:  # `sc += f(x)`: rewrite as a sum
            value = ast.get_source_segment(text, node.value)
            return f"{seg} = self.shortcut({seg}) + {value}"
        start = _offset(text, target.lineno, target.col_offset)
        end = _offset(text, target.end_lineno, target.end_col_offset)
        return text[:start] + f"self.shortcut({seg})" + text[end:]
    return None


def _offset(text: str, lineno: int, col: int) -> int:
    lines = text.splitlines(keepends=True)
    return sum(len(x) for x in lines[: lineno - 1]) + col


def _empty_slot(block: nn.Module) -> str | None:
    """An attribute that holds the block's optional shortcut module and is empty (None)."""
    for name in _SLOTS:
        if name in block._modules and block._modules[name] is None:
            return name
        if name in block.__dict__ and block.__dict__[name] is None:
            return name
    return None


def _root_module(trace):
    """The live eager model the fix is written against, or None (an archive, a plain report)."""
    modules = getattr(trace, "modules", None)
    root = modules.of(trace.calls[0]) if modules is not None and trace.calls else None
    return root if isinstance(root, nn.Module) and not hasattr(root, "_c") else None


def _submodule(model, path: str):
    if model is None:
        return None
    try:
        return model.get_submodule(path) if path else model
    except (AttributeError, KeyError):
        return None


def definition_site(model, path: str) -> str:
    """``blocks.py:151 (Bottleneck)``: the line that set the module at ``path``."""
    if model is None or not path:
        return ""
    parts = path.split(".")
    i = len(parts) - 1
    while i > 0 and isinstance(_submodule(model, ".".join(parts[:i])), _CONTAINERS):
        i -= 1
    owner = _submodule(model, ".".join(parts[:i]))
    if owner is None:
        return ""
    attr = parts[i]
    pat = re.compile(rf"\bself\.{re.escape(attr)}\s*(:[^=]*)?=(?!=)|setattr\(\s*self\s*,\s*['\"]{re.escape(attr)}['\"]")
    for cls in type(owner).__mro__:
        if cls.__module__.startswith("torch.") or cls is object:
            break
        for code in _methods(cls):
            first, last = _line_range(code)
            for ln in range(first, last + 1):
                if pat.search(linecache.getline(code.co_filename, ln)):
                    return f"{_rel(code.co_filename)}:{ln} ({cls.__name__})"
    site = _class_site(type(owner))
    return f"{site} ({type(owner).__name__})" if site else ""


def _methods(cls) -> list:
    """Code objects of the functions ``cls`` defines itself, ``__init__`` first. Read from the code
    objects and linecache, not ``inspect.getsource`` (which parses the whole file each time)."""
    funcs = [v for v in vars(cls).values() if hasattr(v, "__code__")]
    funcs.sort(key=lambda f: f.__name__ != "__init__")
    return [f.__code__ for f in funcs]


def _line_range(code) -> tuple[int, int]:
    lines = [ln for _, _, ln in code.co_lines() if ln is not None] or [code.co_firstlineno]
    return min(lines), max(lines)


def _class_site(cls) -> str:
    """Where ``cls`` is defined, near enough: its ``__init__`` (or first method)."""
    codes = _methods(cls)
    if not codes:
        return ""
    return f"{_rel(codes[0].co_filename)}:{codes[0].co_firstlineno}"


def _rel(file: str | None) -> str:
    if not file:
        return "?"
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return file
    return file if rel.startswith("..") else rel


def _at(source) -> str:
    return f"{_rel(source[0])}:{source[1]}" if source else ""


def _source_text(source) -> str:
    if not source:
        return ""
    return linecache.getline(source[0], source[1]).strip()


def layer_code(module: nn.Module, width: int, *, out: bool = True) -> str | None:
    """Code for a layer like ``module`` whose output width (``out``) or normalised width is
    ``width``: the fix for a layer that makes, or normalises, the wrong number of features."""
    base = next((c for c in type(module).__mro__ if c.__module__.startswith("torch.nn")), None)
    if base is None:
        return None
    t = f"nn.{base.__name__}"
    if isinstance(module, nn.modules.conv._ConvNd):
        return f"{t}({', '.join(conv_args(module, width))})"
    if isinstance(module, nn.Linear):
        return f"{t}({module.in_features}, {width}, bias={module.bias is not None})"
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return f"{t}({width})"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        eps = "" if module.eps == 1e-5 else f", eps={module.eps}"
        return f"{t}({width}{eps})"
    if isinstance(module, nn.GroupNorm):
        return f"{t}({module.num_groups}, {width})" if width % module.num_groups == 0 else None
    return None


def conv_args(conv: nn.modules.conv._ConvNd, width: int) -> list[str]:
    """The constructor arguments of ``conv`` with ``width`` output channels, defaults left out
    (groups too, when ``width`` cannot be split into the conv's groups)."""
    k, s, p, d = _one(conv.kernel_size), _one(conv.stride), _one(conv.padding), _one(conv.dilation)
    groups = conv.groups if conv.groups == 1 or width % conv.groups == 0 else 1
    args = [str(conv.in_channels), str(width), f"kernel_size={k}"]
    if s != 1:
        args.append(f"stride={s}")
    if p != 0:
        args.append(f"padding={p!r}")
    if d != 1:
        args.append(f"dilation={d}")
    if groups != 1:
        args.append(f"groups={groups}")
    args.append(f"bias={conv.bias is not None}")
    return args


def norm_width(module: nn.Module) -> int | None:
    """The number of features a norm layer is built for (None for other layers)."""
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return module.num_features
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return module.normalized_shape[0]
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    return None


def _one(v):
    if isinstance(v, (tuple, list)) and len(set(v)) == 1:
        return v[0]
    return tuple(v) if isinstance(v, list) else v
