"""``resviz.monitor``: the per-block probes on the user's own model, in the user's own loop.

::

    with resviz.monitor(model, "runs/r1", input_shape=(1, 3, 32, 32)) as mon:
        for x, y in loader:                    # `model` may be wrapped in DDP after this line
            loss = F.cross_entropy(ddp_model(x), y); opt.zero_grad(); loss.backward(); opt.step()
            mon.step(loss)                     # one JSON line per recorded step

What it does to the model: each probed block's ``forward`` gets a per-instance wrapper (an
instance attribute, see :mod:`resviz.core.training.probes`) that registers tensor gradient hooks on
the block's input and output and watches the block's residual add. Nothing is patched globally;
no module hook is registered. :meth:`Monitor.close` (also on leaving the ``with`` block) takes every
wrapper off, leaving each module's ``__dict__`` exactly as it was.

Per recorded step, ``mon.step(loss)`` reads the gradients already in ``p.grad`` (after
``backward``; ``optimizer.step`` does not clear them) and what the hooks measured during that
step's forward/backward, and writes one :class:`~resviz.core.training.steps.StepRecord` line to
``steps.jsonl`` of the run directory: ``{"step", "loss", "blocks": {block: {grad_norm,
input_grad_norm, output_grad_norm, residual_ratio, gain}}, "flags", "nonfinite", ...}``. Steps count
from 0 (the first ``mon.step`` call). ``every=N`` records steps 0, N, 2N, ...; on the other steps
the hooks are not even registered and nothing is communicated.

Never raises into the user's training: a failure inside the probes is written to the run's
``events.jsonl`` (and kept in ``mon.errors``), that step is skipped, and the run goes on. Errors in
the user's own code pass through untouched.

Distributed (``torch.distributed`` initialised, e.g. under ``torchrun`` with DDP): parameter
gradients are already averaged by DDP, so their norms are the global batch's. The activation
gradient norms and the residual norms are combined across ranks with one small all-reduce per
recorded step (sums of squares; gradient norms scaled by 1/world², because each rank's local loss
is the mean over its shard and DDP's global gradient is their average), and the loss is averaged:
the record is what a single process would measure on the global batch. Only rank 0 writes.
"""

from __future__ import annotations

import math
import os
import time
import traceback

import torch
from torch import nn

from ..errors import ResvizError
from .probes import IN, OUT, SLOTS, ProbeSet, ProbeSink, _dot_ok, param_sq_norms
from .rundir import RunWriter, default_run_dir
from .steps import StepRecord, flag_norms
from .store import RunState

MAX_LOGGED_ERRORS = 20  # per run: after that only a count (a failing probe must not flood the disk)


class _SafeSink(ProbeSink):
    """The probe sink of a monitor: only counts a training forward (grad enabled), and a failure
    in a probe is reported to the monitor instead of raising into the user's forward/backward.
    The broad excepts here and in :meth:`Monitor.step` are the contract: whatever a probe raises,
    the user's training goes on; the failure is written to ``events.jsonl`` (and ``mon.errors``)."""

    def __init__(self, n_blocks: int, monitor: Monitor):
        super().__init__(n_blocks)
        self._monitor = monitor

    def hook_input(self, x, slot):
        try:
            super().hook_input(x, slot)
        except Exception as e:  # noqa: BLE001 - never into the user's loop: logged (events.jsonl)
            self._monitor._fail("input hook", e)

    def hook_output(self, y, slot):
        try:
            super().hook_output(y, slot)
        except Exception as e:  # noqa: BLE001 - never into the user's loop: logged (events.jsonl)
            self._monitor._fail("output hook", e)

    def grad_hook(self, slot, grad):
        try:
            super().grad_hook(slot, grad)
        except Exception as e:  # noqa: BLE001 - never into the user's loop: logged (events.jsonl)
            self._monitor._fail("gradient hook", e)

    def measure(self, t, made_by=None):
        try:
            return super().measure(t, made_by)
        except Exception as e:  # noqa: BLE001 - never into the user's loop: logged (events.jsonl)
            self._monitor._fail("residual probe", e)
            return None

    def add_norms(self, slot_res, res, sc):
        if not torch.is_grad_enabled():  # an evaluation forward inside the step: not training
            return
        try:
            super().add_norms(slot_res, res, sc)
        except Exception as e:  # noqa: BLE001 - never into the user's loop: logged (events.jsonl)
            self._monitor._fail("residual probe", e)


def _host_param_sq(grads: list[torch.Tensor]) -> list[float]:
    """Squared norms of CPU gradients as Python floats. Float32 contiguous ones (the usual): a BLAS
    dot each, ~13% less time than ``_foreach_norm`` where the gradients come from memory (resnet50's
    25M: 8.6 ms against 9.8 ms); it overflows past a norm of ~1.8e19, and the caller redoes a step
    that is not finite in float64. Others: ``_foreach_norm``, its float32 norms squared in float64
    as on the device."""
    out = []
    for g in grads:
        if not _dot_ok(g):
            return [n * n for n in torch.stack(torch._foreach_norm(grads)).tolist()] if grads else []
        f = g.view(-1)
        out.append(torch.dot(f, f).item())
    return out


def _grad_slots(act: torch.Tensor) -> torch.Tensor:
    """Mask of the activation-gradient slots (block input/output) in a probe-sink vector."""
    slots = torch.arange(act.numel(), device=act.device) % SLOTS
    return (slots == IN) | (slots == OUT)


def _dist():
    """(rank, world size, process group usable) of torch.distributed, or (0, 1, False)."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size(), True
    return 0, 1, False


def _probed_module(model) -> nn.Module:
    """The module the probes go on: the user's module inside a (Distributed)DataParallel wrapper
    (the wrapper calls it), which must be an eager ``nn.Module``."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        model = model.module
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ResvizError(
            f"resviz.monitor needs an eager torch.nn.Module, not a {type(model).__name__} "
            "(TorchScript and torch.export programs cannot be instrumented)"
        )
    return model


def _checked_every(every) -> int:
    every = int(every)
    if every < 1:
        raise ResvizError(f"resviz.monitor: every must be 1 or more, got {every}")
    return every


def _analysed(model: nn.Module, input_shape, name: str):
    """The model's report, traced with one input of ``input_shape``."""
    if input_shape is None:
        raise ResvizError("resviz.monitor needs input_shape (e.g. (1, 3, 32, 32)) to find the blocks")
    from ..analysis.pipeline import analyze

    return analyze(model, input_shape, name=name, suggest_sizes=False)


class Monitor:
    """The per-block probes on a live model; see the module doc. Build with :func:`monitor`."""

    def __init__(self, model: nn.Module, run_dir=None, *, input_shape=None, every: int = 1, report=None,
                 name: str | None = None, config: dict | None = None, tensorboard=False):  # fmt: skip
        model = _probed_module(model)
        self.model = model
        self.every = every = _checked_every(every)
        self.name = name or type(model).__name__
        self.rank, self.world_size, self.distributed = _dist()
        self.report = report = report if report is not None else _analysed(model, input_shape, self.name)
        params = [p for p in model.parameters()]
        self.device = params[0].device if params else torch.device("cpu")
        self._host = self.device.type == "cpu" and not self.distributed  # see _host_values
        self.step_index = 0  # mon.step calls so far
        self.errors: list[str] = []
        self.error_count = 0
        self.last: StepRecord | None = None
        self._closed = False
        self._t_last = time.perf_counter()
        self._zero = torch.zeros((), device=self.device)
        self.writer: RunWriter | None = None
        self.run_dir = None
        self._tb = None
        self.probes = ProbeSet(model, report, residual_ratio=True, device=self.device)
        try:
            self.probes.sink = _SafeSink(len(self.probes.names), self)
            for w in self.probes.watches:
                w.sink = self.probes.sink
            self.block_names = list(self.probes.names)
            if self.rank == 0:
                cfg = {"source": "resviz.monitor", "every": every, "world_size": self.world_size,
                       "device": str(self.device), "torch": torch.__version__,
                       "input_shape": list(report.input_shape), **(config or {})}  # fmt: skip
                self._open_run(run_dir, cfg, tensorboard)
        except BaseException:
            self.probes.remove()
            raise
        self._arm(0)

    def _open_run(self, run_dir, cfg: dict, tensorboard) -> None:
        """Rank 0: the run directory (report, configuration, notes) and TensorBoard if asked."""
        from .runreport import report_json

        self.writer = RunWriter.create(run_dir or default_run_dir(self.name), name=self.name, config=cfg,
                                       blocks=self.block_names, report=report_json(self.report))  # fmt: skip
        self.run_dir = self.writer.path
        for note in self.probes.notes:
            self.writer.log("note", note)
        if tensorboard:
            self._open_tensorboard(tensorboard)

    # ---------------------------------------------------------------- the user's calls

    def step(self, loss=None, *, accuracy: float | None = None, lr: float | None = None,
             grad_scale: float | None = None) -> StepRecord | None:  # fmt: skip
        """Record this step (when it is one of every ``every``): call after ``loss.backward()``
        (before or after ``optimizer.step()``, before the next ``zero_grad``). Returns the record
        (on every rank), None on a step that is not recorded or whose probes failed. Never raises.

        Mixed precision with a ``GradScaler``: call after ``scaler.step(opt)`` (which unscales the
        parameter gradients) and pass ``grad_scale=scaler.get_scale()`` of this step, so the
        activation gradients, which backward saw scaled, are measured unscaled too."""
        if self._closed:
            return None
        k = self.step_index
        self.step_index += 1
        rec = None
        try:
            if k % self.every == 0:
                rec = self._record(k, loss, accuracy, lr, grad_scale)
        except Exception as e:  # noqa: BLE001 - never into the user's loop: logged (events.jsonl)
            self._fail(f"step {k}", e)
            rec = None
        finally:
            try:
                self._arm(self.step_index)
            except Exception as e:  # noqa: BLE001 - as above
                self._fail("re-arming the probes", e)
        return rec

    def close(self, state: RunState | str | None = None, message: str = "") -> None:
        """Take every wrapper off the model and close the run directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.probes.sink.end()
        self.probes.sink.clear()
        self.probes.remove()
        if self._tb is not None:
            try:
                self._tb.close()
            except Exception as e:  # noqa: BLE001 - closing must go on to close the run; the failure is logged
                self._fail("closing TensorBoard", e)
        if self.writer is not None:
            if self.error_count > len(self.errors):
                self.writer.log("error", f"{self.error_count} probe failures in all")
            self.writer.close(state, message)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            why = "stopped by Ctrl-C" if exc_type is KeyboardInterrupt else f"{exc_type.__name__}: {exc}"
            self.close(RunState.STOPPED, why)

    # ---------------------------------------------------------------- inside

    def _arm(self, k: int) -> None:
        """Hooks on for a step to record, off (nothing registered) otherwise."""
        sink = self.probes.sink
        if k % self.every == 0:
            sink.begin()
        else:
            sink.end()
            sink.clear()

    def _fail(self, where: str, e: BaseException) -> None:
        self.error_count += 1
        if len(self.errors) >= MAX_LOGGED_ERRORS:
            return
        frame = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        at = f" at {os.path.basename(frame[0].filename)}:{frame[0].lineno}" if frame else ""
        msg = f"resviz.monitor: {where} failed: {type(e).__name__}: {e}{at}; the run goes on"
        self.errors.append(msg)
        if self.writer is not None:
            try:
                self.writer.log("error", msg)
            except (OSError, ValueError):  # disk full, or the file already closed: mon.errors keeps it
                pass

    def _record(self, k: int, loss, accuracy, lr, grad_scale=None) -> StepRecord:
        probes = self.probes
        probes.sink.end()
        with torch.no_grad():
            zero = self._zero
            grads = [g if (g := p.grad) is not None else zero for p in probes.params]
            host = self._host_values(loss, grads, grad_scale) if self._host else None
        if host is not None:
            values, measured, alias = host
        else:
            values, measured, alias = self._device_values(k, loss, grads, grad_scale)
        return self._make_record(k, values, measured, alias, loss, accuracy, lr)

    def _host_values(self, loss, grads, grad_scale):
        """One process on the CPU: the step's numbers as Python floats with one tensor op (the
        parameter-gradient norms); the same values as :meth:`_device_values`. None when a value
        is not a Python float yet (then the device path runs)."""
        probes = self.probes
        sink = probes.sink
        reduced = sink.reduce_host()
        if reduced is None:
            return None
        sink.clear()
        act, measured, alias = reduced
        if isinstance(loss, torch.Tensor):
            loss_v = loss.detach().reshape(-1)[0].item()
        else:
            loss_v = math.nan if loss is None else float(loss)
        param_sq = _host_param_sq(grads)
        grad_sq = sum(param_sq)
        if not math.isfinite(grad_sq):  # float32 norms overflow past ~1.8e19: redo in float64
            param_sq = param_sq_norms(grads, exact=True).tolist()
            grad_sq = sum(param_sq)
        block_sq = [sum(param_sq[i] for i in idx) for idx in probes.block_params]
        if grad_scale is not None and float(grad_scale) not in (0.0, 1.0):
            s2 = float(grad_scale) ** 2
            act = [v / s2 if i % SLOTS in (IN, OUT) else v for i, v in enumerate(act)]
        return [loss_v, grad_sq, *block_sq, *act], measured, alias

    def _device_values(self, k: int, loss, grads, grad_scale):
        """The step's numbers reduced on the device (and across ranks), copied to the host once."""
        probes = self.probes
        sink = probes.sink
        nb = len(probes.names)
        with torch.no_grad():
            param_sq = (
                param_sq_norms(grads) if grads else torch.zeros(0, dtype=torch.float64, device=self.device)
            )
            try:
                act, measured, alias = sink.reduce(self.device)
                if isinstance(loss, torch.Tensor):
                    loss_t = loss.detach().reshape(-1)[:1].to(self.device, torch.float64)
                else:
                    loss_t = torch.tensor([math.nan if loss is None else float(loss)], dtype=torch.float64,
                                          device=self.device)  # fmt: skip
            except Exception as e:  # noqa: BLE001 - re-raised (to step's handler) unless distributed
                if not self.distributed:
                    raise
                # every rank must join the all-reduce below, or the others wait forever
                self._fail(f"step {k}", e)
                act = torch.full((nb * SLOTS,), math.nan, dtype=torch.float64, device=self.device)
                loss_t = torch.full((1,), math.nan, dtype=torch.float64, device=self.device)
                measured, alias = set(), {}
            finally:
                sink.clear()
            if self.distributed:
                act, loss_t = self._all_reduce(act, loss_t)
            if grad_scale is not None and float(grad_scale) not in (0.0, 1.0):
                act = torch.where(_grad_slots(act), act / float(grad_scale) ** 2, act)
            parts = [loss_t, param_sq.sum().view(1), probes.block_grad_sq(param_sq), act]
            values = torch.cat(parts).tolist()  # the one device-to-host copy of the step
            if not math.isfinite(values[1]):  # float32 norms overflow past ~1.8e19: redo in float64
                param_sq = param_sq_norms(grads, exact=True)
                values[1] = param_sq.sum().item()
                values[2 : 2 + nb] = probes.block_grad_sq(param_sq).tolist()
        return values, measured, alias

    def _make_record(self, k: int, values, measured, alias, loss, accuracy, lr) -> StepRecord:
        probes = self.probes
        nb = len(probes.names)
        loss_v, grad_sq = values[0], values[1]
        blocks = probes.decode(values[2 : 2 + nb], values[2 + nb :], measured, alias)
        nonfinite = not (math.isfinite(grad_sq) and (loss is None or math.isfinite(loss_v)))
        message = ""
        if nonfinite:
            origin = probes.nonfinite_origin(blocks, measured, alias)
            where = ""
            if origin is not None:
                block, kind = origin
                where = (f"; first on the backward path in block {block}" if kind == "inside"
                         else f"; already at the output of block {block} (it arose between {block} and the loss)")  # fmt: skip
            message = f"step {k}: the loss or the gradients were NaN/Inf{where}"
        now = time.perf_counter()
        rec = StepRecord(
            step=k, loss=loss_v, accuracy=math.nan if accuracy is None else float(accuracy),
            lr=math.nan if lr is None else float(lr), seconds=(now - self._t_last) / (self.every if k else 1),
            blocks=blocks, flags=flag_norms(blocks), nonfinite=nonfinite, message=message,
        )  # fmt: skip
        self._t_last = now
        self.last = rec
        if self.writer is not None:
            self.writer.write(rec)
            if self._tb is not None:
                self._tensorboard(rec)
        return rec

    def _all_reduce(self, act: torch.Tensor, loss_t: torch.Tensor):
        """One all-reduce of [loss, squared norms per slot]; see the module doc for the scaling."""
        d = torch.distributed
        dev = (
            torch.device("cuda", torch.cuda.current_device())
            if d.get_backend() == "nccl"
            else torch.device("cpu")
        )
        packed = torch.cat([loss_t.to(dev), act.to(dev)])
        d.all_reduce(packed)  # SUM
        w = float(self.world_size)
        loss_t = (packed[:1] / w).to(self.device)
        act = packed[1:].to(self.device)
        act = torch.where(_grad_slots(act), act / (w * w), act)
        return act, loss_t

    # ---------------------------------------------------------------- TensorBoard (optional)

    def _open_tensorboard(self, where) -> None:
        logdir = (
            os.fspath(where)
            if isinstance(where, (str, os.PathLike))
            else os.fspath(self.run_dir / "tensorboard")
        )
        try:
            from tensorboard.compat.proto.summary_pb2 import Summary
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(logdir)
            self._tb_summary = Summary
        # An optional extra whose import fails in many ways (not installed, a protobuf mismatch):
        # a note in events.jsonl, and the run goes on without it.
        except Exception as e:  # noqa: BLE001
            self.writer.log(
                "note",
                f"TensorBoard scalars are off: {type(e).__name__}: {e} (pip install 'resviz[tensorboard]')",
            )

    def _tensorboard(self, rec: StepRecord) -> None:
        """The record's probes as scalars ``resviz/<block>/<probe>`` (and ``resviz/loss``): one
        event per record holding them all (``add_scalar`` per value costs ~27 µs each)."""
        try:
            Summary = self._tb_summary
            values = [
                Summary.Value(tag=f"resviz/{block}/{probe}", simple_value=v)
                for block, probes in rec.blocks.items()
                for probe, v in probes.items()
                if math.isfinite(v)
            ]
            if math.isfinite(rec.loss):
                values.append(Summary.Value(tag="resviz/loss", simple_value=rec.loss))
            self._tb.file_writer.add_summary(Summary(value=values), rec.step)
        except Exception as e:  # noqa: BLE001 - never raises into the user's training: logged in events.jsonl
            self._fail("TensorBoard", e)


def monitor(model: nn.Module, run_dir=None, *, input_shape=None, every: int = 1, **kwargs) -> Monitor:
    """Attach the per-block probes to ``model`` for the user's own training loop; see the module
    doc of :mod:`resviz.core.training.monitor`. ``run_dir`` None: a new folder under the user's data
    dir. ``input_shape``: one input, e.g. ``(1, 3, 32, 32)`` or ``"3x32x32"``."""
    return Monitor(model, run_dir, input_shape=input_shape, every=every, **kwargs)
