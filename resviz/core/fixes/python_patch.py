"""One-click fixes for models from Python (a file or a live module): a patched copy, in memory.

The diagnosis (:mod:`resviz.core.analysis.diagnose`) says each fix as code: ``name: nn.Sequential(...)``
(replace that module), ``name: padding=1`` (change a layer's attribute), or a bare
``nn.Sequential(...)`` when the shortcut is the identity and there is no module to replace. This
module turns those lines into patches and applies them to a *copy* of the model: replacements
and attributes directly, the bare projection by a torch.fx rewrite of the block that inserts it on
the shortcut operand of the add that fails. The user's model and file are never touched. A patch
is only offered once the patched copy re-analyses with that block clean and nothing newly broken;
it comes with the code to paste into the user's file.

The expressions are read with :mod:`ast` and built from ``torch.nn`` classes and number
arguments only, so nothing in a model's names or messages can run as code.
"""

from __future__ import annotations

import ast
import copy
import operator
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ResvizError

_LINE = re.compile(r"^(?:(?P<name>[\w.]+):\s*)?(?P<body>.+?)\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^(?P<key>[a-z_]+)=(?P<value>-?\d+|True|False)$")
_TUPLE_ATTRS = {"padding", "stride", "kernel_size", "dilation"}
_ADDS = {operator.add, operator.iadd, torch.add}
FIX_ATTR = "resviz_shortcut_fix"  # the inserted projection's name in a patched block


@dataclass
class ModelPatch:
    """One change to a copy of the model."""

    kind: str  # 'replace' (module at target) | 'set' (attributes of target) | 'insert' (at the add)
    target: str  # module path; for 'insert', the block
    expr: str = ""  # nn expression for 'replace' and 'insert'
    attrs: dict = field(default_factory=dict)  # for 'set'


@dataclass
class PatchResult:
    """A patched copy that analyses clean at ``block``, and what to paste into the user's file."""

    block: str
    model: nn.Module
    patches: list[ModelPatch]
    code: str  # what to paste into the user's file (the diagnosis's fix text)
    report: object  # the re-analysis of the patched copy


def parse_fix(fix: str, block: str) -> list[ModelPatch] | None:
    """The patches a diagnosis fix text stands for; None when it is advice in words."""
    patches: list[ModelPatch] = []
    for raw in fix.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m is None:
            return None
        name, body = m.group("name"), m.group("body").strip()
        if body.startswith("nn."):
            if _safe_expr(body) is None:
                return None
            patches.append(ModelPatch("replace", name, body) if name else ModelPatch("insert", block, body))
            continue
        a = _ASSIGN.match(body.replace(" ", ""))
        if a is None or not name:
            return None
        value = {"True": True, "False": False}.get(a.group("value"))
        patches.append(
            ModelPatch("set", name, attrs={a.group("key"): int(a.group("value")) if value is None else value})
        )
    return patches or None


def _safe_expr(text: str) -> ast.Call | None:
    """``text`` when it is only ``nn.X(...)`` calls with number/bool arguments, else None."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None

    def ok(node) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, (int, float, bool)) or node.value is None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return ok(node.operand)
        if isinstance(node, ast.Tuple):
            return all(ok(e) for e in node.elts)
        if isinstance(node, ast.Call):
            f = node.func
            return (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "nn"
                    and isinstance(getattr(nn, f.attr, None), type)
                    and all(ok(a) for a in node.args) and all(ok(k.value) for k in node.keywords))  # fmt: skip
        return False

    return tree if isinstance(tree, ast.Call) and ok(tree) else None


def build_expr(text: str) -> nn.Module:
    """The module an ``nn.X(...)`` fix expression describes (checked by :func:`_safe_expr`)."""
    tree = _safe_expr(text)
    if tree is None:
        raise ResvizError(f"not a module expression resviz can build: {text!r}")

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand)
        if isinstance(node, ast.Tuple):
            return tuple(value(e) for e in node.elts)
        cls = getattr(nn, node.func.attr)
        return cls(*[value(a) for a in node.args], **{k.arg: value(k.value) for k in node.keywords})

    return value(tree)


# ------------------------------------------------------------------------------------ applying


def apply_patches(model: nn.Module, patches: list[ModelPatch], block_input_shape=None) -> nn.Module:
    """A copy of ``model`` with ``patches`` applied; ``model`` itself is left as it was."""
    patched = copy.deepcopy(model)
    _keep_class_names(model, patched)
    for p in patches:
        if p.kind == "replace":
            _replace(patched, p.target, _like(build_expr(p.expr), patched, p.target))
        elif p.kind == "set":
            mod = patched.get_submodule(p.target)
            for key, v in p.attrs.items():
                old = getattr(mod, key, None)
                setattr(
                    mod, key, tuple([v] * len(old)) if key in _TUPLE_ATTRS and isinstance(old, tuple) else v
                )
        else:
            _insert(patched, p, block_input_shape)
    return patched


def _keep_class_names(model: nn.Module, copied: nn.Module) -> None:
    """A deep-copied fx block (an earlier fix) comes back named "GraphModule"; its class is its
    own (one per instance), so give it back the block's name that the graph and issues show."""
    import torch.fx as fx

    for name, mod in model.named_modules():
        if isinstance(mod, fx.GraphModule):
            twin = copied.get_submodule(name)
            if type(twin).__name__ != type(mod).__name__ and type(twin) is not fx.GraphModule:
                type(twin).__name__ = type(mod).__name__


def _like(module: nn.Module, model: nn.Module, near: str) -> nn.Module:
    """``module`` on the device and dtype of the parameters around ``near``."""
    ref = None
    parts = near.split(".")
    for k in range(len(parts), -1, -1):
        try:
            owner = model.get_submodule(".".join(parts[:k]))
        except AttributeError:
            continue
        ref = next(owner.parameters(), None)
        if ref is not None:
            break
    if ref is None:
        return module
    if ref.is_meta:
        return module.to_empty(device="meta")
    return module.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def _insert(model: nn.Module, p: ModelPatch, block_input_shape) -> None:
    """Rewrite block ``p.target`` with torch.fx so the failing add gets the projection on its
    shortcut operand (the operand whose shape differs from the residual branch's)."""
    import torch.fx as fx

    block = model.get_submodule(p.target) if p.target else model
    try:
        gm = fx.symbolic_trace(block)
    except Exception as exc:  # noqa: BLE001 - tracing runs the user's block, which can raise anything (data-dependent control flow and the like); the fix is refused with the error
        raise ResvizError(f"{p.target}: cannot rewrite this block with torch.fx ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None  # fmt: skip
    if block_input_shape is None:
        raise ResvizError(f"{p.target}: the block's input shape is unknown")
    proj = _like(build_expr(p.expr), model, p.target)
    shapes = _operand_shapes(gm, block_input_shape)
    target_node = next((n for n in gm.graph.nodes if n.name in shapes and len(set(shapes[n.name])) > 1), None)
    if target_node is None:
        raise ResvizError(f"{p.target}: found no add with two different shapes to fix")
    gm.add_module(FIX_ATTR, proj)
    res, sc = target_node.args[0], target_node.args[1]
    want = p.attrs.get("shortcut_shape")
    first, second = shapes[target_node.name][:2]
    if want is not None and first == tuple(want) != second:
        res, sc = sc, res
    elif want is None and _chain_length(sc) > _chain_length(res):  # the shortcut: fewer ops
        res, sc = sc, res
    with gm.graph.inserting_before(target_node):
        fixed = gm.graph.call_module(FIX_ATTR, (sc,))
    target_node.args = tuple(fixed if a is sc else a for a in target_node.args)
    gm.graph.lint()
    gm.recompile()
    p.attrs = {"operand": sc.name}
    if not p.target:
        raise ResvizError("the add that fails belongs to the model itself, not to a block")
    _replace(model, p.target, gm)


def _operand_shapes(gm, input_shape) -> dict[str, list[tuple]]:
    """Run the block on meta tensors and note the operand shapes of every add; an add whose
    operands do not fit hands on its first operand, so every later add is seen too."""
    import torch.fx as fx

    shapes: dict[str, list[tuple]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            if not _is_add(n):
                return super().run_node(n)
            args, _ = self.fetch_args_kwargs_from_env(n)
            tensors = [a for a in args[:2] if isinstance(a, torch.Tensor)]
            if len(tensors) == 2:
                shapes[n.name] = [tuple(t.shape) for t in tensors]
                if tensors[0].shape != tensors[1].shape:
                    return tensors[0].clone()
            return super().run_node(n)

    meta = copy.deepcopy(gm).to_empty(device="meta")
    with torch.no_grad():
        try:
            # node by node rather than Interpreter.run, which starts a tqdm monitor thread
            interp = Recorder(meta)
            interp.args_iter = iter([torch.empty(tuple(input_shape), device="meta")])
            for node in meta.graph.nodes:
                if node.op == "output":
                    break
                interp.env[node] = interp.run_node(node)
        except Exception as exc:  # noqa: BLE001 - this runs the user's block, which can raise anything on meta tensors; the fix is refused with the error
            raise ResvizError(
                f"could not run the block to find its add ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
    return shapes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def _is_add(node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return True
    return node.op == "call_method" and node.target in ("add", "add_")


def _chain_length(node) -> int:
    n = 0
    while node is not None and node.op != "placeholder" and n < 10_000:
        args = [a for a in node.args if hasattr(a, "op")]
        node = args[0] if args else None
        n += 1
    return n


# ----------------------------------------------------------------------------- offering a fix


def patch_for(model: nn.Module, report, mismatch) -> PatchResult:
    """A verified patched copy of ``model`` that mends ``mismatch`` (from ``report``).

    Raises ResvizError saying why when the fix is advice in words, cannot be applied, or does
    not mend the block when checked.
    """
    from ..analysis.pipeline import analyze

    patches = parse_fix("\n".join(mismatch.fix_edits), mismatch.block)
    if patches is None:
        raise ResvizError(f"{mismatch.block}: the fix is advice, not code resviz can apply")
    block = report.block(mismatch.block) if mismatch.block != "(model)" else None
    in_shape = block.input_shape if block is not None else report.input_shape
    for p in patches:
        if p.kind == "insert":
            p.attrs = {"shortcut_shape": tuple(mismatch.shortcut_shape)}
    patched = apply_patches(model, patches, in_shape)
    after = analyze(patched, report.input_shape, name=f"{report.model_name} (patched)")
    before_blocks = {m.block for m in report.mismatches}
    still = {m.block for m in after.mismatches}
    if mismatch.block in still or not still <= before_blocks or len(after.errors) > len(report.errors):
        raise ResvizError(f"{mismatch.block}: the patched model still does not add up "
                          f"({len(after.mismatches)} mismatches); the fix is shown as code only")  # fmt: skip
    # the diagnosis's own text is the code to paste: where it goes, then statements that run there
    return PatchResult(mismatch.block, patched, patches, mismatch.fix, after)
