"""``resviz.lightning.ResvizCallback``: the per-block probes in a Lightning run.

::

    from resviz.lightning import ResvizCallback
    trainer = L.Trainer(callbacks=[ResvizCallback(run_dir="runs/r1")])

Lightning is an optional extra (``pip install 'resviz[lightning]'``); the ``lightning`` package is
used, or ``pytorch_lightning`` when only that one is installed. The callback attaches
:func:`resviz.monitor` to the LightningModule at the first training batch (the input shape comes
from ``input_shape=``, the module's ``example_input_array``, or that first batch) and records each
optimizer step, after it, with the learning rate of the first optimizer.

With ``Trainer(accumulate_grad_batches=k)`` a record is one optimizer step, not one micro-batch:
the probes stay armed across the k forward/backward passes, so the parameter-gradient norms are
those of the accumulated gradient that the optimizer applied, and the activation-gradient and
residual norms are those of the whole accumulated batch (sums of squares over the micro-batches,
whose losses Lightning already divides by k); the loss is the mean of the micro-batches' losses.
With a mixed-precision ``GradScaler`` the activation gradients are measured unscaled. Under a DDP
strategy the norms are the global batch's and only rank 0 writes (see
:mod:`resviz.core.training.monitor`). The run directory is closed at the end of fitting, or marked
stopped when fitting fails.
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError:
        raise ImportError(
            "resviz.lightning needs Lightning, which is not installed: pip install 'resviz[lightning]' "
            "(or pip install lightning)"
        ) from None

import torch

__all__ = ["ResvizCallback"]


def _first_tensor(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for b in batch:
            t = _first_tensor(b)
            if t is not None:
                return t
    return None


class ResvizCallback(Callback):
    """Records the per-block probes of every ``every``-th training step into ``run_dir``."""

    def __init__(self, run_dir=None, *, input_shape=None, every: int = 1, tensorboard=False):
        super().__init__()
        self.run_dir = run_dir
        self.input_shape = input_shape
        self.every = every
        self.tensorboard = tensorboard
        self.monitor = None
        self._optimizer_steps = 0  # trainer.global_step when the last record was made
        self._loss_sum = None  # the micro-batches' losses since then, as Lightning scaled them
        self._micro_batches = 0
        self._grad_scale = None

    def _shape(self, pl_module, batch):
        if self.input_shape is not None:
            return self.input_shape
        example = getattr(pl_module, "example_input_array", None)
        if isinstance(example, torch.Tensor):
            return (1, *example.shape[1:])
        x = _first_tensor(batch)
        if x is None:
            raise ValueError(
                "ResvizCallback: cannot tell the model's input shape; pass input_shape=(1, C, H, W)"
            )
        return (1, *x.shape[1:])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.monitor is None:
            from .core.training.monitor import Monitor

            cfg = {
                "source": "resviz.lightning",
                "max_steps": trainer.max_steps,
                "max_epochs": trainer.max_epochs,
            }
            self.monitor = Monitor(pl_module, self.run_dir, input_shape=self._shape(pl_module, batch),
                                   every=self.every, name=type(pl_module).__name__, config=cfg,
                                   tensorboard=self.tensorboard)  # fmt: skip
            if self.monitor.run_dir is not None:
                self.run_dir = self.monitor.run_dir
            self._optimizer_steps = trainer.global_step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # A GradScaler's scale of this step (after the backward passes, before scaler.update()).
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if self.monitor is not None and scaler is not None and self._recording():
            try:
                self._grad_scale = float(scaler.get_scale())
            except Exception as e:  # noqa: BLE001 - never raises into the user's training: logged in the run
                self._grad_scale = None  # the activation gradients are then recorded as backward saw them
                self.monitor._fail("reading the GradScaler's scale (activation gradients recorded scaled)", e)

    def _recording(self) -> bool:
        mon = self.monitor
        return mon.step_index % mon.every == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and self._recording():
            loss = loss.detach()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._micro_batches += 1
        if trainer.global_step == self._optimizer_steps:
            return  # accumulating: no optimizer step after this micro-batch
        self._optimizer_steps = trainer.global_step
        loss = None
        if self._loss_sum is not None:
            # automatic optimization divides each micro-batch's loss by accumulate_grad_batches
            k = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
            loss = self._loss_sum * (k / self._micro_batches)
        lr = None
        try:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
        except (IndexError, KeyError, AttributeError):
            pass
        scale, self._grad_scale = self._grad_scale, None
        self._loss_sum, self._micro_batches = None, 0
        self.monitor.step(loss, lr=lr, grad_scale=scale)

    def _close(self, state=None, message=""):
        if self.monitor is not None:
            self.monitor.close(state, message)

    def on_fit_end(self, trainer, pl_module):
        self._close()

    def on_exception(self, trainer, pl_module, exception):
        from .core.training.store import RunState

        self._close(RunState.STOPPED, f"{type(exception).__name__}: {exception}")

    def teardown(self, trainer, pl_module, stage):
        self._close()
