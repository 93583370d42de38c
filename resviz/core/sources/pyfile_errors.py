"""Turning what went wrong in the user's Python file into a short paragraph, never a traceback.

Every message names the user's own file and line (``model.py:12``), quotes that line, and says
what to do about it in the terms a ResNet author thinks in: a block whose ``super()`` names the
wrong class, a forgotten ``super().__init__()``, a relative import outside a package, a missing
package, script code that exits while resviz imports the file. Anything not recognised is still
pinned to the innermost frame of the user's code, with the library function that raised it.
"""

from __future__ import annotations

import builtins
import difflib
import os
import re
import sys
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LoadError

if TYPE_CHECKING:
    from .pyfile_import import _UserFile

_MAX_MESSAGE_LINES = 12


def _kwargs_example(names: list[str], classes: list[str] = ()) -> str:
    """``--kwargs '{"block": "BasicBlock", "num_blocks": ...}'``: block classes named when known."""
    blocks = [c for c in classes if "block" in c.lower() or "bottleneck" in c.lower()] or list(classes)
    values = {n: f'"{blocks[0]}"' for n in names if blocks and "block" in n.lower() and not n.startswith("num")}
    body = ", ".join(f'"{n}": {values.get(n, "...")}' for n in names)
    return "--kwargs '{" + body + "}'"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _clip(text: str) -> str:
    lines = text.strip().splitlines()
    if len(lines) > _MAX_MESSAGE_LINES:
        lines = [*lines[:_MAX_MESSAGE_LINES], "    ..."]
    text = "\n".join(lines)
    return text if len(text) < 1500 else text[:1500] + " ..."


def _source_line(filename: str, lineno: int) -> str:
    try:
        with open(filename, encoding="utf-8-sig", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if i == lineno:
                    return line.rstrip("\n")
    except OSError:
        pass
    return ""


def _syntax_error_message(exc: SyntaxError, user: _UserFile, text: str | None = None) -> str:
    filename = exc.filename or str(user.real)
    where = user.display(filename)
    line = exc.lineno or 0
    col = exc.offset or 0
    kind = "indentation error" if isinstance(exc, IndentationError) else "syntax error"
    if isinstance(exc, TabError):
        kind = "tab error"
    position = f":{line}:{col}" if line and col else f":{line}" if line else ""
    msg = f"{where}{position}: {kind}: {exc.msg}"
    src = exc.text
    if src is None and line:
        src = _source_line(filename, line)
    if src:
        src = src.rstrip("\n")
        stripped = src.lstrip()
        indent = len(src) - len(stripped)
        msg += "\n    " + stripped
        if col > 0:
            end = exc.end_offset if getattr(exc, "end_offset", None) and (exc.end_lineno == exc.lineno) else None
            width = max(1, (end - col) if end and end > col else 1)
            caret_col = max(0, col - 1 - indent)
            msg += "\n    " + " " * caret_col + "^" * min(width, max(1, len(stripped) - caret_col))
    return msg


def _system_exit_message(exc: SystemExit, user: _UserFile, doing: str = "importing or building it") -> str:
    frame = _user_frame(exc, user)
    where = f"{user.display(frame[0])}:{frame[1]}" if frame else user.given
    return (
        f"{where} exits the program (SystemExit {exc.code!r}) while resviz was {doing}. "
        "Code that runs as a script (argument parsing, training loops, sys.exit) belongs under "
        '`if __name__ == "__main__":`, which resviz does not run; a model must not exit.'
    )


# True in resviz's child process (:mod:`resviz.core.session.isolated_child`), which the terminal's Ctrl-C
# never reaches: a KeyboardInterrupt there can only come from the user's code. In any other
# process it is the user's Ctrl-C when one was noted (pyfile_import.ctrl_c_pressed) and passes
# through; raised by the code itself (or off the main thread) it is the code's failure.
IN_CHILD = False


def user_failure(exc: BaseException, user: _UserFile, doing: str) -> LoadError:
    """The LoadError for anything the user's code raised while resviz was ``doing`` something
    ("importing model.py", "building model.py:Net", "tracing model.py:Net"): SystemExit, a
    BaseException that is not an Exception, or any Exception.

    Re-raises what must not be taken for the user's code: a real Ctrl-C and resviz's own
    :class:`~resviz.core.errors.Terminated`.
    """
    from ..errors import Terminated
    from .pyfile_import import ctrl_c_pressed

    if isinstance(exc, Terminated) or (isinstance(exc, KeyboardInterrupt) and not IN_CHILD
                                       and ctrl_c_pressed()):  # fmt: skip
        raise exc
    if isinstance(exc, SystemExit):
        return LoadError(_system_exit_message(exc, user, doing))
    return LoadError(_explain(exc, user, doing=f"while {doing}"))


def _frames(exc: BaseException) -> list[tuple[types.FrameType, int]]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return out


def _user_frame(exc: BaseException, user: _UserFile) -> tuple[str, int, str, types.FrameType] | None:
    """The innermost frame in the user's file or directory: (filename, line, qualname, frame)."""
    for frame, lineno in reversed(_frames(exc)):
        filename = frame.f_code.co_filename
        if user.owns(filename):
            code = frame.f_code
            qualname = getattr(code, "co_qualname", code.co_name)
            return filename, lineno, qualname, frame
    return None


def _enclosing_class(qualname: str) -> str | None:
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    return parts[-2] if len(parts) >= 2 else None


# torch's wrappers that every call passes through under `with torch.device(...)`: never the culprit
_PASS_THROUGH = ("torch/utils/_device.py", "torch/overrides.py", "torch/_tensor.py")


def _raised_in(exc: BaseException, user: _UserFile) -> str:
    """' (raised in Conv2d.__init__, torch/nn/modules/conv.py)' when the error came from library code."""
    frames = [
        (f, n) for f, n in _frames(exc)
        if not f.f_code.co_filename.replace(os.sep, "/").endswith(_PASS_THROUGH)
    ]
    if not frames:
        return ""
    frame, _ = frames[-1]
    filename = frame.f_code.co_filename
    if user.owns(filename):
        return ""
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    short = filename.replace(os.sep, "/")
    for marker in ("site-packages/", "dist-packages/", "lib/python"):
        if marker in short:
            short = short.split(marker, 1)[1]
            break
    if os.path.realpath(filename).startswith(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))):
        return ""
    return f" (raised in {qualname}, {short})"


_SUPER_CALL = re.compile(r"super\(\s*([A-Za-z_][\w.]*)\s*,")
_UNINITIALISED = re.compile(
    r"'(\w+)' object has no attribute '(_parameters|_buffers|_modules|_non_persistent_buffers_set|"
    r"training|_forward_hooks|_forward_pre_hooks|_backward_hooks|_state_dict_hooks|"
    r"_load_state_dict_pre_hooks|_is_full_backward_hook)'"
)
_MISSING_ARGS = re.compile(r"(\S+)\(\) missing (\d+) required (?:positional|keyword-only) arguments?: (.*)")


def _explain(exc: BaseException, user: _UserFile, *, doing: str) -> str:
    """One short paragraph about ``exc`` that points at the user's own code."""
    if isinstance(exc, SyntaxError):  # raised while importing a sibling file
        return _syntax_error_message(exc, user)
    if isinstance(exc, LoadError):
        return str(exc)
    frame = _user_frame(exc, user)
    if frame is None:
        return _explain_without_frame(exc, user, doing)
    site = _site(exc, user, frame)
    for explain in _MISTAKES:  # the mistakes ResNet authors make, most specific first
        text = explain(exc, site, user)
        if text is not None:
            return text
    if not isinstance(exc, Exception):  # GeneratorExit, KeyboardInterrupt, a BaseException subclass
        return f"{site.where} {site.scope}: {_base_exception_text(exc, doing)}{site.shown}"
    return (
        f"{site.where} {site.scope}: {type(exc).__name__}: {_clip(site.message)}{_raised_in(exc, user)}"
        f"{_reached_from(exc, user, site.filename, site.qualname)}{site.shown}"
    )


@dataclass(frozen=True)
class _Site:
    """Where in the user's code an error was raised, and its words, as messages quote them."""

    filename: str
    lineno: int
    qualname: str
    frame: types.FrameType
    where: str  # model.py:12
    scope: str  # "at module level" / "in Block.__init__"
    code_line: str  # the line, stripped
    shown: str  # the line as a message ends with it ("" when unreadable)
    message: str  # str(exc)
    cls: str | None  # the class the function is defined in


def _site(exc: BaseException, user: _UserFile, frame: tuple[str, int, str, types.FrameType]) -> _Site:
    filename, lineno, qualname, frame_obj = frame
    code_line = _source_line(filename, lineno).strip()
    return _Site(
        filename=filename, lineno=lineno, qualname=qualname, frame=frame_obj,
        where=f"{user.display(filename)}:{lineno}",
        scope="at module level" if qualname == "<module>" else f"in {qualname}",
        code_line=code_line, shown=f"\n    {code_line}" if code_line else "", message=str(exc),
        cls=_enclosing_class(qualname),
    )


def _wrong_super(exc: BaseException, site: _Site, user: _UserFile) -> str | None:
    """``super(OtherBlock, self).__init__()`` inside the wrong class (a copied block)."""
    m = _SUPER_CALL.search(site.code_line)
    if not m or not (
        (isinstance(exc, TypeError) and "super(type, obj)" in site.message)
        or (isinstance(exc, NameError) and getattr(exc, "name", None) == m.group(1))
    ):
        return None
    named, cls = m.group(1), site.cls
    inside = f"inside class {cls}" if cls else f"in {site.qualname}"
    if isinstance(exc, NameError):
        problem = f"names the class {named}, which does not exist in {user.display(site.filename)}"
    else:
        problem = f"names the class {named}, but it is {inside}"
    fix_class = f"super({cls}, self).__init__()" if cls else None
    return (
        f"{site.where} {site.scope}: `super({named}, self)` {problem}. super() must name the class it "
        f"is written in{f' ({cls})' if cls else ''}; this happens when a block is copied from another "
        f"one and renamed. Write `super().__init__()`"
        + (f" (or `{fix_class}`)" if fix_class else "")
        + f" instead.{site.shown}"
    )


def _module_not_initialised(exc: BaseException, site: _Site, user: _UserFile) -> str | None:
    """A forgotten ``super().__init__()``: the module is used before nn.Module set it up."""
    if not isinstance(exc, AttributeError) or not (
        "before Module.__init__() call" in site.message or _UNINITIALISED.search(site.message)
    ):
        return None
    owner = site.cls or "the class"
    return (
        f"{site.where} {site.scope}: nn.Module.__init__() has not run yet when this line uses the "
        f"module ({site.message}). Add `super().__init__()` as the first line of "
        f"{owner}.__init__.{site.shown}"
    )


def _import_problem(exc: BaseException, site: _Site, user: _UserFile) -> str | None:
    """A missing package, a sibling module not found, a relative import outside a package, or a
    name the imported module does not have."""
    if not isinstance(exc, ImportError):
        return None
    filename, lineno, shown = site.filename, site.lineno, site.shown
    if isinstance(exc, ModuleNotFoundError) and _is_import(site.code_line):
        return _module_not_found_message(exc, user, filename, lineno, site.code_line)
    if "no known parent package" in site.message:
        base = os.path.basename(filename)
        return (
            f"{user.display(filename)} line {lineno} uses a relative import, which works only inside "
            f"a package: add an empty __init__.py next to {base}, or import without the leading "
            f"dot (e.g. `from blocks import ...`).{shown}"
        )
    if not isinstance(exc, ModuleNotFoundError) and _is_import(site.code_line):
        return f"{user.display(filename)} line {lineno}: {_import_error_text(exc)}.{shown}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (
            f"{site.where} {site.scope} imports {exc.name}, which is not installed in this environment "
            f"(pip install {exc.name.split('.')[0]}).{shown}"
        )
    return None


def _undefined_name(exc: BaseException, site: _Site, user: _UserFile) -> str | None:
    """A NameError, with the closest name that is defined where it was raised."""
    if not isinstance(exc, NameError):
        return None
    name = getattr(exc, "name", None) or _name_from_message(site.message)
    if name:
        pool = set(site.frame.f_locals) | set(site.frame.f_globals) | set(dir(builtins))
        close = difflib.get_close_matches(name, sorted(pool), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        what = f"the name '{name}' is not defined{hint}"
    else:
        what = site.message
    return f"{site.where} {site.scope}: {what} (NameError).{site.shown}"


def _endless_recursion(exc: BaseException, site: _Site, user: _UserFile) -> str | None:
    """A RecursionError whose deepest repeated line is in the user's code (a class that builds
    an instance of itself)."""
    if not isinstance(exc, RecursionError):
        return None
    counts: dict[tuple[str, int], int] = {}
    for f, n in _frames(exc):
        if user.owns(f.f_code.co_filename):
            key = (f.f_code.co_filename, n)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    (rfile, rline), times = max(counts.items(), key=lambda kv: kv[1])
    if times <= 10:
        return None
    rcode = _source_line(rfile, rline).strip()
    return (
        f"{user.display(rfile)}:{rline}: endless recursion (RecursionError): this line "
        f"runs again before it finishes, {times} times deep, so building never ends "
        f"(does a class create an instance of itself?).\n    {rcode}"
    )


def _missing_arguments(exc: BaseException, site: _Site, user: _UserFile) -> str | None:
    """A call without its required arguments (a block built with too few)."""
    mm = _MISSING_ARGS.search(site.message) if isinstance(exc, TypeError) else None
    if not mm:
        return None
    return (
        f"{site.where} {site.scope}: {mm.group(1)}() is called without {mm.group(2)} required "
        f"argument{'s' if mm.group(2) != '1' else ''} ({mm.group(3)}).{site.shown}"
    )


_MISTAKES = (_wrong_super, _module_not_initialised, _import_problem, _undefined_name,
             _endless_recursion, _missing_arguments)


def _reached_from(exc: BaseException, user: _UserFile, filename: str, qualname: str) -> str:
    """'; reached while importing model.py, from line 47: test()' for import-time calls."""
    if qualname == "<module>" and os.path.realpath(filename) == str(user.real):
        return ""
    for frame, lineno in _frames(exc):
        code = frame.f_code
        if os.path.realpath(code.co_filename) == str(user.real) and code.co_name == "<module>":
            line = _source_line(code.co_filename, lineno).strip()
            return f"; reached while importing {user.name}, from line {lineno}" + (f": {line}" if line else "")
    return ""


def _base_exception_text(exc: BaseException, doing: str) -> str:
    """Why a BaseException that is not an Exception stops resviz, in words."""
    name = type(exc).__name__
    said = f" ({_clip(str(exc))})" if str(exc) else ""
    if isinstance(exc, KeyboardInterrupt):
        return (
            f"the code raises KeyboardInterrupt{said} itself {doing} (no Ctrl-C was pressed), so the "
            "model cannot be checked. Raise an Exception subclass to report an error."
        )
    return (
        f"the code raises {name}{said} {doing}. {name} is a BaseException but not an Exception, "
        "the kind meant to stop a program (or a generator), not to report an error, so the model "
        "cannot be checked. Raise an Exception subclass (ValueError, RuntimeError, ...) instead."
    )


def _explain_without_frame(exc: BaseException, user: _UserFile, doing: str) -> str:
    message = str(exc)
    if not isinstance(exc, Exception):
        return f"{user.given}: {_base_exception_text(exc, doing)}"
    mm = _MISSING_ARGS.search(message)
    if isinstance(exc, TypeError) and mm:
        names = re.findall(r"'(\w+)'", mm.group(3))
        return (
            f"{doing}: {mm.group(1)}() needs {mm.group(2)} argument{'s' if mm.group(2) != '1' else ''} "
            f"that {'were' if mm.group(2) != '1' else 'was'} not given: {', '.join(names)}. Pass them "
            f"with {_kwargs_example(names)}."
        )
    return f"{user.given}: {doing}: {type(exc).__name__}: {_clip(message)}{_raised_in(exc, user)}"


def _is_import(code_line: str) -> bool:
    return bool(re.match(r"(from\s+\S+\s+)?import\s", code_line))


def _name_from_message(message: str) -> str | None:
    m = re.search(r"name '(\w+)' is not defined", message)
    return m.group(1) if m else None


def _import_error_text(exc: ImportError) -> str:
    text = _first_line(str(exc))
    text = re.sub(r" \((/[^)]*|[A-Za-z]:\\[^)]*)\)$", "", text)  # drop the module's absolute path
    m = re.search(r"cannot import name '(\w+)' from '([\w.]+)'", text)
    if m:
        mod = sys.modules.get(m.group(2))
        if mod is not None:
            close = difflib.get_close_matches(m.group(1), [n for n in dir(mod) if not n.startswith("_")], n=1)
            if close:
                text += f" (did you mean '{close[0]}'?)"
    return text


def _module_not_found_message(exc: ModuleNotFoundError, user: _UserFile, filename: str, lineno: int,
                              code_line: str) -> str:
    missing = exc.name or _first_line(str(exc))
    top = missing.split(".")[0]
    where = f"{user.display(filename)} line {lineno}"
    directory = os.path.dirname(os.path.realpath(filename))
    if os.path.exists(os.path.join(directory, top + ".py")) or os.path.isdir(os.path.join(directory, top)):
        msg = (
            f"{where} imports {missing}, which was not found: {top} next to "
            f"{os.path.basename(filename)} has no module {missing.split('.', 1)[-1]}."
        )
    else:
        msg = f"{where} imports {missing}, which is not installed in this environment."
        if top == "torchvision":
            msg += (
                " resviz does not need torchvision: its zoo has torchvision's ResNets (try "
                "`resviz check resnet18`), or install torchvision (pip install torchvision)."
            )
        else:
            msg += (
                f" Install it (pip install {top}), or if it is a file of yours, put {top}.py next to "
                f"{os.path.basename(filename)}."
            )
    return f"{msg}\n    {code_line}"
