"""Reading model archives: TorchScript, torch.export and torch.save files.

The content is sniffed, not the extension: a ``.pt`` can be any of the three. A plain
``torch.save`` file is first read with ``weights_only=True``; when it turns out to hold only
weights (a state dict, perhaps inside a checkpoint dict) the user is told to give the model code,
and when it holds a pickled model object it is only unpickled with ``trust=True``, because
unpickling runs code named by the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ..errors import LoadError, NeedsTrust, ResvizError
from ..files import check_readable_file
from ..shapes import format_shape

__all__ = ["ArchiveResult", "READS", "load_archive", "sniff"]

READS = (
    "resviz reads zoo names (such as resnet18), .toml/.json spec files, .py files (model.py or "
    "model.py:ClassName) and TorchScript / torch.export / torch.save archives"
)

_MAX_SAFETENSORS_HEADER = 100_000_000
_MAX_PICKLE_BYTES = 1 << 30  # a pickle resviz reads whole (data.pkl, traced_inputs.pkl)
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # torch.save, old format

# Keys under which checkpoints usually keep the model's weights.
_CHECKPOINT_KEYS = (
    "state_dict", "model_state_dict", "model_state", "model", "net", "network", "module",
    "weights", "params", "ema", "model_ema", "student", "teacher",
)


@dataclass
class ArchiveResult:
    kind: str  # 'torchscript' | 'export' | 'pickle'
    module: nn.Module | None
    exported: object | None  # torch.export.ExportedProgram
    input_shape: tuple[int, ...] | None
    rebuild: Callable[[str], nn.Module] | None
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Sniffing


def _display(path: Path, given: str | None) -> str:
    return given if given else str(path)


def sniff(path: str | os.PathLike[str], given: str | None = None) -> str:
    """What kind of file ``path`` is: 'torchscript', 'export', 'torch.save', 'legacy', 'pickle',
    'safetensors', 'hdf5', 'onnx' — or a :class:`LoadError` saying why it is none of them."""
    path = Path(path)
    name = _display(path, given)
    head, size = _read_head(path, name)
    if size == 0:
        raise LoadError(f"{name} is empty (0 bytes); expected a model file: {READS}.")
    if head.startswith(_ZIP_MAGIC) or head.startswith(_EMPTY_ZIP_MAGIC):
        return _sniff_zip(path, name)
    kind = _kind_of_head(head, size) or ("onnx" if path.suffix.lower() == ".onnx" else None)
    if kind is None:
        raise LoadError(
            f"{name} is not a model file resviz can read: it is not a zip archive (the format of "
            f"torch.save, torch.jit.save and torch.export.save) nor any other known format "
            f"(it starts with {_show_bytes(head[:12])}). Expected: {READS}."
        )
    return kind


def _read_head(path: Path, name: str) -> tuple[bytes, int]:
    """The first 64 bytes of the file and its size; a :class:`LoadError` in words when it is a
    directory, missing, unreadable or not a regular file."""
    try:
        if path.is_dir():
            raise LoadError(_directory_message(path, name))
        check_readable_file(path, name)  # never open a FIFO (it blocks) or a device
        with open(path, "rb") as fh:
            return fh.read(64), os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise LoadError(f"no such file: {name}.") from None
    except PermissionError:
        raise LoadError(f"cannot read {name}: permission denied.") from None
    except IsADirectoryError:
        raise LoadError(_directory_message(path, name)) from None
    except OSError as exc:
        raise LoadError(f"cannot read {name}: {exc.strerror or exc}.") from None
    except ResvizError as exc:
        raise LoadError(str(exc)) from None


def _kind_of_head(head: bytes, size: int) -> str | None:
    """The kind of a file that is not a zip archive, by its first bytes: 'legacy' (torch.save's
    old format), 'pickle', 'safetensors', 'hdf5'; None when none of them."""
    if head.startswith(_LEGACY_MAGIC):
        return "legacy"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if _is_safetensors(head, size):
        return "safetensors"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    return None


def _show_bytes(data: bytes) -> str:
    if data and all(32 <= b < 127 or b in (9, 10, 13) for b in data):
        return repr(data.decode("ascii"))
    return data.hex(" ")


def _directory_message(path: Path, name: str) -> str:
    msg = f"{name} is a directory, not a model file."
    try:
        files = sorted(
            p.name for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in {".py", ".toml", ".json", ".pt", ".pth", ".pt2", ".ts"}
        )
    except OSError:
        files = []
    if files:
        shown = ", ".join(os.path.join(name, f) for f in files[:4])
        msg += f" Give one of the files in it, e.g. {shown}."
    return msg + f" ({READS}.)"


def _zip_names(path: Path, name: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise LoadError(
            f"{name} looks like a zip archive (the format of torch.save, torch.jit.save and "
            f"torch.export.save) but it is truncated or corrupt ({exc}). Was the download or the "
            "save interrupted?"
        ) from None


def _sniff_zip(path: Path, name: str) -> str:
    names = _zip_names(path, name)
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return "torchscript"
    if "archive_format" in tails or any(
        t.startswith("models/") and t.endswith(".json") for t in tails
    ) or any(t.endswith("serialized_exported_program.json") for t in tails):
        return "export"
    if "data.pkl" in tails:
        return "torch.save"
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    raise LoadError(
        f"{name} is a zip archive but not one written by torch.save, torch.jit.save or "
        f"torch.export.save (it contains {shown or 'nothing'}). Expected: {READS}."
    )


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


# --------------------------------------------------------------------------------------------
# Loading


def load_archive(path: str | os.PathLike[str], *, given: str | None = None, trust: bool = False,
                 device: str = "meta") -> ArchiveResult:
    """Load an archive of any supported kind; raises :class:`LoadError` in words otherwise."""
    path = Path(path)
    name = _display(path, given)
    kind = sniff(path, given)
    if kind == "torchscript":
        return _load_torchscript(path, name)
    if kind == "export":
        return _load_export(path, name, trust=trust)
    if kind in ("torch.save", "legacy"):
        return _load_torch_save(path, name, trust=trust, device=device)
    if kind == "pickle":
        return _load_raw_pickle(path, name, trust=trust, device=device)
    if kind == "safetensors":
        raise LoadError(_weights_only_message(name, _safetensors_shapes(path, name), None))
    if kind == "hdf5":
        raise LoadError(
            f"{name} is an HDF5 file (Keras or similar), not a PyTorch model. {READS}."
        )
    raise LoadError(
        f"{name} is an ONNX model; resviz reads PyTorch models only. Give the PyTorch code that "
        "builds it instead (e.g. `resviz check model.py:ResNet`)."
    )


def _short_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) < 300 else text[:300] + " ..."


def _load_torchscript(path: Path, name: str) -> ArchiveResult:
    def load(device: str = "cpu") -> nn.Module:
        with warnings.catch_warnings():  # torch.jit.load is deprecated; the user cannot act on it
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu" if device == "meta" else device)

    try:
        module = load()
    except Exception as exc:  # noqa: BLE001 - torch.jit.load of a damaged or newer archive raises anything; the user gets a LoadError naming the file and the error
        raise LoadError(
            f"{name} is a TorchScript archive (torch.jit.save) but torch {torch.__version__} could "
            f"not load it: {_short_error(exc)}"
        ) from None
    notes: list[str] = []
    try:
        shape = _traced_input_shape(path)
    except Exception as exc:  # noqa: BLE001 - a crafted traced_inputs.pkl can raise anything; the model still loads and the note says the input shape must be given
        shape = None
        notes.append(
            f"the example input saved in {name} could not be read ({type(exc).__name__}: "
            f"{_short_error(exc)}); give the input shape yourself (--input)."
        )
    return ArchiveResult("torchscript", module, None, shape, load, notes)


class _ShapeOnlyUnpickler(pickle.Unpickler):
    """Reads the pickle of a traced module's example inputs, giving tensors as their shapes.

    Only a handful of harmless globals are allowed; storages are never read.
    """

    def find_class(self, module: str, name: str):  # noqa: D102
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, *rest: torch.Size(size)
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, tag: value
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"{module}.{name} not allowed")

    def persistent_load(self, pid):  # noqa: D102
        return None


def _traced_input_shape(path: Path) -> tuple[int, ...] | None:
    """The example input of a ``torch.jit.trace``-d archive, when it holds a single tensor.

    Raises what reading its ``traced_inputs.pkl`` raises (the pickle can be damaged or crafted)."""
    with zipfile.ZipFile(path) as zf:
        member = next((n for n in zf.namelist() if n.endswith("/traced_inputs.pkl")), None)
        if member is None:
            return None
        if zf.getinfo(member).file_size > _MAX_PICKLE_BYTES:
            return None  # a crafted archive that would inflate without bound: no hint
        data = zf.read(member)
    inputs = _ShapeOnlyUnpickler(__import__("io").BytesIO(data)).load()
    forward = inputs.get("forward") if isinstance(inputs, Mapping) else None
    if isinstance(forward, (list, tuple)) and len(forward) == 1 and isinstance(forward[0], torch.Size):
        return tuple(int(d) for d in forward[0])
    return None


def _load_export(path: Path, name: str, *, trust: bool) -> ArchiveResult:
    """A torch.export program. Untrusted, it is read without unpickling anything but plain
    tensors (``archive_export``), with meta weights; trusted, by ``torch.export.load``."""
    notes: list[str] = []
    try:
        if trust:
            program = torch.export.load(str(path))
        else:
            from .pt2_reader import load_export_untrusted

            program, notes = load_export_untrusted(path, name)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export.load of a damaged or newer archive raises anything; the user gets a LoadError naming the file and the error
        raise LoadError(
            f"{name} is a torch.export archive (torch.export.save) but torch {torch.__version__} "
            f"could not load it: {_short_error(exc)}"
        ) from None
    return ArchiveResult("export", None, program, _exported_input_shape(program), None, notes)


def _exported_input_shape(program) -> tuple[int, ...] | None:
    """The shape of the program's single tensor input, from its example inputs or input spec.

    Only a default: whatever an archive's (possibly damaged) example inputs or graph raise, the
    shape is then None and the session guesses the input, with a note that says so and how to
    give it (``--input``)."""
    with contextlib.suppress(Exception):
        example = getattr(program, "example_inputs", None)
        if example:
            args, kwargs = example
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if len(tensors) == 1 and len(args) + len(kwargs) == 1:
                return tuple(int(d) for d in tensors[0].shape)
    with contextlib.suppress(Exception):
        from torch.export.graph_signature import InputKind

        users = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
        if len(users) != 1:
            return None
        wanted = users[0].arg.name
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name == wanted:
                val = node.meta.get("val")
                if val is not None and hasattr(val, "shape"):
                    dims = []
                    for d in val.shape:
                        hint = getattr(getattr(d, "node", None), "hint", None)
                        dims.append(int(d) if isinstance(d, int) else int(hint))
                    return tuple(dims)
    return None


# --- torch.save files ------------------------------------------------------------------------


@contextlib.contextmanager
def _importable(path: Path) -> Iterator[None]:
    """While unpickling a trusted file: its directory and the working directory importable."""
    extra = [str(path.resolve().parent), os.getcwd()]
    added = [p for p in extra if p not in sys.path]
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(p)
        sys.dont_write_bytecode = saved


def _load_torch_save(path: Path, name: str, *, trust: bool, device: str) -> ArchiveResult:
    _check_pickle_size(path, name)
    try:
        obj = torch.load(str(path), map_location="meta", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "unsupported" not in str(exc).lower():
            raise LoadError(f"{name} could not be read as a torch.save file: {_short_error(exc)}") from None
        if not trust:
            raise _needs_trust(path, name, "legacy" if _is_legacy(path) else "torch.save") from None
        return _trusted(path, name, device, lambda: torch.load(str(path), map_location="cpu",
                                                                weights_only=False))
    except Exception as exc:  # noqa: BLE001 - torch.load of a truncated or damaged file raises anything; the user gets a LoadError naming the file and the error
        raise LoadError(
            f"{name} looks like a torch.save file but it is truncated or corrupt: {_short_error(exc)}"
        ) from None
    raise LoadError(_not_a_model_message(name, obj))


def _check_pickle_size(path: Path, name: str) -> None:
    """A torch.save zip's pickle (data.pkl) is read whole: refuse one that would inflate past
    :data:`_MAX_PICKLE_BYTES` (a crafted archive; a real one holds a few MB of structure)."""
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = [i.file_size for i in zf.infolist() if i.filename.endswith("data.pkl")]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # the legacy format, or torch.load says what is wrong
    if sizes and max(sizes) > _MAX_PICKLE_BYTES:
        raise LoadError(
            f"{name}: its data.pkl inflates to {max(sizes):,} bytes, past the limit of "
            f"{_MAX_PICKLE_BYTES:,} bytes for the pickled structure of a torch.save file."
        )


def _is_legacy(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def _load_raw_pickle(path: Path, name: str, *, trust: bool, device: str) -> ArchiveResult:
    if not trust:
        raise _needs_trust(path, name, "pickle")

    def load() -> object:
        with open(path, "rb") as fh:
            return pickle.load(fh)

    return _trusted(path, name, device, load)


class _Stand:
    """Stands in for every class or function a pickle names, so that nothing real is imported."""

    _qualified = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass


class _RecordingUnpickler(pickle.Unpickler):
    """Walks a pickle without importing anything, noting the globals it names in order."""

    def __init__(self, file):
        super().__init__(file)
        self.names: list[str] = []

    def find_class(self, module: str, name: str):  # noqa: D102
        qualified = f"{module}.{name}"
        if qualified not in self.names:
            self.names.append(qualified)
        return type(name, (_Stand,), {"_qualified": qualified})

    def persistent_load(self, pid):  # noqa: D102
        return None


def _pickle_globals(path: Path, kind: str) -> list[str]:
    """``module.name`` of every class or function the file's pickle names, in order of appearance.

    Read without importing or running anything: each global becomes an inert stand-in.
    """
    import io

    with contextlib.ExitStack() as stack:
        try:
            if kind == "torch.save":
                with zipfile.ZipFile(path) as zf:
                    member = next(n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
                    if zf.getinfo(member).file_size > _MAX_PICKLE_BYTES:
                        return []
                    stream = io.BytesIO(zf.read(member))
            else:  # read from the file as the pickle needs it: a legacy file's tensors come after
                stream = stack.enter_context(open(path, "rb"))
                if kind == "legacy":  # magic number, protocol version and system info come first
                    for _ in range(3):  # read as inertly as the main pickle: any can be crafted
                        _RecordingUnpickler(stream).load()
        except Exception:  # noqa: BLE001 - a crafted or damaged pickle raises anything; the trust message is still given, only without the class names
            return []
        unpickler = _RecordingUnpickler(stream)
        with contextlib.suppress(Exception, RecursionError):
            unpickler.load()
        return unpickler.names


_PLUMBING = ("torch._utils.", "torch.serialization.", "collections.", "builtins.", "__builtin__.",
             "_codecs.", "copyreg.", "copy_reg.", "torch.storage.", "torch._tensor.", "numpy.core.",
             "numpy._core.")


def _is_plumbing(qualified: str) -> bool:
    if qualified.startswith(_PLUMBING):
        return True
    module, _, attr = qualified.rpartition(".")
    return module == "torch" and (attr.endswith("Storage") or attr in {"Size", "device", "dtype"})


def _needs_trust(path: Path, name: str, kind: str) -> NeedsTrust:
    raw = kind == "pickle"
    names = [g for g in _pickle_globals(path, kind) if not _is_plumbing(g)]
    unsafe: list[str] = []
    if not raw and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        with contextlib.suppress(Exception):
            unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    for g in unsafe:
        if g not in names and not _is_plumbing(g):
            names.append(g)
    what = "a pickled Python object"
    if names:
        what = f"a pickled {names[0]} object"
    user_classes = [g for g in names if not g.startswith("torch.")]
    msg = (
        f"{name} holds {what} (a whole model saved with torch.save(model){', as a plain pickle' if raw else ''}), "
        "not just weights. Loading it means unpickling, which can run any code the file names, so "
        "resviz does not do it {how}"
    )
    if user_classes:
        modules = sorted({g.rpartition(".")[0] for g in user_classes})
        msg += (
            f" Unpickling will need the class{'es' if len(user_classes) > 1 else ''} "
            f"{', '.join(user_classes[:4])}{' ...' if len(user_classes) > 4 else ''}, so the module"
            f"{'s' if len(modules) > 1 else ''} {', '.join(modules)} must be importable."
        )
        if "__main__" in modules:
            msg += (
                " The model was saved from a script run as __main__, so its classes cannot be found "
                "again; give the model code instead (`resviz check train.py:Net`)."
            )
    cli = msg.replace("{how}", "unless you pass --trust. Only do that for files you trust.")
    app = msg.replace("{how}", "unless you choose to trust this file.")
    return NeedsTrust(cli, app, str(path))


def _trusted(path: Path, name: str, device: str, load: Callable[[], object]) -> ArchiveResult:
    notes: list[str] = []  # from the first load only: later rebuilds have nowhere to say them

    def load_module(dev: str) -> nn.Module:
        with _importable(path):
            try:
                obj = load()
            except ModuleNotFoundError as exc:
                raise LoadError(
                    f"{name} holds a pickled model whose class lives in the module "
                    f"'{exc.name}', which cannot be imported here. Run resviz from the project "
                    f"directory that has {exc.name.split('.')[0] if exc.name else 'it'} "
                    "(or add that directory to PYTHONPATH)."
                ) from None
            except AttributeError as exc:
                text = _short_error(exc)
                extra = ""
                if "__main__" in text:
                    extra = (
                        " The model was saved from a script run as __main__, so its class cannot be "
                        "found again; give the model code instead (`resviz check train.py:Net`)."
                    )
                raise LoadError(
                    f"{name} holds a pickled model whose class cannot be found: {text}.{extra}"
                ) from None
            except Exception as exc:  # noqa: BLE001 - unpickling a trusted file runs the user's code, which can raise anything; the user gets a LoadError with the error
                raise LoadError(f"{name} could not be unpickled: {type(exc).__name__}: {_short_error(exc)}") from None
        module = _module_in(obj)
        if module is None:
            raise LoadError(_not_a_model_message(name, obj))
        if dev != "cpu":
            try:
                module = module.to(dev)
            except Exception as exc:  # noqa: BLE001 - the pickled model's own .to() can raise anything; it stays on the CPU, which the note says
                notes.append(
                    f"{name}: the unpickled model could not be moved to the {dev} device "
                    f"({type(exc).__name__}: {_short_error(exc)}), so it stays on the CPU"
                )
        return module

    module = load_module(device)
    return ArchiveResult("pickle", module, None, None, load_module, list(notes))


def _module_in(obj: object) -> nn.Module | None:
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        modules = [v for v in obj.values() if isinstance(v, nn.Module)]
        if len(modules) == 1:
            return modules[0]
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), nn.Module):
                return obj[key]
    return None


# --- weights only ----------------------------------------------------------------------------


def _tensor_shapes(obj: object, prefix: str = "", depth: int = 0) -> dict[str, tuple[int, ...]]:
    """Flatten str-keyed mappings of tensors into ``{'layer1.0.conv1.weight': (64, 64, 3, 3)}``."""
    out: dict[str, tuple[int, ...]] = {}
    if not isinstance(obj, Mapping) or depth > 4:
        return out
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + key] = tuple(int(d) for d in value.shape)
        elif isinstance(value, Mapping):
            out.update(_tensor_shapes(value, f"{prefix}{key}.", depth + 1))
    return out


def _weights_in(obj: object) -> tuple[dict[str, tuple[int, ...]], str | None]:
    """The weights in a state dict or checkpoint, and the checkpoint key they were under."""
    if not isinstance(obj, Mapping):
        return {}, None
    direct = {k: tuple(int(d) for d in v.shape) for k, v in obj.items()
              if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if direct and len(direct) >= len(obj) / 2:
        return direct, None
    for key in _CHECKPOINT_KEYS:
        inner = _tensor_shapes(obj.get(key))
        if inner:
            return inner, key
    best: tuple[dict[str, tuple[int, ...]], str | None] = ({}, None)
    for key, value in obj.items():
        inner = _tensor_shapes(value)
        if len(inner) > len(best[0]):
            best = (inner, str(key))
    return best if best[0] else (_tensor_shapes(obj), None)


def _not_a_model_message(name: str, obj: object) -> str:
    shapes, key = _weights_in(obj)
    if shapes:
        keys = list(obj.keys()) if isinstance(obj, Mapping) else []
        return _weights_only_message(name, shapes, key, keys if key is not None else None)
    if isinstance(obj, torch.Tensor):
        return f"{name} holds a single tensor of shape {format_shape(obj.shape)}, not a model."
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        return f"{name} holds a dict (keys {keys}) with neither a model nor weights in it."
    return f"{name} holds a {type(obj).__name__}, not a model."


def _weights_only_message(name: str, shapes: dict[str, tuple[int, ...]], key: str | None,
                          checkpoint_keys: list | None = None) -> str:
    shown = [f"{k} {format_shape(v) if v else 'scalar'}" for k, v in list(shapes.items())[:3]]
    examples = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    if key is not None:
        keys = ", ".join(repr(k) for k in (checkpoint_keys or [])[:6])
        what = f"a checkpoint dict (keys {keys}) whose '{key}' entry is a state dict of {len(shapes)} tensors"
    else:
        what = f"a state dict of {len(shapes)} tensors"
    msg = (
        f"{name} holds only weights: {what}, such as {examples}. Without the model's code resviz "
        "cannot tell what the layers are or how they connect; give the code that builds the model "
        "instead, e.g. `resviz check model.py:ResNet`."
    )
    hint = zoo_match(shapes)
    if hint:
        msg += " " + hint
    return msg


def _safetensors_shapes(path: Path, name: str) -> dict[str, tuple[int, ...]]:
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > _MAX_SAFETENSORS_HEADER:
                raise ValueError(f"a header of {n:,} bytes, past safetensors' own limit of 100 MB")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        return {k: tuple(int(d) for d in v.get("shape", ())) for k, v in header.items()
                if k != "__metadata__" and isinstance(v, dict)}
    except (OSError, ValueError, TypeError, struct.error, RecursionError) as exc:
        raise LoadError(f"{name} looks like a safetensors file but its header is corrupt ({exc}).") from None


# --- recognising zoo weights -----------------------------------------------------------------


def _normalise(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    out = {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
    for prefix in ("module.", "model.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def _zoo_candidates() -> list[tuple[str, tuple[int, ...]]]:
    """The zoo's residual models with their blocks per stage (plain twins are not worth naming)."""
    from . import zoo  # resviz's own specs: an error here is a bug, and must show

    return [(e.name, tuple(s.blocks for s in e.spec.stages)) for e in zoo.entries() if e.kind != "plain"]


_STAGE_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")


def _stage_blocks(keys) -> tuple[int, ...] | None:
    """Blocks per stage read off torchvision-style names (``layer3.5.conv1.weight``), if any."""
    stages: dict[int, int] = {}
    for key in keys:
        m = _STAGE_KEY.match(key)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            stages[stage] = max(stages.get(stage, 0), block + 1)
    return tuple(stages[k] for k in sorted(stages)) if stages else None


@cache
def _zoo_shapes(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from . import zoo  # resviz's own specs: an error here is a bug, and must show

    model = zoo.build(name, device="meta")
    return tuple(_normalise({k: tuple(v.shape) for k, v in model.state_dict().items()}).items())


def zoo_match(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """A hint naming the zoo model whose ``state_dict()`` these weights fit, if one does.

    An exact match of names and shapes says so; a match in everything but the size of the final
    classifier suggests ``--kwargs '{"num_classes": N}'``.
    """
    wanted = _normalise(shapes)
    if not wanted:
        return None
    near: tuple[str, int] | None = None
    for zname in _zoo_names_to_compare(_stage_blocks(wanted), _zoo_candidates()):
        fit = _zoo_fit(dict(_zoo_shapes(zname)), wanted)
        if fit == "exact":
            return f"These look like the weights of resviz's (and torchvision's) {zname}: try `resviz check {zname}`."
        if isinstance(fit, int) and near is None:
            near = (zname, fit)
    if near is not None:
        zname, classes = near
        return (
            f"These look like the weights of resviz's (and torchvision's) {zname} with "
            f"{classes} classes: try `resviz check {zname} --kwargs '{{\"num_classes\": {classes}}}'`."
        )
    return None


def _zoo_names_to_compare(blocks: tuple[int, ...] | None,
                          candidates: list[tuple[str, tuple[int, ...]]]) -> list[str]:
    """The zoo models worth building to compare with weights of ``blocks`` per stage (None: the
    weights do not name their blocks ``layerN.M``)."""
    if blocks is None and candidates and _stage_blocks(dict(_zoo_shapes(candidates[0][0]))) is not None:
        return []  # the zoo names its blocks layerN.M; weights without such names cannot match
    # cheap: no need to build a model whose blocks per stage differ
    return [zname for zname, zblocks in candidates if blocks is None or zblocks == blocks]


def _zoo_fit(have: Mapping[str, tuple[int, ...]], wanted: Mapping[str, tuple[int, ...]]) -> str | int | None:
    """How the weights ``wanted`` fit a zoo model's ``have``: 'exact', the number of classes when
    only the classifier's size differs, or None."""
    if have.keys() != wanted.keys():
        return None
    differ = [k for k in have if have[k] != wanted[k]]
    if not differ:
        return "exact"
    return _classifier_change(dict(have), dict(wanted), differ)


def _classifier_change(have: dict, wanted: dict, differ: list[str]) -> int | None:
    """When only the last Linear layer differs, and only in its output size: that size."""
    if not differ or len(differ) > 2:
        return None
    prefixes = {k.rsplit(".", 1)[0] for k in differ}
    if len(prefixes) != 1:
        return None
    sizes = set()
    for k in differ:
        a, b = have[k], wanted[k]
        if len(a) != len(b) or a[1:] != b[1:]:
            return None
        sizes.add(b[0])
    return sizes.pop() if len(sizes) == 1 else None
