"""The phases of reading training data, of building a Trainer and of its step, each on its own
(issue 11: C901 functions split into phases that return data); and the store's callback errors,
which are said, not only kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from resviz.core.analysis.pipeline import analyze
from resviz.core.errors import ResvizError
from resviz.core.training import data
from resviz.core.training.data import DataError
from resviz.core.training.store import RunStore
from resviz.core.training.trainer import (
    TrainConfig,
    Trainer,
    TrainingError,
    _analysed,
    classifier_classes,
    training_copy,
    training_data,
)
from tests.nets import TinyResNet

SHAPE = (1, 3, 8, 8)

# ------------------------------------------------------------------------------------ npz


def test_npz_labels_take_a_column_and_whole_floats_and_refuse_the_rest():
    assert data.npz_labels(np.array([[1], [2]]), "w").tolist() == [1, 2]
    got = data.npz_labels(np.array([0.0, 3.0]), "w")
    assert got.dtype == np.int64 and got.tolist() == [0, 3]
    for bad in (np.array([0.5, 1.0]), np.zeros((2, 2), np.int64), np.array(["a", "b"])):
        with pytest.raises(DataError, match=r"^w: y must be a 1-d array of integer class labels"):
            data.npz_labels(bad, "w")


def test_label_count_checks_in_the_order_a_user_fixes_them():
    with pytest.raises(DataError, match="x has 3 samples but y has 0 labels"):
        data._check_label_count(3, np.array([], np.int64), "w")
    with pytest.raises(DataError, match="x and y are empty"):
        data._check_label_count(0, np.array([], np.int64), "w")
    with pytest.raises(DataError, match="labels must be 0 or more, found -1"):
        data._check_label_count(2, np.array([0, -1]), "w")
    data._check_label_count(2, np.array([0, 1]), "w")


def test_a_corrupt_npz_skips_the_size_check_and_is_reported_by_the_read(tmp_path):
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.zeros((4, 3, 8, 8), np.float32), y=np.arange(4))
    bad = tmp_path / "bad.npz"
    raw = bytearray(good.read_bytes())
    for cut in (len(raw) // 2, 40):  # truncated: no central directory; garbled local header
        bad.write_bytes(bytes(raw[:cut]) + bytes(raw[cut + 8 :]))
        data._check_npz_size(bad, "npz:bad")  # says nothing: the read below does
        with pytest.raises(DataError, match=r"^npz:.*bad.npz: "):
            data.load_npz(bad, (3, 8, 8))


def test_cuda_memory_is_unknown_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    assert data.available_memory("cuda") is None


# ------------------------------------------------------------------------------------ PNM


def test_pnm_header_skips_comments_and_says_where_the_raster_starts():
    raw = b"P6 # a comment\n 3\t2 # another\n255\nXYZ"
    fields, pos = data.pnm_header(raw, "f")
    assert fields == [3, 2, 255] and raw[pos:] == b"\nXYZ"
    with pytest.raises(DataError, match="malformed PPM/PGM header"):
        data.pnm_header(b"P5\n3 x 2\n", "f")


def test_pnm_raster_reads_binary_and_text_samples_or_says_it_is_short():
    assert data._pnm_raster(b"\n\x01\x02", 0, binary=True, n=2, maxval=255).tolist() == [1, 2]
    assert data._pnm_raster(b"\n\x01\x00", 0, binary=True, n=1, maxval=65535).tolist() == [256]
    assert data._pnm_raster(b"\n\x01", 0, binary=True, n=2, maxval=255) is None
    assert data._pnm_raster(b" 7 300\n", 0, binary=False, n=2, maxval=1000).tolist() == [7, 300]
    assert data._pnm_raster(b" 7", 0, binary=False, n=2, maxval=255) is None


def test_pnm_samples_are_scaled_only_for_an_unusual_maxval():
    a = np.array([[[0], [15]]], np.uint8)
    assert data.pnm_scaled(a, 255) is a
    assert data.pnm_scaled(a, 15).tolist() == [[[0.0], [1.0]]]
    big = np.array([[[1]]], np.dtype(">u2"))
    assert data.pnm_scaled(big, 65535).dtype == np.uint16


# ------------------------------------------------------------------------------------ folders


def test_class_folders_are_sorted_visible_and_at_least_two(tmp_path):
    for name in ("b", "a", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.txt").write_text("")
    assert data.class_folders(tmp_path, (3, 8, 8), "w") == ["a", "b"]
    with pytest.raises(DataError, match="need a model that takes images"):
        data.class_folders(tmp_path, (10,), "w")
    with pytest.raises(DataError, match="found 0 class sub-folder"):
        data.class_folders(tmp_path / "a", (3, 8, 8), "w")
    with pytest.raises(DataError, match="no such folder"):
        data.class_folders(tmp_path / "nope", (3, 8, 8), "w")


def test_scan_counts_images_it_cannot_read_and_refuses_a_class_without_any(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_have_pil", lambda: False)
    for name in ("a", "b"):
        (tmp_path / name / "deep").mkdir(parents=True)
        np.save(tmp_path / name / "deep" / "1.npy", np.zeros((2, 2)))
        (tmp_path / name / "2.png").write_bytes(b"")
        (tmp_path / name / ".3.npy").write_bytes(b"")
    files, skipped = data.scan_images(tmp_path, ["a", "b"], "w")
    assert [(f.relative_to(tmp_path).as_posix(), label) for f, label in files] == [("a/deep/1.npy", 0),
                                                                                     ("b/deep/1.npy", 1)]  # fmt: skip
    assert skipped == {".png": 2}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable images in c/ \(1 \.jpg, 2 \.png files need Pillow"):
        data.scan_images(tmp_path, ["a", "b", "c"], "w")


def test_decode_image_scales_integer_images_and_resizes(tmp_path):
    f = tmp_path / "i.npy"
    np.save(f, np.full((4, 6, 3), 255, np.uint8))
    t, integer = data.decode_image(f, (2, 3))
    assert integer and t.shape == (3, 2, 3) and torch.allclose(t, torch.ones(3, 2, 3))
    np.save(f, np.full((2, 2), 0.5, np.float32))
    t, integer = data.decode_image(f, (2, 2))
    assert not integer and t.shape == (1, 2, 2) and t.max() == 0.5
    np.save(f, np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="1, 3 or 4 channels, this one has 2"):
        data.decode_image(f, (2, 2))


def test_stack_images_spreads_grey_and_drops_alpha_unless_the_model_takes_four():
    grey, rgba = torch.full((1, 2, 2), 0.5), torch.ones(4, 2, 2)
    x = data.stack_images([grey, rgba], 3, integer=True)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 2, 2) and x[0].unique().tolist() == [128]
    assert data.stack_images([grey, rgba], 4, integer=False).shape == (2, 4, 2, 2)


# ------------------------------------------------------------------------------------ Trainer


def small(seed=0):
    torch.manual_seed(seed)
    return TinyResNet(widths=(8,), blocks=1)


def test_training_copy_never_trains_the_users_module_unless_the_trainer_owns_it():
    model = small()
    report = analyze(model, SHAPE, suggest_sizes=False)
    net, notes = training_copy(model, report, "m", owned=False, plain=False)
    assert net is not model and notes == []
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.state_dict().values()))
    assert training_copy(model, report, "m", owned=True, plain=False)[0] is model


def test_training_copy_makes_the_plain_twin_and_says_when_there_is_nothing_to_drop():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    plain(torch.zeros(SHAPE))
    report = analyze(plain, SHAPE, suggest_sizes=False)
    _, notes = training_copy(plain, report, "m", owned=False, plain=True)
    assert notes == ["the model has no residual adds: its plain twin is the model itself"]
    with torch.device("meta"):
        meta = nn.Linear(2, 2)
    with pytest.raises(TrainingError, match="on the meta device"):
        training_copy(meta, report, "m", owned=False, plain=False)


def test_training_copy_says_why_a_model_cannot_be_copied():
    class Stubborn(nn.Linear):
        def __deepcopy__(self, memo):
            raise TypeError("no copies")

    report = analyze(nn.Linear(3, 2), (1, 3), suggest_sizes=False)
    with pytest.raises(TrainingError, match=r"m: cannot copy the model to train it \(TypeError: no copies\)"):
        training_copy(Stubborn(3, 2), report, "m", owned=False, plain=False)


def test_classifier_classes_and_data_classes_are_checked_against_each_other():
    report = analyze(small(), SHAPE, suggest_sizes=False)
    assert classifier_classes(report, "m") == 10
    with pytest.raises(TrainingError, match="needs a classifier with output"):
        classifier_classes(analyze(nn.Conv2d(3, 2, 1), SHAPE, suggest_sizes=False), "m")
    assert training_data("synthetic:3", (3, 8, 8), 10, 0).num_classes == 3
    twelve = data.open_data("synthetic:12", (3, 8, 8), 12, 0)  # a source made for another model
    assert training_data(twelve, (3, 8, 8), 12, 0) is twelve
    with pytest.raises(ResvizError, match="has 12 classes but the model gives 10 outputs"):
        training_data(twelve, (3, 8, 8), 10, 0)


def test_a_report_is_made_only_when_none_is_given():
    model = small()
    report = analyze(model, SHAPE, suggest_sizes=False)
    assert _analysed(model, report, None, "m") is report
    assert _analysed(model, None, SHAPE, "m").input_shape == SHAPE
    with pytest.raises(ResvizError, match="needs input_shape"):
        _analysed(model, None, None, "m")


def test_a_failed_forward_leaves_no_gradients_and_no_half_recorded_probes():
    t = Trainer(small(), TrainConfig(batch_size=4, lr=0.05), input_shape=SHAPE)
    x, y = t.next_batch()
    t._forward_backward(x, y, 0)
    assert all(p.grad is not None for p in t.params)
    with pytest.raises(TrainingError, match="during the forward pass"):
        t._forward_backward(x[:, :2], y, 0)  # 2 channels: the stem conv raises
    assert all(p.grad is None for p in t.params)
    rec = t.step()  # and the next step runs as usual
    assert rec.step == 0 and set(rec.blocks) == set(t.block_names)


def test_measure_returns_loss_correct_count_and_norms_in_one_list():
    t = Trainer(small(), TrainConfig(batch_size=4, lr=0.05), input_shape=SHAPE)
    x, y = t.next_batch()
    logits, loss = t._forward_backward(x, y, 0)
    values, _, _ = t._measure(loss, logits, y)
    grad_sq = sum(float(p.grad.double().pow(2).sum()) for p in t.params)
    assert values[0] == pytest.approx(loss.item()) and 0 <= values[1] <= 4
    assert values[2] == pytest.approx(grad_sq, rel=1e-4)
    assert len(values) > 3 + len(t.block_names)  # block norms, then activation statistics


# ------------------------------------------------------------------------------------ store


def test_a_failing_store_callback_is_warned_once_and_kept_every_time():
    store = RunStore(["b"])

    def broken(s, p):
        raise KeyError("oops")

    store.on("stepped", broken)
    with pytest.warns(RuntimeWarning, match=r"stepped callback 'broken': KeyError\('oops'\); the run goes on"):
        store.append({"step": 0, "loss": 1.0, "blocks": {}})
    with warnings_as_errors():
        store.append({"step": 1, "loss": 1.0, "blocks": {}})  # not warned again
    assert len(store.callback_errors) == 2


def warnings_as_errors():
    import warnings

    class _Ctx:
        def __enter__(self):
            self.c = warnings.catch_warnings()
            self.c.__enter__()
            warnings.simplefilter("error")

        def __exit__(self, *exc):
            return self.c.__exit__(*exc)

    return _Ctx()
