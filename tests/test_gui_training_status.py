"""The Training tab's status and detail lines, from plain values (no window)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from resviz.gui.training.views import run_detail, step_parts  # noqa: E402

LAST = {"step": 9, "loss": 1.25, "accuracy": 0.5, "lr": 0.01}


def test_the_latest_step_reads_step_of_target_loss_accuracy_rate_and_lr():
    parts = step_parts(LAST, None, 20, "plain", "<b>3.0</b> steps/s")
    assert parts[0] == "step <b>10</b> / 20"
    assert "loss <b>" in parts[1] and "acc <b>50.0%</b>" == parts[2]
    assert parts[3] == "<b>3.0</b> steps/s" and parts[4] == "lr 0.01"
    assert step_parts(LAST, None, 0, "plain")[0] == "step <b>10</b>"  # no target: no "/ 0"
    assert not any("steps/s" in p for p in step_parts(LAST, None, 0, "plain"))  # not running: no rate


def test_a_twin_or_an_overlay_is_named_beside_each_number():
    plain = {"step": 9, "loss": 2.5, "accuracy": 0.25, "lr": 0.01}
    parts = step_parts(LAST, plain, 0, "overlay")
    assert "· overlay <b>" in parts[1] and parts[2] == "acc <b>50%</b> · overlay <b>25%</b>"


def test_the_detail_line_says_the_run_s_settings_and_its_threads():
    info = {"model": "resnet20", "twin": True, "data": "synthetic", "optimizer": "sgd",
            "batch_size": 32, "device": "cpu", "threads": 1}  # fmt: skip
    assert run_detail(info) == "resnet20 + plain twin · synthetic · sgd · batch 32 · cpu, 1 thread"
    assert run_detail(dict(info, twin=False, threads=4)).endswith("cpu, 4 threads")
    assert run_detail(dict(info, device="cuda", threads=None)).endswith("batch 32 · cuda")
