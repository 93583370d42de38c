"""Training data: synthetic stream, CIFAR-10 pickle folders, image folders, .npz, --data parsing."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from resviz.core.errors import ResvizError
from resviz.core.training.data import (
    ArrayData,
    DataError,
    SyntheticData,
    load_cifar10,
    load_image_folder,
    load_npz,
    open_data,
    parse_data_arg,
    read_image,
)

# ------------------------------------------------------------------------------------ synthetic


def test_synthetic_is_deterministic_and_shaped():
    a = SyntheticData((3, 16, 16), 10, seed=5)
    b = SyntheticData((3, 16, 16), 10, seed=5)
    x1, y1 = a.batch(7, 32)
    x2, y2 = b.batch(7, 32)
    assert x1.shape == (32, 3, 16, 16) and x1.dtype == torch.float32
    assert y1.dtype == torch.int64 and int(y1.min()) >= 0 and int(y1.max()) < 10
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = a.batch(8, 32)
    assert not torch.equal(x1, x3)
    x4, _ = SyntheticData((3, 16, 16), 10, seed=6).batch(7, 32)
    assert not torch.equal(x1, x4)
    assert abs(float(x1.mean())) < 0.5 and 0.3 < float(x1.std()) < 3
    assert len(a) == 0  # endless: nothing stored


def test_synthetic_classes_are_separable_by_a_linear_probe_on_fourier_features():
    """A cheap check that labels carry signal: class means differ far more than noise allows."""
    d = SyntheticData((1, 8, 8), 4, seed=0)
    x, y = d.batch(0, 2000)
    f = torch.fft.rfft2(x[:, 0]).abs().flatten(1)
    means = torch.stack([f[y == c].mean(0) for c in range(4)])
    spread = (means - means.mean(0)).norm(dim=1).mean()
    noise = torch.stack([f[y == c].std(0) for c in range(4)]).mean() / (2000 / 4) ** 0.5 * f.shape[1] ** 0.5
    assert spread > 5 * noise


@pytest.mark.parametrize("shape", [(20,), (2, 30), (1, 1, 5)])
def test_synthetic_non_image_shapes(shape):
    x, y = SyntheticData(shape, 3, seed=1).batch(0, 6)
    assert x.shape == (6, *shape) and torch.isfinite(x).all()


# ------------------------------------------------------------------------------------ CIFAR-10


def write_fake_cifar(root, n_per_batch=20, batches=(1, 2), meta=True, test=True):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    labels_all = []
    for i in batches:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        labels_all += labels
        with open(os.path.join(root, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"batch_label": b"training batch", b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, f)  # fmt: skip
    if test:
        with open(os.path.join(root, "test_batch"), "wb") as f:
            pickle.dump({b"labels": [0] * 5, b"data": np.zeros((5, 3072), np.uint8)}, f)
    if meta:
        names = [n.encode() for n in ("airplane automobile bird cat deer dog frog horse ship truck").split()]
        with open(os.path.join(root, "batches.meta"), "wb") as f:
            pickle.dump({b"label_names": names, b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}, f)
    return labels_all


def test_cifar10_folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    labels = write_fake_cifar(root)
    d = load_cifar10(root, (3, 32, 32), seed=0)
    assert d.num_classes == 10 and len(d) == 40 and d.class_names[0] == "airplane"
    x, y = d.batch(0, 16)
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    # one epoch visits every sample exactly once, in a seeded order
    idx = torch.cat([d.indices(s, 8) for s in range(5)])
    assert sorted(idx.tolist()) == list(range(40))
    assert torch.equal(d.indices(0, 8), load_cifar10(root, (3, 32, 32), seed=0).indices(0, 8))
    assert not torch.equal(d.indices(0, 40), load_cifar10(root, (3, 32, 32), seed=1).indices(0, 40))
    # labels come from the files, in the right rows
    assert torch.equal(y, torch.tensor(labels)[d.indices(0, 16)])
    # normalised per channel
    full, _ = d.batch(0, 40)
    assert abs(float(full.mean())) < 0.1 and abs(float(full.std()) - 1) < 0.1
    # the parent folder works too, and so does sniffing a bare path
    assert len(load_cifar10(tmp_path, (3, 32, 32))) == 40
    assert parse_data_arg(str(tmp_path)) == ("cifar10", str(tmp_path))
    src = open_data(f"cifar10:{root}", (3, 32, 32), 10)
    assert src.num_classes == 10


def test_cifar10_resized_and_grey(tmp_path):
    write_fake_cifar(tmp_path)
    x, _ = load_cifar10(tmp_path, (3, 16, 16)).batch(0, 4)
    assert x.shape == (4, 3, 16, 16)
    x, _ = load_cifar10(tmp_path, (1, 8, 8)).batch(0, 4)
    assert x.shape == (4, 1, 8, 8)


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_cifar10(tmp_path / "missing", (3, 32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10(tmp_path / "empty", (3, 32, 32))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"data_batch_1.*not a CIFAR-10 python batch"):
        load_cifar10(bad, (3, 32, 32))
    # a pickle that would run code is refused, not executed
    evil = tmp_path / "evil"
    evil.mkdir()

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (evil / "data_batch_1").write_bytes(pickle.dumps({b"data": Boom(), b"labels": []}))
    with pytest.raises(DataError, match="refers to"):
        load_cifar10(evil, (3, 32, 32))
    assert not (tmp_path / "pwned").exists()
    shape = tmp_path / "shape"
    shape.mkdir()
    with open(shape / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match="N×3072 uint8"):
        load_cifar10(shape, (3, 32, 32))
    keys = tmp_path / "keys"
    keys.mkdir()
    with open(keys / "data_batch_1", "wb") as f:
        pickle.dump({b"images": np.zeros((4, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match="expected keys 'data' and 'labels'"):
        load_cifar10(keys, (3, 32, 32))
    assert issubclass(DataError, ResvizError)


# ------------------------------------------------------------------------------------ folders


def write_ppm(path, img: np.ndarray):
    h, w = img.shape[:2]
    if img.ndim == 3:
        path.write_bytes(b"P6\n# made by a test\n%d %d\n255\n" % (w, h) + img.astype(np.uint8).tobytes())
    else:
        path.write_bytes(b"P5\n%d %d\n255\n" % (w, h) + img.astype(np.uint8).tobytes())


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "emu"]):
        d = tmp_path / name
        d.mkdir()
        for i in range(3):
            base = np.full((12, 10, 3), 60 * c, np.uint8) + rng.integers(0, 20, (12, 10, 3), dtype=np.uint8)
            write_ppm(d / f"{i}.ppm", base)
        write_ppm(d / "grey.pgm", np.full((9, 9), 60 * c + 5, np.uint8))
        np.save(d / "arr.npy", np.full((3, 8, 8), 60 * c, np.uint8))  # C×H×W
        (d / "notes.txt").write_text("ignored")
    src = load_image_folder(tmp_path, (3, 8, 8), seed=0)
    assert src.num_classes == 3 and src.class_names == ["cat", "dog", "emu"] and len(src) == 15
    x, y = src.batch(0, 15)
    assert x.shape == (15, 3, 8, 8)
    means = [float(x[y == c].mean()) for c in range(3)]
    assert means[0] < means[1] < means[2]  # class brightness survives resize and normalisation
    assert parse_data_arg(str(tmp_path))[0] == "folder"
    assert open_data(f"folder:{tmp_path}", (1, 4, 4), 3).batch(0, 2)[0].shape == (2, 1, 4, 4)


def test_ppm_ascii_and_16_bit(tmp_path):
    p = tmp_path / "a.ppm"
    p.write_bytes(b"P3\n2 1\n255\n255 0 0  0 255 0\n")
    a = read_image(p)
    assert a.shape == (1, 2, 3) and a[0, 0].tolist() == [255, 0, 0]
    q = tmp_path / "b.pgm"
    q.write_bytes(b"P5\n2 2\n65535\n" + np.array([0, 1000, 65535, 7], ">u2").tobytes())
    b = read_image(q)
    assert b.dtype == np.uint16 and b[:, :, 0].tolist() == [[0, 1000], [65535, 7]]
    r = tmp_path / "c.ppm"
    r.write_bytes(b"P6\n4 4\n255\n" + b"\x00" * 5)
    with pytest.raises(DataError, match="truncated"):
        read_image(r)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_image_folder(tmp_path / "nope", (3, 8, 8))
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="one sub-folder per class"):
        load_image_folder(tmp_path, (3, 8, 8))
    (tmp_path / "other").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "other" / "b.png").write_bytes(b"\x89PNG fake")
    try:
        import PIL  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"Pillow.*\.npy, \.ppm and \.pgm"):
            load_image_folder(tmp_path, (3, 8, 8))
    else:
        with pytest.raises(DataError, match="cannot read this image"):
            load_image_folder(tmp_path, (3, 8, 8))


# ------------------------------------------------------------------------------------ npz


def test_npz_channels_last_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 10, 10, 3), dtype=np.uint8)
    y = np.arange(30) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    src = load_npz(tmp_path / "d.npz", (3, 8, 8))
    assert src.num_classes == 4 and len(src) == 30
    xb, yb = src.batch(0, 30)
    assert xb.shape == (30, 3, 8, 8)
    assert sorted(yb.tolist()) == sorted(y.tolist())
    assert parse_data_arg(str(tmp_path / "d.npz")) == ("npz", str(tmp_path / "d.npz"))


def test_npz_float_nchw_and_vectors(tmp_path):
    x = np.random.default_rng(1).normal(size=(12, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0, 1] * 6, dtype=np.float64))
    xb, _ = load_npz(tmp_path / "f.npz", (1, 8, 8)).batch(0, 12)
    assert xb.shape == (12, 1, 8, 8)
    v = np.random.default_rng(2).normal(size=(10, 20)).astype(np.float32)
    np.savez(tmp_path / "v.npz", x=v, y=np.arange(10) % 2)
    xb, _ = load_npz(tmp_path / "v.npz", (20,)).batch(0, 4)
    assert xb.shape == (4, 20)


def test_npz_errors(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, images=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"a\.npz.*expected arrays named x .* found images, labels"):
        load_npz(p, (3,))
    np.savez(p, x=np.zeros((3, 4)), y=np.zeros(2, int))
    with pytest.raises(DataError, match="x has 3 samples but y has 2"):
        load_npz(p, (4,))
    np.savez(p, x=np.zeros((2, 4)), y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="integer class labels"):
        load_npz(p, (4,))
    np.savez(p, x=np.zeros((2, 5)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="cannot be fed to a model that takes 4"):
        load_npz(p, (4,))
    np.savez(p, x=np.zeros((2, 4), dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="object arrays|numeric"):
        load_npz(p, (4,))
    (tmp_path / "b.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="b.npz"):
        load_npz(tmp_path / "b.npz", (4,))
    np.savez(p, x=np.zeros((2, 5, 8, 8), np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match="5 channels but the model takes 3"):
        load_npz(p, (3, 8, 8))


# ------------------------------------------------------------------------------------ --data


def test_parse_data_arg(tmp_path):
    assert parse_data_arg(None) == ("synthetic", None)
    assert parse_data_arg("synthetic") == ("synthetic", None)
    assert parse_data_arg("synthetic:4") == ("synthetic", "4")
    assert parse_data_arg("npz:/x/y.npz") == ("npz", "/x/y.npz")
    assert parse_data_arg("CIFAR10:/d") == ("cifar10", "/d")
    with pytest.raises(DataError, match="unknown kind 'mnist'"):
        parse_data_arg("mnist:/data")
    with pytest.raises(DataError, match="no such file or folder"):
        parse_data_arg(str(tmp_path / "missing"))
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(DataError, match="cannot tell"):
        parse_data_arg(str(tmp_path / "x.bin"))
    with pytest.raises(DataError, match="give a path"):
        parse_data_arg("folder:")


def test_open_data_checks_classes(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 6), np.float32), y=np.array([0, 1, 2, 11]))
    with pytest.raises(DataError, match="12 classes but the model gives only 10 outputs"):
        open_data(f"npz:{tmp_path / 'd.npz'}", (6,), 10)
    assert open_data("synthetic", (3, 4, 4), 1000).num_classes == 10
    assert open_data("synthetic:3", (3, 4, 4), 10).num_classes == 3
    with pytest.raises(DataError, match="at least 2"):
        open_data("synthetic", (3, 4, 4), 1)


def test_array_data_epoch_wraps():
    d = ArrayData(np.arange(10, dtype=np.float32).reshape(10, 1), np.arange(10) % 2,
                  sample_shape=(1,), num_classes=2, seed=3)  # fmt: skip
    idx = d.indices(1, 7)  # positions 7..13 cross into epoch 1
    assert len(idx) == 7
    assert sorted(torch.cat([d.indices(0, 7)[:7], idx[:3]]).tolist()) == list(range(10))
