"""Train a copy of a model one short step at a time, with per-block probes.

:class:`Trainer` never touches the user's module: it trains a deep copy (or a fresh build from
``LoadedModel.rebuild``), so the user's weights, device, training flag and hooks stay as they
were. Each :meth:`Trainer.step` runs one forward/backward/update and returns a
:class:`~resviz.core.training.steps.StepRecord` of plain numbers; a GUI worker thread calls it
in a loop and may call :meth:`Trainer.set_lr` between steps. There is no global state: the probes
are instance attributes of the copy, and the RNG state touched for a deterministic forward
(dropout) is saved and restored around each step.

Faults: a NaN/Inf loss or gradient marks the record ``nonfinite``, the update is not applied and
the trainer refuses further steps (:class:`TrainingBlocked`) until :meth:`Trainer.resume` with a
lower learning rate (which rolls back to the last good snapshot) or :meth:`Trainer.reset`. An
exception in the model's own code becomes a :class:`TrainingError` naming the file and line.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import traceback
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResvizError
from .data import DataSource, open_data
from .probes import ProbeSet, param_sq_norms, plain_twin, probe_blocks
from .steps import StepRecord, flag_norms
from .store import RunStore

OPTIMIZERS = ("sgd", "adam", "adamw")
_DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
_DEFAULT_WD = {"sgd": 5e-4, "adam": 0.0, "adamw": 1e-2}
_TORCH_DIR = os.path.dirname(torch.__file__)
_HERE = os.path.dirname(os.path.abspath(__file__))


class TrainingError(ResvizError):
    """Training cannot go on: the model's code raised, or its output is not usable."""


class TrainingBlocked(TrainingError):
    """A step hit NaN/Inf; call ``resume(lr)`` with a lower learning rate, or ``reset()``."""


@dataclass
class TrainConfig:
    """Hyper-parameters of a run. ``lr``/``weight_decay`` None: the optimizer's usual default
    (SGD 0.1 / 5e-4, Adam 1e-3 / 0, AdamW 1e-3 / 1e-2)."""

    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None
    batch_size: int = 32  # the same default in resviz train and the app's Training tab
    steps: int = 200
    seed: int = 0
    device: str = "auto"
    probes: bool = True
    snapshot_every: int = 25  # keep a copy of the last good state every N finite steps
    # Seed torch's global RNG around each step (restored afterwards) so dropout is reproducible.
    # None: only when the model has dropout layers; a model without them never touches the RNG.
    seed_forward: bool | None = None

    def resolved(self) -> TrainConfig:
        """A validated copy with defaults filled in; raises ResvizError for bad values."""
        opt = str(self.optimizer).lower()
        if opt not in OPTIMIZERS:
            raise ResvizError(
                f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
            )
        lr = _DEFAULT_LR[opt] if self.lr is None else float(self.lr)
        wd = _DEFAULT_WD[opt] if self.weight_decay is None else float(self.weight_decay)
        if not (math.isfinite(lr) and lr > 0):
            raise ResvizError(f"the learning rate must be a positive number, got {self.lr}")
        if not (math.isfinite(wd) and wd >= 0):
            raise ResvizError(f"the weight decay must be 0 or more, got {self.weight_decay}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ResvizError(f"the momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and (opt != "sgd" or self.momentum <= 0):
            raise ResvizError("Nesterov momentum needs the SGD optimizer and a momentum above 0")
        if int(self.batch_size) < 1:
            raise ResvizError(f"the batch size must be 1 or more, got {self.batch_size}")
        if int(self.steps) < 0:
            raise ResvizError(f"the number of steps must be 0 or more, got {self.steps}")
        return replace(self, optimizer=opt, lr=lr, weight_decay=wd, batch_size=int(self.batch_size),
                       steps=int(self.steps), seed=int(self.seed), device=resolve_device(self.device))  # fmt: skip


def resolve_device(device: str | torch.device | None) -> str:
    """'auto' → 'cuda' when available, else 'cpu'; 'cuda' without CUDA is a ResvizError."""
    d = "auto" if device is None else str(device).strip().lower()
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ResvizError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}); use cpu"
            )
        try:
            torch.device(d)
        except RuntimeError:
            raise ResvizError(f"--device {device}: not a device name (cpu, cuda, cuda:1, auto)") from None
        return d
    if d == "cpu":
        return d
    raise ResvizError(f"--device {device}: expected auto, cpu or cuda")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)  # fmt: skip
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Seed torch's CPU generator (and the CUDA one of ``device``) inside the block only.

    ``torch.manual_seed`` is avoided on purpose: without CUDA initialised it queues a lazy CUDA
    seeding call (with a formatted stack) on every use, which grows without bound.
    """
    gens = [torch.default_generator]
    if device is not None and device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.init()
        gens.append(torch.cuda.default_generators[idx])
    states = [g.get_state() for g in gens]
    try:
        for g in gens:
            g.manual_seed(seed)
        yield
    finally:
        for g, st in zip(gens, states):
            g.set_state(st)


def _seeded_build(fn, seed: int):
    """Build with the CPU RNG seeded (weights init), restoring the RNG state afterwards."""
    with seeded(seed):
        return fn()


def user_location(exc: BaseException) -> str | None:
    """``file:line (in func): code`` of the innermost frame of ``exc`` outside torch and the
    trainer; None if there is none."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        fn = os.path.abspath(fr.filename)
        if fn.startswith(_TORCH_DIR) or fn.startswith(_HERE):
            continue
        code = f": {fr.line.strip()}" if fr.line else ""
        return f"{fr.filename}, line {fr.lineno}, in {fr.name}{code}"
    return None


def _model_error(exc: BaseException, phase: str) -> TrainingError:
    where = user_location(exc)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    loc = f"\n  at {where}" if where else ""
    hint = ""
    if "modified by an inplace operation" in msg:
        hint = "\n  (an in-place op changed a tensor autograd needed: use out = out + x, or inplace=False)"
    return TrainingError(f"the model raised during the {phase} pass: {text}{loc}{hint}")


def _logits(out, batch: int) -> torch.Tensor:
    if isinstance(out, dict):
        out = out.get(
            "logits", out.get("out", next((v for v in out.values() if isinstance(v, torch.Tensor)), None))
        )
    if isinstance(out, (list, tuple)):
        out = next((v for v in out if isinstance(v, torch.Tensor)), None)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
        shape = "x".join(map(str, out.shape)) if isinstance(out, torch.Tensor) else type(out).__name__
        raise TrainingError(
            f"training needs a classifier whose forward returns logits of shape (batch, classes); this "
            f"model returned {shape} for a batch of {batch}"
        )
    return out


def _state_clone(module: nn.Module, device=None) -> dict:
    return {
        k: v.detach().to(device, copy=True) if device else v.detach().clone()
        for k, v in module.state_dict().items()
    }


def _check_eager(model) -> None:
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise TrainingError(
            f"can only train an eager torch.nn.Module, not a {type(model).__name__} "
            "(TorchScript and torch.export models cannot be instrumented)"
        )


def _analysed(model: nn.Module, report, input_shape, name: str):
    """``report``, or the model analysed at ``input_shape`` when there is none."""
    if report is not None:
        return report
    from ..analysis.pipeline import analyze

    if input_shape is None:
        raise ResvizError("Trainer needs input_shape (or a report) to know what the model takes")
    return analyze(model, input_shape, name=name, suggest_sizes=False)


def training_copy(model: nn.Module, report, name: str, *, owned: bool, plain: bool) -> tuple[nn.Module, list[str]]:
    """The network to train and what the user should know about it: ``model`` itself when the
    trainer ``owned`` it (a fresh build), else a deep copy; with ``plain``, its plain twin (the
    shortcuts dropped at every residual add of ``report``)."""
    if any(p.is_meta for p in model.parameters()):
        raise TrainingError(f"{name}: the model's weights are on the meta device (no values); build it "
                            "on cpu, or use Trainer.from_loaded, which rebuilds it")  # fmt: skip
    net = model
    if not owned:
        try:
            net = copy.deepcopy(model)
        except Exception as e:  # noqa: BLE001 - the user's modules may raise anything when copied; the user is told which
            raise TrainingError(f"{name}: cannot copy the model to train it ({type(e).__name__}: {e})") from None
    notes = []
    if plain:
        if not report.residual_adds:
            notes.append("the model has no residual adds: its plain twin is the model itself")
        net = plain_twin(net, report, copy=False)
    return net, notes


def classifier_classes(report, name: str) -> int:
    """The number of classes of a model whose output is (batch, classes)."""
    out = report.output_shapes[0] if report.output_shapes else ()
    if len(out) != 2:
        raise TrainingError(
            f"{name}: training needs a classifier with output (batch, classes); the model gives "
            f"{'x'.join(map(str, out)) or 'nothing'}"
        )
    return int(out[1])


def training_data(data: DataSource | str | None, sample_shape, num_classes: int, seed: int) -> DataSource:
    """``data`` as a source (a ``--data`` string is opened at ``sample_shape``), with no more
    classes than the model has outputs."""
    source = data if isinstance(data, DataSource) else open_data(data, sample_shape, num_classes, seed)
    if source.num_classes > num_classes:
        raise ResvizError(f"{source.name} has {source.num_classes} classes but the model gives "
                          f"{num_classes} outputs")  # fmt: skip
    return source


@dataclass
class _Snapshot:
    step: int
    model: dict
    optim: dict = field(default_factory=dict)


class Trainer:
    """Trains a copy of a model. Build with :meth:`from_loaded` / :meth:`from_session` (zoo and
    spec models get a fresh seeded build, plain twins from the spec) or directly from a module
    (deep-copied)::

        t = Trainer(model, TrainConfig(lr=0.05, batch_size=32), input_shape=(1, 3, 32, 32))
        rec = t.step()          # StepRecord: rec.loss, rec.blocks["layer1.0"]["grad_norm"], ...
        t.set_lr(0.01)

    ``report`` (an analysis Report of the model) is computed when not given; ``data`` is a
    :class:`DataSource` or a ``--data`` string (default: synthetic at the model's input shape);
    ``plain=True`` trains the plain twin (shortcuts dropped at every residual add).
    """

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *, input_shape=None,
                 report=None, data: DataSource | str | None = None, plain: bool = False,
                 name: str | None = None, history: int = 4096, probe_match: str = "auto",
                 _owned: bool = False, _plain_built: bool = False):  # fmt: skip
        _check_eager(model)
        self.config = (config or TrainConfig()).resolved()
        cfg = self.config
        self.device = torch.device(cfg.device)
        self.name = name or type(model).__name__
        self.plain = plain
        self.notes: list[str] = []
        self.report = report = _analysed(model, report, input_shape, self.name)
        self._check_report(report)
        net, notes = training_copy(model, report, self.name, owned=_owned, plain=plain and not _plain_built)
        self.notes += notes
        self.model = net.to(self.device)
        self.model.train()
        self.input_shape = tuple(report.input_shape)
        self.num_classes = classifier_classes(report, self.name)
        self.data = training_data(data, self.input_shape[1:], self.num_classes, cfg.seed)
        self.probes: ProbeSet | None = None
        if cfg.probes:
            self.probes = ProbeSet(self.model, report, probe_blocks(report), residual_ratio=not plain,
                                   device=self.device, match=probe_match)  # fmt: skip
            self.block_names, self.params = list(self.probes.names), self.probes.params
        else:
            self.block_names, self.params = [], [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainingError(f"{self.name}: the model has no trainable parameters")
        self.optimizer = make_optimizer(self.params, cfg)
        self.history = RunStore(self.block_names, history)
        # True: a person at the app can resume or reset after a fault (the message says so);
        # False (resviz train): the message says what to run instead
        self.interactive = True
        self.step_index = 0
        self._lr = cfg.lr
        self._pending_lr: float | None = None
        self._blocked: str | None = None
        self._blocked_lr: float | None = None
        self._zero = torch.zeros((), device=self.device)
        self._initial = _Snapshot(0, _state_clone(self.model, "cpu"))
        self._good = _Snapshot(0, _state_clone(self.model), copy.deepcopy(self.optimizer.state_dict()))
        self._seed_forward = cfg.seed_forward
        if self._seed_forward is None:
            self._seed_forward = any(_is_random_layer(m) for m in self.model.modules())

    # construction ---------------------------------------------------------------------------

    @classmethod
    def from_loaded(cls, loaded, config: TrainConfig | None = None, *, report=None, input_shape=None,
                    data: DataSource | str | None = None, plain: bool = False) -> Trainer:  # fmt: skip
        """Train a fresh copy of a :class:`~resviz.core.sources.loading.LoadedModel` (``rebuild('cpu')``,
        seeded; the plain twin from ``loaded.plain_twin`` where the source has one)."""
        cfg = (config or TrainConfig()).resolved()
        if getattr(loaded, "exported", None) is not None or isinstance(loaded.module, torch.jit.ScriptModule):
            raise TrainingError(
                f"{loaded.name}: a {loaded.kind} archive cannot be trained here (TorchScript and "
                "torch.export programs cannot be instrumented); save the model's code as a .py file, a "
                "spec, or a whole-model torch.save"
            )
        if report is None:
            from ..session.opened_model import analyze_session

            s = analyze_session(loaded, input_shape)
            report = s.report
        build = loaded.rebuild
        if build is None:
            mod = loaded.module
            if mod is None or any(p.is_meta for p in mod.parameters()):
                raise TrainingError(f"{loaded.name}: cannot build a copy of this model with real weights")
            model = copy.deepcopy(mod)
        else:
            try:
                model = _seeded_build(lambda: build("cpu"), cfg.seed)
            except ResvizError:
                raise
            except Exception as e:  # noqa: BLE001 - the user's build code may raise anything; the user is told which, and where
                raise _model_error(e, "build") from None
        plain_built = False
        if plain and getattr(loaded, "plain_twin", None) is not None and report.residual_adds:
            twin = _seeded_build(lambda: loaded.plain_twin("cpu"), cfg.seed)
            _copy_matching(model, twin)  # same start as the residual net where the layers agree
            model, plain_built = twin, True
        t = cls(model, cfg, report=report, data=data, plain=plain, name=loaded.name, _owned=True,
                _plain_built=plain_built)  # fmt: skip
        return t

    @classmethod
    def from_session(
        cls, session, config: TrainConfig | None = None, *, data=None, plain: bool = False
    ) -> Trainer:
        """From :func:`resviz.core.session.opened_model.open_model`'s Session (its report and input shape)."""
        return cls.from_loaded(session.loaded, config, report=session.report, data=data, plain=plain)

    def _check_report(self, report) -> None:
        if not report.complete:
            first = next((e for e in report.errors if e.fatal), None)
            why = f": {first.module}: {first.message}" if first else ""
            raise TrainingError(f"{self.name} does not run at input {'x'.join(map(str, report.input_shape))}{why}; "
                                "fix it (resviz check) before training")  # fmt: skip
        broken = [m for m in report.mismatches if not m.broadcastable]
        if broken:
            blocks = ", ".join(m.block for m in broken[:3])
            raise TrainingError(
                f"{self.name} has shortcut mismatches in {blocks}: the adds fail at run time; fix them "
                "(resviz check shows the cause and the fix) before training"
            )
        for m in report.mismatches:
            self.notes.append(f"{m.block}: the shortcut add broadcasts silently ({m.cause})")

    # control --------------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        return self._pending_lr if self._pending_lr is not None else self._lr

    def set_lr(self, lr: float) -> None:
        """Use learning rate ``lr`` from the next step on (safe to call between steps)."""
        lr = float(lr)
        if not (math.isfinite(lr) and lr > 0):
            raise ResvizError(f"the learning rate must be a positive number, got {lr}")
        self._pending_lr = lr

    @property
    def blocked(self) -> str | None:
        """The message of the NaN/Inf fault that stopped training, or None."""
        return self._blocked

    def resume(self, lr: float | None = None) -> None:
        """Go on after a NaN/Inf fault with a lower learning rate (default: a tenth of it),
        from the last good snapshot of weights and optimizer state."""
        if self._blocked is None:
            if lr is not None:
                self.set_lr(lr)
            return
        bad = self._blocked_lr or self.lr
        lr = bad * 0.1 if lr is None else float(lr)
        if not (math.isfinite(lr) and 0 < lr < bad):
            raise ResvizError(
                f"resume with a learning rate below {bad:g} (the one that failed), e.g. {bad * 0.1:g}"
            )
        self._restore(self._good)
        self._blocked = None
        self._blocked_lr = None
        self._pending_lr = None
        self._apply_lr(lr)

    def reset(self) -> None:
        """Back to the initial weights, a fresh optimizer, step 0 and an empty history."""
        self.model.load_state_dict(self._initial.model)
        self.optimizer = make_optimizer(self.params, self.config)
        self._good = _Snapshot(0, _state_clone(self.model), copy.deepcopy(self.optimizer.state_dict()))
        self.step_index = 0
        self.history.clear()
        self._blocked = None
        self._blocked_lr = None
        self._pending_lr = None
        self._lr = self.config.lr

    def _restore(self, snap: _Snapshot) -> None:
        self.model.load_state_dict(snap.model)
        if snap.optim:
            self.optimizer.load_state_dict(copy.deepcopy(snap.optim))

    def _apply_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self._lr = lr

    def trained_model(self) -> nn.Module:
        """A CPU deep copy of the network as trained, without the probe wrappers (a plain twin
        built by :func:`plain_twin` keeps the wrappers that drop its shortcuts)."""
        from .probes import strip_probes

        m = copy.deepcopy(self.model).cpu()
        strip_probes(m)
        return m

    def remove_probes(self) -> None:
        """Take the probe wrappers off the training copy (the plain twin's stay)."""
        if self.probes is not None:
            self.probes.remove()
            self.probes = None

    # the step -------------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.batch(self.step_index, self.config.batch_size)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> StepRecord:
        """One forward/backward/update on the next batch (or ``batch``); returns its record."""
        if self._blocked is not None:
            raise TrainingBlocked(self._blocked)
        if self._pending_lr is not None:
            self._apply_lr(self._pending_lr)
            self._pending_lr = None
        t0 = time.perf_counter()
        step = self.step_index
        x, y = batch if batch is not None else self.next_batch()
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        logits, loss = self._forward_backward(x, y, step)
        values, measured, alias = self._measure(loss, logits, y)
        loss_v, correct_v, grad_sq = values[0], values[1], values[2]
        nonfinite = not (math.isfinite(loss_v) and math.isfinite(grad_sq))
        blocks: dict[str, dict[str, float]] = {}
        origin = None
        if self.probes is not None:
            blocks, origin = self._block_values(values[3:], measured, alias, nonfinite)
        lr = self._lr
        message = self._fault(step, loss_v, origin, lr) if nonfinite else self._update(step)
        self.step_index = step + 1
        rec = StepRecord(
            step=step, loss=loss_v, accuracy=correct_v / x.shape[0], lr=lr,
            seconds=time.perf_counter() - t0, blocks=blocks, flags=flag_norms(blocks),
            nonfinite=nonfinite, message=message,
        )  # fmt: skip
        self.history.append(rec)
        return rec

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the loss, its gradients left on the parameters; on any failure the probes
        and the gradients are cleared before the error goes on."""
        self.optimizer.zero_grad(set_to_none=True)
        probes = self.probes
        if probes is not None:
            probes.sink.begin()
        try:
            with self._rng(step):
                try:
                    out = self.model(x)
                except Exception as e:  # noqa: BLE001 - the user's forward may raise anything; the user is told which, and where in their code
                    raise _model_error(e, "forward") from None
                logits = _logits(out, x.shape[0])
                loss = F.cross_entropy(logits.float(), y)
                try:
                    loss.backward()
                except Exception as e:  # noqa: BLE001 - as the forward: the user's backward hooks and autograd functions
                    raise _model_error(e, "backward") from None
        except BaseException:
            if probes is not None:
                probes.sink.end()
                probes.sink.clear()
            self.optimizer.zero_grad(set_to_none=True)
            raise
        return logits, loss

    def _measure(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> tuple[list[float], set[int], dict[int, int]]:
        """The step's numbers in one device-to-host copy: loss, correct count, the squared gradient
        norm, then (with probes) each block's squared gradient norm and the activation statistics;
        and which probes measured and which alias others."""
        probes = self.probes
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else self._zero for p in self.params]
            param_sq = param_sq_norms(grads)
            correct = (logits.detach().argmax(1) == y).sum().double()
            parts = [loss.detach().double().view(1), correct.view(1), param_sq.sum().view(1)]
            measured: set[int] = set()
            alias: dict[int, int] = {}
            if probes is not None:
                probes.sink.end()
                act, measured, alias = probes.sink.reduce(self.device)
                parts += [probes.block_grad_sq(param_sq), act]
                probes.sink.clear()
            values = torch.cat(parts).tolist()  # the one device-to-host copy of the step
            if not math.isfinite(values[2]) and math.isfinite(values[0]):
                # float32 norms overflow past ~1.8e19: redo in float64 before calling it non-finite
                param_sq = param_sq_norms(grads, exact=True)
                values[2] = param_sq.sum().item()
                if probes is not None:
                    values[3 : 3 + len(probes.names)] = probes.block_grad_sq(param_sq).tolist()
        return values, measured, alias

    def _block_values(self, values: list[float], measured: set[int], alias: dict[int, int],
                      nonfinite: bool) -> tuple[dict[str, dict[str, float]], tuple[str, str] | None]:  # fmt: skip
        """Per-block numbers from the probes' part of the step's ``values`` (block gradient norms,
        then activation statistics), and, when the step went non-finite, where it began."""
        probes = self.probes
        nb = len(probes.names)
        blocks = probes.decode(values[:nb], values[nb:], measured, alias)
        origin = probes.nonfinite_origin(blocks, measured, alias) if nonfinite else None
        return blocks, origin

    def _fault(self, step: int, loss: float, origin: tuple[str, str] | None, lr: float) -> str:
        """A non-finite step: no update, training blocked until resumed or reset; the message."""
        self.optimizer.zero_grad(set_to_none=True)
        message = self._fault_message(step, loss, origin, lr)
        self._blocked = message
        self._blocked_lr = lr
        return message

    def _update(self, step: int) -> str:
        """A good step: apply the update, and snapshot every ``snapshot_every`` steps."""
        self.optimizer.step()
        if self.config.snapshot_every and (step + 1) % self.config.snapshot_every == 0:
            self._good = _Snapshot(step + 1, _state_clone(self.model), copy.deepcopy(self.optimizer.state_dict()))
        return ""

    def _rng(self, step: int):
        """Seed torch's RNG for this step's forward (dropout) and restore it afterwards."""
        if not self._seed_forward:
            return contextlib.nullcontext()
        return seeded((self.config.seed * 1_000_003 + step) % (2**63), self.device)

    def _fault_message(self, step: int, loss: float, origin: tuple[str, str] | None, lr: float) -> str:
        if math.isnan(loss):
            what = "the loss became NaN"
        elif math.isinf(loss):
            what = "the loss became infinite"
        else:
            what = f"the loss was {loss:.4g} but the gradients became NaN/Inf"
        where = ""
        if origin is not None and math.isfinite(loss):
            block, kind = origin
            where = (f" (first on the backward path in block {block}: its output gradient was finite, its input "
                     "or parameter gradient was not)" if kind == "inside" else
                     f" (already at the output of block {block}: it arose between {block} and the loss)")  # fmt: skip
        lower = lr * 0.1
        if self.interactive:
            advice = (f"Lower the learning rate (e.g. x0.1: {lower:g}) and resume (from the snapshot at step "
                      f"{self._good.step}), or reset.")  # fmt: skip
        else:
            advice = (f"Run again with a lower learning rate (x0.1: --lr {lower:g}); the steps recorded so far "
                      "are in the run directory.")  # fmt: skip
        halt = "is paused" if self.interactive else "stopped"
        return (f"step {step}: {what}{where} at learning rate {lr:g}; the update was not applied and training "
                f"{halt}. {advice}")  # fmt: skip

    def run(self, steps: int | None = None, callback=None) -> list[StepRecord]:
        """Convenience loop: ``steps`` steps (default: config.steps), stopping at a fault."""
        out = []
        for _ in range(self.config.steps if steps is None else steps):
            rec = self.step()
            out.append(rec)
            if callback is not None:
                callback(rec)
            if rec.nonfinite:
                break
        return out


def _is_random_layer(m: nn.Module) -> bool:
    p = getattr(m, "p", 0)
    return isinstance(m, nn.modules.dropout._DropoutNd) and isinstance(p, (int, float)) and p > 0


def _copy_matching(src: nn.Module, dst: nn.Module) -> None:
    """Copy every parameter/buffer of ``src`` whose name and shape exist in ``dst``."""
    theirs = dst.state_dict()
    mine = {k: v for k, v in src.state_dict().items() if k in theirs and theirs[k].shape == v.shape}
    dst.load_state_dict(mine, strict=False)


@dataclass(slots=True)
class TwinStep:
    step: int
    residual: StepRecord | None
    plain: StepRecord | None


class TwinRun:
    """A residual net and its plain twin trained side by side: the same batches, seed and
    optimizer settings, one step of each per :meth:`step`. A twin stopped by NaN/Inf gives None
    until it is resumed; the other one goes on."""

    def __init__(self, residual: Trainer, plain: Trainer):
        self.residual = residual
        self.plain = plain
        self.data = residual.data
        self.step_index = 0

    @classmethod
    def from_loaded(cls, loaded, config: TrainConfig | None = None, *, report=None, input_shape=None,
                    data: DataSource | str | None = None) -> TwinRun:  # fmt: skip
        res = Trainer.from_loaded(loaded, config, report=report, input_shape=input_shape, data=data)
        pl = Trainer.from_loaded(loaded, config, report=res.report, data=res.data, plain=True)
        return cls(res, pl)

    @classmethod
    def from_model(cls, model: nn.Module, config: TrainConfig | None = None, *, input_shape=None,
                   report=None, data: DataSource | str | None = None) -> TwinRun:  # fmt: skip
        res = Trainer(model, config, input_shape=input_shape, report=report, data=data)
        pl = Trainer(model, config, report=res.report, data=res.data, plain=True)
        return cls(res, pl)

    def set_lr(self, lr: float) -> None:
        self.residual.set_lr(lr)
        self.plain.set_lr(lr)

    def step(self) -> TwinStep:
        batch = self.data.batch(self.step_index, self.residual.config.batch_size)
        recs = []
        for t in (self.residual, self.plain):
            recs.append(None if t.blocked else t.step(batch))
        self.step_index += 1
        return TwinStep(self.step_index - 1, recs[0], recs[1])
