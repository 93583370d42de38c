"""Labelled training data, with no downloads.

``open_data(text, sample_shape, num_classes, seed)`` reads the ``--data`` argument:

* ``synthetic`` (default; ``synthetic:N`` for N classes): procedural images made at the model's
  input shape — oriented gratings whose angle, frequency and colour depend on the class, with a
  random phase, contrast and a blob of clutter, plus noise. Batch ``k`` is a pure function of the
  seed and ``k``: nothing is stored, the stream is endless and every run with a seed sees the same
  images. A ResNet-20 learns it in a few hundred steps. Non-image inputs get class templates plus
  noise.
* ``cifar10:DIR``: the CIFAR-10 python-pickle batch folder (``data_batch_1`` .. ``data_batch_5``,
  ``batches.meta``; ``DIR`` may also be the folder holding ``cifar-10-batches-py``).
* ``folder:DIR``: one sub-folder per class. Reads ``.npy``, ``.ppm`` and ``.pgm`` with numpy, and
  PNG/JPEG/... only if Pillow is installed (it is not a dependency of resviz).
* ``npz:FILE``: a numpy ``.npz`` holding ``x`` (N×C×H×W, N×H×W×C, N×H×W or N×F) and ``y`` (N
  integer labels).

A bare path is sniffed. Images are resized to the model's input size (bilinear, antialiased),
their channels adapted (grey ↔ RGB, alpha dropped) and normalised per channel. Batches come out as
CPU tensors (float32 images, int64 labels); every problem is a :class:`ResvizError` naming the file
and what was expected.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResvizError
from ..files import check_readable_file, human_bytes

DATA_KINDS = ("synthetic", "cifar10", "folder", "npz")
DATA_HELP = (
    "synthetic (built in, the default), cifar10:DIR (the CIFAR-10 python batch folder), "
    "folder:DIR (one sub-folder per class), npz:FILE (arrays x and y), or a bare path"
)
_NUMPY_IMAGES = (".npy", ".ppm", ".pgm", ".pnm")
_PIL_IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_MAX_STAT_SAMPLES = 2048
MAX_CLASSES = 1_000_000  # ImageNet-21k has 21,841; past this it is a typo, refused before allocating
_MEMORY_HEADROOM = 0.8  # of the memory free now, what a training run may plan to use


class DataError(ResvizError):
    """The training data could not be read or does not fit the model."""


# ------------------------------------------------------------------------------------ sources


class DataSource:
    """An endless, seeded stream of labelled batches. ``batch(k, n)`` is deterministic."""

    name: str = "data"
    num_classes: int = 0
    sample_shape: tuple[int, ...] = ()
    class_names: list[str] | None = None

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def __len__(self) -> int:  # number of distinct samples; 0 = unbounded
        return 0


def _step_seed(seed: int, step: int) -> int:
    # splitmix-like mixing so neighbouring (seed, step) pairs give unrelated streams
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class SyntheticData(DataSource):
    """Procedural labelled images: class-dependent oriented gratings and colour, plus noise.

    For an image of C×H×W and K classes, class ``c`` has a fixed orientation (K/2 angles over
    180°), one of two spatial frequencies and a colour direction across channels. Each sample
    draws a random phase, contrast and position of a Gaussian blob of clutter, and i.i.d. noise.
    Class properties depend only on the shape and K (not the seed); the samples depend on the seed
    and the step.
    """

    def __init__(self, sample_shape: Sequence[int], num_classes: int = 10, seed: int = 0,
                 noise: float = 0.5):  # fmt: skip
        self.sample_shape = tuple(int(d) for d in sample_shape)
        if not self.sample_shape or any(d <= 0 for d in self.sample_shape):
            raise DataError(f"synthetic data: bad sample shape {self.sample_shape}")
        if num_classes < 2:
            raise DataError(f"synthetic data needs at least 2 classes, got {num_classes}")
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.noise = float(noise)
        self.name = f"synthetic ({self.num_classes} classes)"
        k = self.num_classes
        g = torch.Generator().manual_seed(1234 + k)
        shape = self.sample_shape
        self._image = len(shape) == 3 and shape[1] >= 2 and shape[2] >= 2
        if self._image:
            c, h, w = shape
            pairs = (k + 1) // 2
            idx = torch.arange(k)
            self._theta = math.pi * (idx % pairs).float() / pairs
            # one or two cycles per image at the smallest side, never above a quarter Nyquist
            base = max(1.0, min(h, w) / 16)
            self._freq = base * (1.0 + (idx // pairs).float())
            colour = torch.randn(k, c, generator=g)
            colour = colour / colour.norm(dim=1, keepdim=True).clamp_min(1e-6)
            self._colour = 0.5 + 0.5 * colour if c > 1 else torch.ones(k, 1)
            yy = torch.linspace(-1, 1, h).view(h, 1).expand(h, w)
            xx = torch.linspace(-1, 1, w).view(1, w).expand(h, w)
            self._grid = (yy, xx)
        else:
            n = math.prod(shape)
            t = torch.randn(k, n, generator=g)
            # smooth along the last dimension so 1-d signals look like signals
            if len(shape) >= 2 and shape[-1] >= 5:
                t = F.avg_pool1d(t.view(k * (n // shape[-1]), 1, shape[-1]), 5, 1, 2).view(k, n)
            self._templates = t / t.std(dim=1, keepdim=True).clamp_min(1e-6)

    def describe(self) -> str:
        return f"synthetic, {self.num_classes} classes, {'x'.join(map(str, self.sample_shape))}, seed {self.seed}"

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(_step_seed(self.seed, step))
        b, k = batch_size, self.num_classes
        y = torch.randint(0, k, (b,), generator=g)
        if not self._image:
            x = self._templates[y] + 2 * self.noise * torch.randn(b, self._templates.shape[1], generator=g)
            return x.view(b, *self.sample_shape), y
        c, h, w = self.sample_shape
        yy, xx = self._grid
        theta = self._theta[y] + 0.08 * torch.randn(b, generator=g)
        freq = self._freq[y] * (1 + 0.1 * torch.randn(b, generator=g))
        phase = 2 * math.pi * torch.rand(b, generator=g)
        contrast = 0.6 + 0.8 * torch.rand(b, generator=g)
        u = xx * torch.cos(theta).view(b, 1, 1) + yy * torch.sin(theta).view(b, 1, 1)
        grating = torch.sin(math.pi * freq.view(b, 1, 1) * u + phase.view(b, 1, 1))
        x = contrast.view(b, 1, 1, 1) * grating.unsqueeze(1) * self._colour[y].view(b, c, 1, 1)
        # clutter: a Gaussian blob of random colour at a random place, unrelated to the class
        cy, cx = torch.rand(b, generator=g) * 2 - 1, torch.rand(b, generator=g) * 2 - 1
        blob = torch.exp(-((yy - cy.view(b, 1, 1)) ** 2 + (xx - cx.view(b, 1, 1)) ** 2) / 0.15)
        x = x + blob.unsqueeze(1) * torch.randn(b, c, 1, 1, generator=g)
        x = x + self.noise * torch.randn(b, c, h, w, generator=g)
        return x, y


class ArrayData(DataSource):
    """Samples held in memory (uint8 or float), resized, adapted and normalised per batch.

    Each epoch visits every sample once in an order drawn from the seed and the epoch number.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, sample_shape: Sequence[int], num_classes: int,
                 seed: int = 0, name: str = "data", where: str = "data",
                 class_names: list[str] | None = None, scale: float | None = None):  # fmt: skip
        self.name = name
        self.where = where
        self.seed = int(seed)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self._x = torch.from_numpy(np.ascontiguousarray(x))
        self._y = torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))
        self._n = len(self._y)
        if self._n == 0:
            raise DataError(f"{where}: no samples")
        if scale is None:
            scale = 1 / 255 if x.dtype == np.uint8 else (1 / 65535 if x.dtype == np.uint16 else 1.0)
        self._scale = scale
        self._perm_cache: dict[int, torch.Tensor] = {}
        self._check_fits()
        rng = np.random.default_rng(self.seed)
        probe = rng.choice(self._n, size=min(self._n, _MAX_STAT_SAMPLES), replace=False)
        sample = self._convert(torch.from_numpy(np.sort(probe)))
        dims = (0, *range(2, sample.dim())) if sample.dim() > 2 else (0,)
        self._mean = sample.mean(dim=dims, keepdim=True)[0:1]
        self._std = sample.std(dim=dims, keepdim=True)[0:1].clamp_min(1e-6)

    def __len__(self) -> int:
        return self._n

    def describe(self) -> str:
        return f"{self.name}: {self._n} samples, {self.num_classes} classes"

    def _check_fits(self) -> None:
        data = tuple(self._x.shape[1:])
        want = self.sample_shape
        if len(want) == 3 and len(data) == 3:
            if data[0] != want[0] and not (data[0] == 1 or (data[0] in (3, 4) and want[0] in (1, 3))):
                raise DataError(
                    f"{self.where}: the images have {data[0]} channels but the model takes {want[0]}; "
                    "resviz can only convert between grey (1), RGB (3) and RGBA (4)"
                )
        elif math.prod(data) != math.prod(want):
            raise DataError(
                f"{self.where}: samples of shape {'x'.join(map(str, data))} cannot be fed to a model "
                f"that takes {'x'.join(map(str, want))}"
            )

    def _convert(self, idx: torch.Tensor) -> torch.Tensor:
        x = self._x[idx].float()
        if self._scale != 1.0:
            x = x * self._scale
        want = self.sample_shape
        if len(want) != 3 or x.dim() != 4:
            return x.reshape(len(idx), *want)
        c = x.shape[1]
        if c != want[0]:
            if c == 1:
                x = x.expand(-1, want[0], -1, -1)
            elif want[0] == 1:
                x = x[:, :3].mean(dim=1, keepdim=True)
            else:  # RGBA -> RGB
                x = x[:, : want[0]]
        if tuple(x.shape[2:]) != want[1:]:
            x = F.interpolate(x, size=want[1:], mode="bilinear", align_corners=False,
                              antialias=want[1] < x.shape[2] or want[2] < x.shape[3])  # fmt: skip
        return x

    def _perm(self, epoch: int) -> torch.Tensor:
        p = self._perm_cache.get(epoch)
        if p is None:
            rng = np.random.default_rng([self.seed, epoch])
            p = torch.from_numpy(rng.permutation(self._n))
            self._perm_cache = {epoch: p}  # keep one epoch: bounded memory
        return p

    def indices(self, step: int, batch_size: int) -> torch.Tensor:
        start = step * batch_size
        out = []
        pos = start
        while pos < start + batch_size:
            epoch, off = divmod(pos, self._n)
            take = min(self._n - off, start + batch_size - pos)
            out.append(self._perm(epoch)[off : off + take])
            pos += take
        return torch.cat(out)

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices(step, batch_size)
        x = (self._convert(idx) - self._mean) / self._std
        return x.contiguous(), self._y[idx]


# ------------------------------------------------------------------------------------ parsing


def parse_data_arg(text: str | None) -> tuple[str, str | None]:
    """``"cifar10:/d"`` → ``("cifar10", "/d")``; a bare path is sniffed. Raises DataError."""
    if text is None or not str(text).strip() or str(text).strip().lower() == "synthetic":
        return "synthetic", None
    text = str(text).strip()
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in DATA_KINDS:
        if kind.lower() == "synthetic":
            return "synthetic", rest
        if not rest.strip():
            raise DataError(f"--data {text}: give a path after '{kind}:'")
        return kind.lower(), os.path.expanduser(rest.strip())
    if sep and len(kind) > 1 and "/" not in kind and "\\" not in kind and not os.path.exists(text):
        raise DataError(f"--data {text}: unknown kind '{kind}'. Expected {DATA_HELP}.")
    return sniff_data(os.path.expanduser(text)), os.path.expanduser(text)


def sniff_data(path: str) -> str:
    """Which loader reads ``path``: 'cifar10', 'folder' or 'npz'."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"--data {path}: no such file or folder. Expected {DATA_HELP}.")
    if p.is_dir():
        if _cifar_dir(p) is not None:
            return "cifar10"
        return "folder"
    _regular(p, f"--data {path}")  # is_zipfile would open a FIFO and wait forever
    if p.suffix.lower() == ".npz" or zipfile.is_zipfile(p):
        return "npz"
    raise DataError(
        f"--data {path}: cannot tell what kind of data this file is; a single file must be an .npz "
        f"with arrays x and y. Expected {DATA_HELP}."
    )


def open_data(text: str | None, sample_shape: Sequence[int], num_classes: int, seed: int = 0) -> DataSource:
    """The data source named by ``text`` (the ``--data`` argument) for a model taking
    ``sample_shape`` (C×H×W without the batch) and giving ``num_classes`` logits."""
    kind, path = parse_data_arg(text)
    if kind == "synthetic":
        k = min(num_classes, 10)
        if path:
            try:
                k = int(path)
            except ValueError:
                raise DataError(f"--data synthetic:{path}: expected a number of classes") from None
        if k < 2:
            raise DataError(
                f"synthetic data needs a model with at least 2 outputs (classes); this one gives {num_classes}"
            )
        if k > MAX_CLASSES:
            raise DataError(
                f"--data synthetic:{k}: {k} classes is past the limit of {MAX_CLASSES} classes"
            )
        src: DataSource = SyntheticData(sample_shape, k, seed)
    elif kind == "cifar10":
        src = load_cifar10(path, sample_shape, seed)
    elif kind == "folder":
        src = load_image_folder(path, sample_shape, seed)
    else:
        src = load_npz(path, sample_shape, seed)
    if src.num_classes > num_classes:
        raise DataError(
            f"{src.name} has {src.num_classes} classes but the model gives only {num_classes} outputs; "
            f"build the model with more classes (e.g. --kwargs '{{\"num_classes\": {src.num_classes}}}')"
        )
    return src


# ------------------------------------------------------------------------------------ CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings only: a data file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }  # fmt: skip

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


def _cifar_dir(p: Path) -> Path | None:
    if (p / "data_batch_1").is_file() or (p / "batches.meta").is_file():
        return p
    if (p / "cifar-10-batches-py").is_dir():
        return p / "cifar-10-batches-py"
    return None


def _regular(path: Path, where: str) -> None:
    """Refuse a FIFO or device before opening it: a FIFO blocks, /dev/zero never ends."""
    try:
        check_readable_file(path, where)
    except ResvizError as e:
        raise DataError(str(e)) from None


def _read_pickle(path: Path) -> dict:
    _regular(path, str(path))
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises almost any error; the user is told which, and what was expected
        raise DataError(
            f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e}); expected a pickled dict "
            "with 'data' (N×3072 uint8) and 'labels'"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{path}: expected a pickled dict with 'data' and 'labels', found a {type(obj).__name__}"
        )
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_cifar10(path: str | os.PathLike, sample_shape: Sequence[int], seed: int = 0) -> ArrayData:
    """Read the CIFAR-10 python batches (``data_batch_*``) from ``path``."""
    given = Path(path)
    if not given.is_dir():
        raise DataError(
            f"cifar10:{path}: {'no such folder' if not given.exists() else 'not a folder'}; expected the "
            "CIFAR-10 python folder (cifar-10-batches-py) holding data_batch_1 .. data_batch_5 and batches.meta"
        )
    d = _cifar_dir(given)
    files = sorted(given.glob("data_batch_*")) if d is None else sorted(d.glob("data_batch_*"))
    if d is None or not files:
        raise DataError(
            f"cifar10:{path}: no data_batch_1 .. data_batch_5 in this folder; expected the CIFAR-10 python "
            "version (cifar-10-python.tar.gz, extracted: cifar-10-batches-py/)"
        )
    xs, ys = [], []
    for f in files:
        batch = _read_pickle(f)
        if "data" not in batch or ("labels" not in batch and "fine_labels" not in batch):
            raise DataError(
                f"{f}: expected keys 'data' and 'labels', found {', '.join(map(str, batch)) or 'none'}"
            )
        x = np.asarray(batch["data"])
        y = np.asarray(batch.get("labels", batch.get("fine_labels")))
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
            raise DataError(
                f"{f}: 'data' should be an N×3072 uint8 array (32×32 RGB rows), got "
                f"{'x'.join(map(str, x.shape))} {x.dtype}"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{f}: 'labels' should be a list of {len(x)} integers, got {len(y)}")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y.astype(np.int64))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    names = None
    meta = d / "batches.meta"
    if meta.is_file():
        m = _read_pickle(meta)
        raw = m.get("label_names")
        if raw is not None:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    k = len(names) if names else int(y.max()) + 1
    if y.min() < 0 or y.max() >= k:
        raise DataError(f"cifar10:{path}: labels must lie in 0..{k - 1}, found {y.min()}..{y.max()}")
    return ArrayData(
        x, y, sample_shape=sample_shape, num_classes=k, seed=seed, where=f"cifar10:{path}",
        name=f"CIFAR-10 ({len(files)} batches)", class_names=names,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ npz


def load_npz(path: str | os.PathLike, sample_shape: Sequence[int], seed: int = 0) -> ArrayData:
    """Read ``x`` and ``y`` from an ``.npz`` file."""
    p = Path(path)
    where = f"npz:{path}"
    _regular(p, where)
    if not p.is_file():
        raise DataError(f"{where}: no such file; expected an .npz with arrays x and y")
    _check_npz_size(p, where)
    x, y = _read_npz_arrays(p, where)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where}: x must be numeric, got {x.dtype}")
    y = npz_labels(y, where)
    _check_label_count(len(x), y, where)
    want = tuple(sample_shape)
    x = _to_nchw(x, want, where)
    return ArrayData(x, y, sample_shape=want, num_classes=int(y.max()) + 1, seed=seed, where=where,
                     name=f"{p.name} ({len(y)} samples)")  # fmt: skip


def _read_npz_arrays(p: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``x`` and ``y`` of an .npz (no pickled objects)."""
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            if "x" not in keys or "y" not in keys:
                raise DataError(
                    f"{where}: expected arrays named x (samples) and y (labels), found {', '.join(keys) or 'none'}"
                )
            return z["x"], z["y"]
    except DataError:
        raise
    except ValueError as e:
        raise DataError(
            f"{where}: cannot read ({e}); object arrays are not allowed, use numeric arrays"
        ) from None
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: not a readable .npz file ({e})") from None


def npz_labels(y: np.ndarray, where: str) -> np.ndarray:
    """``y`` as a 1-d array of integer labels: an N×1 column and whole-valued floats are accepted."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return y
    if y.ndim == 1 and np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        return y.astype(np.int64)
    raise DataError(
        f"{where}: y must be a 1-d array of integer class labels, got shape "
        f"{'x'.join(map(str, y.shape))} {y.dtype}"
    )


def _check_label_count(n: int, y: np.ndarray, where: str) -> None:
    """One label, 0 or more, for each of the ``n`` samples, and at least one sample."""
    if n != len(y):
        raise DataError(f"{where}: x has {n} samples but y has {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{where}: x and y are empty")
    if y.min() < 0:
        raise DataError(f"{where}: labels must be 0 or more, found {y.min()}")


def _npz_headers(p: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array in an .npz, read from the .npy headers without the data."""
    out = {}
    with zipfile.ZipFile(p) as zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                continue
            with zf.open(name) as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)  # fmt: skip
                shape, _, dtype = read(fh)
            out[name[:-4]] = (tuple(int(d) for d in shape), dtype)
    return out


# What a truncated or corrupt .npz raises while its headers are read (found by fuzzing real files)
_BROKEN_ZIP = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError, NotImplementedError)


def _check_npz_size(p: Path, where: str) -> None:
    """A compressed .npz can inflate a thousandfold: refuse before reading what will not fit."""
    try:
        headers = _npz_headers(p)
    except _BROKEN_ZIP:
        return  # not readable this way: np.load, next, says what is wrong, in its words
    need = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    free = available_memory("cpu")
    if free is not None and need > free * _MEMORY_HEADROOM:
        sizes = ", ".join(f"{k} {'x'.join(map(str, shape))} {dtype}" for k, (shape, dtype) in headers.items())
        raise DataError(
            f"{where}: its arrays ({sizes}) take {human_bytes(need)} once read "
            f"({human_bytes(p.stat().st_size)} on disk), but only {human_bytes(free)} of memory is "
            "free; use a smaller subset of the data"
        )


# ------------------------------------------------------------------------------------ memory


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that can be allocated now on ``device`` ('cpu' or 'cuda[:N]'); None if unknown."""
    if str(device).startswith("cuda"):
        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError, ValueError):  # no CUDA, not built with it, no such GPU
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def training_memory(report, batch_size: int, optimizer: str = "sgd", models: int = 1) -> dict[str, int]:
    """Bytes a training step needs, estimated from the analysis ``report`` (at any batch size):
    the layer outputs kept for backward, the batch itself, weights, gradients and optimizer state.
    float32 throughout; a lower bound more than a promise (gradients in flight come on top)."""
    batch0 = max(int(report.input_shape[0]), 1) if report.input_shape else 1
    per_sample = 0
    for op in report.ops:
        for vid in op.outputs:
            shape = report.values[vid].shape
            if shape:
                per_sample += math.prod(shape) // batch0
    inputs = math.prod(report.input_shape[1:]) if report.input_shape else 0
    states = {"sgd": 1, "adam": 2, "adamw": 2}.get(optimizer, 2)
    return {
        "activations": 4 * per_sample * batch_size,  # every layer's output, saved for backward
        "batch": 4 * inputs * batch_size,
        # weights, grads and optimizer state of every model trained (a twin run keeps both; their
        # steps take turns, so one step's activations are alive at a time)
        "weights": 4 * (2 + states) * int(report.total_params) * models,
    }


class TrainingMemoryError(DataError):
    """A run whose estimated memory exceeds what is free. ``reason`` gives the numbers without the
    command line's advice; ``fits`` is the largest batch that fits (0: not even batch 1)."""

    def __init__(self, reason: str, advice: str, fits: int):
        self.reason = reason
        self.fits = fits
        super().__init__(f"{reason}; {advice}")


def check_training_memory(report, batch_size: int, optimizer: str, device: str, name: str = "the model",
                          models: int = 1) -> None:  # fmt: skip
    """Refuse, with the numbers, a run whose estimated memory exceeds what is free on ``device``
    (:class:`TrainingMemoryError`)."""
    need = training_memory(report, batch_size, optimizer, models)
    total = sum(need.values())
    free = available_memory(device)
    if free is None or total <= free * _MEMORY_HEADROOM:
        return
    fixed = need["weights"]
    per_item = max((need["activations"] + need["batch"]) / batch_size, 1)
    fits = max(int((free * _MEMORY_HEADROOM - fixed) // per_item), 0)
    advice = (f"use --batch {fits} or less" if fits >= 1 else
              "even batch 1 does not fit; use a smaller input (--input) or a smaller model")  # fmt: skip
    raise TrainingMemoryError(
        f"training {name} at batch {batch_size} needs about {human_bytes(total)} of memory on "
        f"{device} (activations {human_bytes(need['activations'])}, weights, gradients and "
        f"{optimizer} state {human_bytes(fixed)}), but only {human_bytes(free)} is free",
        advice, fits,
    )


def _to_nchw(x: np.ndarray, want: tuple[int, ...], where: str) -> np.ndarray:
    if x.dtype == np.bool_:
        x = x.astype(np.uint8)
    if len(want) != 3:
        return x
    if x.ndim == 3:  # N×H×W grey
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise DataError(
        f"{where}: x should hold images as N×C×H×W, N×H×W×C or N×H×W; got {'x'.join(map(str, x.shape))}"
    )


# ------------------------------------------------------------------------------------ folders


def _have_pil() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def read_image(path: Path) -> np.ndarray:
    """One image as an H×W×C array (uint8, uint16 or float). Raises DataError."""
    suffix = path.suffix.lower()
    _regular(path, str(path))
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim == 2:
                a = a[:, :, None]
            elif a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
                a = a.transpose(1, 2, 0)
            if a.ndim != 3 or not np.issubdtype(a.dtype, np.number):
                raise DataError(
                    f"{path}: expected a numeric H×W, H×W×C or C×H×W array, got {a.shape} {a.dtype}"
                )
            return a
        if suffix in (".ppm", ".pgm", ".pnm"):
            return _read_pnm(path)
        if suffix in _PIL_IMAGES:
            import PIL.Image

            with PIL.Image.open(path) as im:
                if im.mode not in ("L", "RGB", "RGBA", "I;16"):
                    im = im.convert("RGB")
                a = np.asarray(im)
            return a[:, :, None] if a.ndim == 2 else a
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow and numpy raise many kinds on a corrupt image; the user is told which, and the file
        raise DataError(f"{path}: cannot read this image ({type(e).__name__}: {e})") from None
    raise DataError(f"{path}: unsupported image type {suffix}")


def _read_pnm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic = data[:2]
    if magic not in (b"P2", b"P3", b"P5", b"P6"):
        raise DataError(f"{path}: not a PPM/PGM image (expected P2, P3, P5 or P6 at the start)")
    channels = 3 if magic in (b"P3", b"P6") else 1
    (w, h, maxval), pos = pnm_header(data, path)
    if w <= 0 or h <= 0 or not 0 < maxval < 65536:
        raise DataError(f"{path}: bad PPM/PGM size {w}x{h} or maxval {maxval}")
    raster = _pnm_raster(data, pos, binary=magic in (b"P5", b"P6"), n=w * h * channels, maxval=maxval)
    if raster is None:
        raise DataError(f"{path}: truncated image data ({w}x{h}, {channels} channels)")
    return pnm_scaled(raster.reshape(h, w, channels), maxval)


def pnm_header(data: bytes, path: Path) -> tuple[list[int], int]:
    """Width, height and maxval of a PPM/PGM (after its 2-byte magic), and where they end:
    decimal fields apart by whitespace, with ``#`` comments to the end of a line."""
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        pos = _skip_blanks(data, pos)
        if data[pos : pos + 1] == b"#":
            while pos < len(data) and data[pos : pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise DataError(f"{path}: malformed PPM/PGM header")
        fields.append(int(data[start:pos]))
    return fields, pos


def _skip_blanks(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos : pos + 1].isspace():
        pos += 1
    return pos


def _pnm_raster(data: bytes, pos: int, binary: bool, n: int, maxval: int) -> np.ndarray | None:
    """The ``n`` samples after the header ending at ``pos``: big-endian bytes or words (P5/P6) or
    decimal text (P2/P3). None when the file holds fewer."""
    if binary:
        pos += 1  # exactly one whitespace byte before the raster
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        if len(data) - pos < n * dtype.itemsize:
            return None
        return np.frombuffer(data, dtype=dtype, count=n, offset=pos)
    vals = data[pos:].split()
    if len(vals) < n:
        return None
    return np.array([int(v) for v in vals[:n]], dtype=np.uint16 if maxval > 255 else np.uint8)


def pnm_scaled(a: np.ndarray, maxval: int) -> np.ndarray:
    """Samples as uint8 (maxval 255), native uint16 (65535) or float in 0..1 (any other maxval)."""
    if maxval not in (255, 65535):
        return a.astype(np.float32) / maxval
    if a.dtype != np.uint8:
        return a.astype(np.uint16)
    return a


def load_image_folder(path: str | os.PathLike, sample_shape: Sequence[int], seed: int = 0) -> ArrayData:
    """One sub-folder per class (sorted by name); images resized to the model's input size."""
    root = Path(path)
    where = f"folder:{path}"
    want = tuple(sample_shape)
    classes = class_folders(root, want, where)
    files, skipped = scan_images(root, classes, where)
    decoded = [decode_image(f, want[1:]) for f, _ in files]
    integer = all(whole for _, whole in decoded)
    x = stack_images([t for t, _ in decoded], want[0], integer)
    y = np.array([label for _, label in files], dtype=np.int64)
    note = f", {sum(skipped.values())} files skipped ({_pil_hint(skipped)})" if skipped else ""
    return ArrayData(
        x.numpy(), y, sample_shape=want, num_classes=len(classes), seed=seed, where=where,
        name=f"{root.name}/ ({len(files)} images, {len(classes)} classes{note})", class_names=classes,
        scale=1 / 255 if integer else 1.0,
    )  # fmt: skip


def class_folders(root: Path, want: tuple[int, ...], where: str) -> list[str]:
    """The class sub-folders of ``root``, sorted (hidden ones left out); at least two, for a
    model that takes images (``want`` is C×H×W)."""
    if not root.is_dir():
        raise DataError(f"{where}: {'no such folder' if not root.exists() else 'not a folder'}; expected a "
                        "folder with one sub-folder of images per class")  # fmt: skip
    if len(want) != 3:
        raise DataError(f"{where}: image folders need a model that takes images (C×H×W); this one takes "
                        f"{'x'.join(map(str, want))}")  # fmt: skip
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"{where}: found {len(classes)} class sub-folder(s); expected one sub-folder per class "
            "(at least 2), e.g. cat/, dog/"
        )
    return classes


def scan_images(root: Path, classes: list[str], where: str) -> tuple[list[tuple[Path, int]], dict[str, int]]:
    """Every image file resviz can read, with its class's index, and the count of images skipped
    by suffix (PNG/JPEG/... without Pillow). A class without a readable image is refused."""
    pil = _have_pil()
    readable = _NUMPY_IMAGES + (_PIL_IMAGES if pil else ())
    files: list[tuple[Path, int]] = []
    skipped: dict[str, int] = {}
    for label, name in enumerate(classes):
        found = _class_images(root / name, readable, skipped)
        if not found:
            hint = (
                _pil_hint(skipped)
                if skipped
                else ("resviz reads .npy, .ppm and .pgm" + (" and PNG/JPEG/BMP/TIFF/WebP" if pil else ""))
            )
            raise DataError(f"{where}: no readable images in {name}/ ({hint})")
        files += [(f, label) for f in found]
    return files, skipped


def _class_images(folder: Path, readable: tuple[str, ...], skipped: dict[str, int]) -> list[Path]:
    """The readable images under ``folder`` (recursively, sorted, hidden files left out); images
    of a kind that needs Pillow are counted into ``skipped``."""
    found = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        s = f.suffix.lower()
        if s in readable:
            found.append(f)
        elif s in _PIL_IMAGES:
            skipped[s] = skipped.get(s, 0) + 1
    return found


def decode_image(f: Path, size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
    """One image as a C×H×W float tensor resized to ``size`` (bilinear, antialiased when
    shrinking), in 0..1 for integer images, and whether it was an integer image."""
    a = np.ascontiguousarray(read_image(f))
    if not a.flags.writeable:  # torch.from_numpy wants memory it may write
        a = a.copy()
    t = torch.from_numpy(a).permute(2, 0, 1)
    integer = a.dtype in (np.uint8, np.uint16)
    t = t.float() / (255 if a.dtype == np.uint8 else 65535) if integer else t.float()
    if t.shape[0] not in (1, 3, 4):
        raise DataError(f"{f}: images must have 1, 3 or 4 channels, this one has {t.shape[0]}")
    h, w = size
    if tuple(t.shape[1:]) != (h, w):
        t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False,
                          antialias=h < t.shape[1] or w < t.shape[2])[0]  # fmt: skip
    return t, integer


def stack_images(images: list[torch.Tensor], want_c: int, integer: bool) -> torch.Tensor:
    """Images of 1, 3 or 4 channels as one N×C×H×W batch: C is the most any has (alpha dropped
    unless the model takes 4), grey spread to RGB; back to uint8 when all were integer images."""
    c = max(t.shape[0] for t in images)
    c = 3 if c == 4 and want_c != 4 else c
    x = torch.stack([t if t.shape[0] == c else t.expand(c, -1, -1) if t.shape[0] == 1 else t[:c] for t in images])
    if integer:
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x


def _pil_hint(skipped: dict[str, int]) -> str:
    kinds = ", ".join(f"{n} {s}" for s, n in sorted(skipped.items()))
    return (
        f"{kinds} files need Pillow, which is not installed; without it resviz reads .npy, .ppm and "
        ".pgm images (pip install pillow, or convert the images)"
    )
