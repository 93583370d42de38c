"""Headless training with per-block probes (no Qt here).

>>> from resviz.core.training import Trainer, TrainConfig
>>> t = Trainer.from_session(open_model("resnet20"), TrainConfig(batch_size=32))
>>> rec = t.step()   # StepRecord: loss, accuracy, lr, seconds, blocks[name][probe], flags
"""

from __future__ import annotations

from .data import ArrayData, DataError, DataSource, SyntheticData, open_data, parse_data_arg
from .probes import ProbeSet, is_plain_twin, plain_twin
from .records import (
    PROBES,
    RecordWriter,
    RunHistory,
    StepRecord,
    read_csv,
    read_jsonl,
    write_csv,
    write_jsonl,
)
from .trainer import (
    OPTIMIZERS,
    TrainConfig,
    Trainer,
    TrainingBlocked,
    TrainingError,
    TwinRun,
    TwinStep,
    resolve_device,
)

__all__ = [
    "OPTIMIZERS", "PROBES", "ArrayData", "DataError", "DataSource", "ProbeSet", "RecordWriter",
    "RunHistory", "StepRecord", "SyntheticData", "TrainConfig", "Trainer", "TrainingBlocked",
    "TrainingError", "TwinRun", "TwinStep", "is_plain_twin", "open_data", "parse_data_arg",
    "plain_twin", "read_csv", "read_jsonl", "resolve_device", "write_csv", "write_jsonl",
]  # fmt: skip
