"""The :class:`LoadedModel` record: a model and where it came from (no torch here, so a recorded
run can be described without importing it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn
    from torch.export import ExportedProgram


@dataclass
class LoadedModel:
    """A model and where it came from."""

    module: nn.Module | None  # an nn.Module (eager) or a torch.jit.ScriptModule (TorchScript)
    exported: ExportedProgram | None  # for torch.export archives (module is None then)
    name: str  # display name: 'resnet18', 'model.py:ResNet', 'net.pt'
    source: str  # the MODEL argument as given
    kind: str  # 'zoo' | 'spec' | 'python' | 'torchscript' | 'export' | 'pickle' | 'live'
    path: Path | None  # the file to watch and reload; None for zoo and live models
    input_shape: tuple[int, ...] | None  # the default input, when the source knows it
    rebuild: Callable[[str], nn.Module] | None  # a fresh copy on a device ('cpu', 'meta', ...)
    plain_twin: Callable[[str], nn.Module] | None  # zoo/spec: the same net without shortcuts
    kwargs: dict = field(default_factory=dict)  # the --kwargs used to build it
    notes: list[str] = field(default_factory=list)  # things worth telling the user, in words
    # loaded and analysed in a child process (resviz.core.session.isolation): module is None, the report
    # holds plain records, and rebuild imports the user's file here (for training only)
    isolated: bool = False
    spec: object = None  # zoo/spec: the NetSpec it was built from (spec-level fixes, the builder)
