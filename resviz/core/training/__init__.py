"""Headless training with per-block probes, and runs as data (no Qt here).

>>> from resviz.core.training import Trainer, TrainConfig
>>> t = Trainer.from_session(open_model("resnet20"), TrainConfig(batch_size=32))
>>> rec = t.step()   # StepRecord: loss, accuracy, lr, seconds, blocks[name][probe], flags

The reading side never imports torch: ``records`` (StepRecord, CSV/JSONL), ``store`` (RunStore,
RunState: the one run model) and ``rundir`` (the run directory format, RunWriter, open_run) load
with numpy alone. Names from ``trainer``, ``probes``, ``data`` and ``monitor`` are imported on first
use (PEP 562), so ``from resviz.core.training import open_run`` stays torch-free.
"""

from __future__ import annotations

import importlib

from .rundir import RUN_FORMAT, Run, RunReader, RunWriter, default_run_dir, is_run_dir, open_run
from .steps import PROBES, RecordWriter, StepRecord, read_csv, read_jsonl, write_csv, write_jsonl
from .store import RunState, RunStore, natural_key, summarise_flags

_LAZY = {
    "ArrayData": "data", "DataError": "data", "DataSource": "data", "SyntheticData": "data",
    "open_data": "data", "parse_data_arg": "data",
    "ProbeSet": "probes", "is_plain_twin": "probes", "plain_twin": "probes",
    "OPTIMIZERS": "trainer", "TrainConfig": "trainer", "Trainer": "trainer", "TrainingBlocked": "trainer",
    "TrainingError": "trainer", "TwinRun": "trainer", "TwinStep": "trainer", "resolve_device": "trainer",
    "Monitor": "monitor",  # the function is resviz.monitor (here `monitor` is the submodule)
}  # fmt: skip


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


__all__ = [
    "OPTIMIZERS", "PROBES", "RUN_FORMAT", "ArrayData", "DataError", "DataSource", "Monitor", "ProbeSet",
    "RecordWriter", "Run", "RunReader", "RunState", "RunStore", "RunWriter", "StepRecord",
    "SyntheticData", "TrainConfig", "Trainer", "TrainingBlocked", "TrainingError", "TwinRun", "TwinStep",
    "default_run_dir", "is_run_dir", "is_plain_twin", "natural_key", "open_data", "open_run",
    "parse_data_arg", "plain_twin", "read_csv", "read_jsonl", "resolve_device", "summarise_flags",
    "write_csv", "write_jsonl",
]  # fmt: skip
