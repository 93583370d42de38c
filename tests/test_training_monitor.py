"""resviz.monitor on the user's own loop: probes equal an independent computation with tensor hooks,
the model is left exactly as it was, every=N, failures never reach the user, DDP and Lightning."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resviz
from resviz.core.training import open_run
from tests.nets import BasicBlock as Block  # torchvision-style, its own projection

SHAPE = (1, 3, 8, 8)


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Block(width, width), Block(width, width))
        self.layer2 = nn.Sequential(Block(width, 2 * width, 2))
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


BLOCKS = ["layer1.0", "layer1.1", "layer2.0"]


def net(seed=0):
    torch.manual_seed(seed)
    return Net()


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def reference_probes(model, x, y):
    """One step's probes computed independently: module hooks + tensor hooks, float64 sums."""
    return accumulated_reference(model, [(x, y)])


def accumulated_reference(model, micro_batches):
    """The probes of one optimizer step over micro-batches whose losses are divided by their count
    (as Lightning's accumulate_grad_batches does): the squared norms are summed over the passes."""
    total = {b: {} for b in BLOCKS}
    model.zero_grad()
    losses = []

    def sq(t):
        return float(t.detach().double().pow(2).sum())

    got = {b: {} for b in BLOCKS}  # one pass's squares (a later call of a hooked module wins)
    for x, y in micro_batches:
        for d in got.values():
            d.clear()
        handles = []
        for name in BLOCKS:
            blk = model.get_submodule(name)

            def pre(mod, args, name=name):
                args[0].register_hook(lambda g: got[name].__setitem__("in", sq(g)))
                if mod.downsample is None:
                    got[name]["sc"] = sq(args[0])

            def post(mod, args, out, name=name):
                out.register_hook(lambda g: got[name].__setitem__("out", sq(g)))

            handles += [blk.register_forward_pre_hook(pre), blk.register_forward_hook(post),
                        blk.bn2.register_forward_hook(lambda m, a, o, name=name: got[name].__setitem__("res", sq(o)))]  # fmt: skip
            if blk.downsample is not None:
                handles.append(blk.downsample.register_forward_hook(
                    lambda m, a, o, name=name: got[name].__setitem__("sc", sq(o))))  # fmt: skip
        x = x.clone().requires_grad_(True)  # the first block's input gradient exists
        loss = F.cross_entropy(model(x), y)
        (loss / len(micro_batches)).backward()
        losses.append(float(loss.detach()))
        for h in handles:
            h.remove()
        for name in BLOCKS:
            for k, v in got[name].items():
                total[name][k] = total[name].get(k, 0.0) + v
    out = {}
    for name in BLOCKS:
        d = total[name]
        gp = sum(float(p.grad.double().pow(2).sum()) for p in model.get_submodule(name).parameters())
        out[name] = {"grad_norm": math.sqrt(gp), "input_grad_norm": math.sqrt(d["in"]),
                     "output_grad_norm": math.sqrt(d["out"]), "residual_ratio": math.sqrt(d["res"] / d["sc"]),
                     "gain": math.sqrt(d["in"] / d["out"])}  # fmt: skip
    return sum(losses) / len(losses), out


def module_state(model):
    """What `close()` must leave as it was: every module's attributes and hooks (by identity)."""
    return {
        name: ({k: id(v) for k, v in m.__dict__.items() if k != "training"}, type(m),
               [len(getattr(m, h)) for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")])
        for name, m in model.named_modules()
    }  # fmt: skip


def test_probes_equal_an_independent_computation_and_the_model_is_left_as_it_was(tmp_path):
    model = net()
    reference = copy.deepcopy(model)
    untouched = copy.deepcopy(model)  # trained without the monitor, as a control
    before = module_state(model)
    data = batches(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.05)
    opt_ctl = torch.optim.SGD(untouched.parameters(), lr=0.05)
    worst = 0.0
    with resviz.monitor(model, tmp_path / "r1", input_shape=SHAPE) as mon:
        for x, y in data:
            x = x.clone().requires_grad_(True)  # as the reference: the first block's input gradient
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec = mon.step(loss)
            want_loss, want = reference_probes(reference, x.detach(), y)
            opt_ref.step()
            assert rec.loss == pytest.approx(want_loss, rel=1e-6)
            for b in BLOCKS:
                for p, v in want[b].items():
                    worst = max(worst, abs(rec.blocks[b][p] - v) / abs(v))
            ctl = F.cross_entropy(untouched(x.detach()), y)
            opt_ctl.zero_grad()
            ctl.backward()
            opt_ctl.step()
    assert worst <= 1e-5, worst
    assert module_state(model) == before  # every wrapper gone, nothing added or replaced
    for (k, a), b in zip(model.state_dict().items(), untouched.state_dict().values()):
        assert torch.equal(a, b), k  # the monitor changed no number of the training
    lines = [json.loads(s) for s in (tmp_path / "r1" / "steps.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == [0, 1, 2] and {"step", "loss", "blocks"} <= set(lines[0])
    assert set(lines[0]["blocks"]) == set(BLOCKS)
    assert open_run(tmp_path / "r1").state.value == "finished"


class SwitchBlock(Block):
    """A block whose path through its children can change between steps: with `twice` its bn2 runs
    twice and the add takes the second output."""

    twice = False

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.twice:
            out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ScaledBlock(Block):
    """A residual operand that no child module returns (a functional op makes it)."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) * 1.0
        return self.relu(out + identity)


class ListBlock(nn.Module):
    """A block that runs its layers from a ModuleList: the residual operand is an entry's output."""

    downsample = None

    def __init__(self, c):
        super().__init__()
        self.body = nn.ModuleList([nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                   nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)])  # fmt: skip

    @property
    def bn2(self):
        return self.body[4]

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return torch.relu(out + x)


class MixedNet(Net):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(ListBlock(8), SwitchBlock(8, 8))
        self.layer2 = nn.Sequential(ScaledBlock(8, 16, 2))


def test_the_residual_adds_are_watched_once_then_measured_where_their_operands_are_made(tmp_path):
    """The add-watching TorchFunctionMode (~10 us per torch call) runs on the first recorded step
    only: from then on each block's plan (which child's output or input each operand is) takes the
    norms. The numbers stay those of an independent computation at every step; a block whose path
    through its children changes measures no ratio on that step (never a wrong one) and relearns;
    a block whose operand no child returns keeps the mode, exact."""
    torch.manual_seed(0)
    model = MixedNet()
    model.layer1[1].twice = False
    reference = copy.deepcopy(model)
    before = module_state(model)
    modes = []  # TorchFunctionModes active inside layer1.0's bn2, per forward
    probe = model.layer1[0].bn2.register_forward_pre_hook(
        lambda m, a: modes.append(torch._C._len_torch_function_stack())
    )
    twice = [False, False, True, True, False, False]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.05)
    with resviz.monitor(model, tmp_path / "r", input_shape=SHAPE) as mon:
        watches = {model.get_submodule(b): w for b, w in zip(mon.block_names, mon.probes.watches)}
        for k, (x, y) in enumerate(batches(len(twice))):
            model.layer1[1].twice = reference.layer1[1].twice = twice[k]
            x = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec = mon.step(loss)
            _, want = reference_probes(reference, x.detach(), y)
            opt_ref.step()
            switched = k > 0 and twice[k] != twice[k - 1]
            for b in BLOCKS:
                for p, v in want[b].items():
                    got = rec.blocks[b][p]
                    if switched and b == "layer1.1" and p == "residual_ratio":
                        assert math.isnan(got), (k, got)  # not measured rather than measured wrong
                    else:
                        assert got == pytest.approx(v, rel=1e-5), (k, b, p)
        assert watches[model.layer1[0]].plan and watches[model.layer1[1]].plan
        assert watches[model.layer2[0]].plan is False  # `bn2(...) * 1.0`: the mode, every step
    probe.remove()
    assert modes == [1, 0, 0, 0, 0, 0]
    assert module_state(model) == before


def test_every_n_records_every_nth_step_and_registers_nothing_between(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = resviz.monitor(model, tmp_path / "r", input_shape=SHAPE, every=3)
    recorded, hooks_between = [], []
    for i, (x, y) in enumerate(batches(7)):
        loss = F.cross_entropy(model(x), y)
        if i % 3:
            hooks_between.append(len(mon.probes.sink.vals) + len(mon.probes.sink.slots))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec = mon.step(loss)
        if rec is not None:
            recorded.append(rec.step)
    mon.close()
    mon.close()  # idempotent
    assert recorded == [0, 3, 6] and hooks_between == [0] * 4
    assert [r.step for r in open_run(tmp_path / "r").records()] == [0, 3, 6]
    assert "forward" not in model.layer1[0].__dict__


def test_gradients_whose_squares_overflow_float32_are_recorded_exactly(tmp_path):
    """Norms near 1e20 are finite in float32 but their squares are not: the CPU path's float32
    sums of squares overflow and the step is redone in float64, never recorded as Inf."""
    model = net()
    ((x, y),) = batches(1)
    with resviz.monitor(model, tmp_path / "r", input_shape=SHAPE) as mon:
        loss = F.cross_entropy(model(x), y) * 1e21
        loss.backward()
        rec = mon.step(loss)
    assert not rec.nonfinite and not mon.errors
    for name in ("layer1.0", "layer2.0"):
        block = model.get_submodule(name)
        want = math.sqrt(sum(p.grad.double().square().sum().item() for p in block.parameters()))
        got = rec.blocks[name]["grad_norm"]
        assert 2e19 < want < 1e30 and abs(got - want) <= 1e-5 * want
        assert math.isfinite(rec.blocks[name]["output_grad_norm"])


def test_a_probe_failure_is_logged_and_the_training_goes_on(tmp_path, monkeypatch):
    from resviz.core.training import probes

    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = batches(3)
    with resviz.monitor(model, tmp_path / "r", input_shape=SHAPE) as mon:
        real = probes._sq_norm
        monkeypatch.setattr(probes, "_sq_norm", lambda t: 1 / 0)  # every probe of this step fails
        for i, (x, y) in enumerate(data):
            if i == 1:
                monkeypatch.setattr(probes, "_sq_norm", real)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()  # the failing gradient hooks do not break the user's backward
            opt.step()
            mon.step(loss)
    assert mon.errors and "ZeroDivisionError" in mon.errors[0]
    run = open_run(tmp_path / "r")
    steps = run.records()
    assert [r.step for r in steps] == [0, 1, 2] and math.isfinite(
        steps[2].blocks["layer1.0"]["input_grad_norm"]
    )
    assert any("ZeroDivisionError" in e["message"] for e in run.new_events())


def test_the_users_errors_pass_through_and_the_run_is_marked_stopped(tmp_path):
    model = net()
    with pytest.raises(RuntimeError, match="user's own"):
        with resviz.monitor(model, tmp_path / "r", input_shape=SHAPE):
            raise RuntimeError("the user's own bug")
    run = open_run(tmp_path / "r")
    assert run.state.value == "stopped" and "user's own" in run.meta["message"]
    assert "forward" not in model.layer1[0].__dict__


def test_bad_arguments_are_one_clear_error(tmp_path):
    from resviz.core.errors import ResvizError

    with pytest.raises(ResvizError, match="input_shape"):
        resviz.monitor(net(), tmp_path / "a")
    with pytest.raises(ResvizError, match="every"):
        resviz.monitor(net(), tmp_path / "b", input_shape=SHAPE, every=0)
    model = net()
    before = module_state(model)
    (tmp_path / "file").write_text("")
    with pytest.raises(ResvizError, match="is a file"):
        resviz.monitor(model, tmp_path / "file", input_shape=SHAPE)
    assert module_state(model) == before  # a failed attach leaves nothing behind


# ------------------------------------------------------------------------------------ DDP


@pytest.mark.slow
def test_ddp_two_ranks_record_the_global_batch_once_per_step(tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU), resnet20 for 3 steps: rank 0 alone writes one record
    per step, and the norms equal a single process's on the same global batch."""
    worker = os.path.join(os.path.dirname(__file__), "ddp_monitor_worker.py")
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as s:  # a free port for the static rendezvous (--standalone's c10d one can stall)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", worker, str(ddp_dir)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    out = subprocess.run([sys.executable, worker, str(single_dir)], capture_output=True, text=True, timeout=240,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    ddp, single = open_run(ddp_dir).records(), open_run(single_dir).records()
    assert [r.step for r in ddp] == [r.step for r in single] == [0, 1, 2]  # no duplicate, none missing
    assert open_run(ddp_dir).meta["config"]["world_size"] == 2
    for a, b in zip(ddp, single):
        assert math.isfinite(b.loss) and a.loss == pytest.approx(b.loss, rel=1e-5)
        for blk, probes in b.blocks.items():
            for p, v in probes.items():
                if math.isfinite(v):
                    assert a.blocks[blk][p] == pytest.approx(v, rel=1e-4), (a.step, blk, p)
    assert not (tmp_path / "ddp-rank1").exists()


# ------------------------------------------------------------------------------------ Lightning


def test_lightning_callback_writes_the_run_directory(tmp_path):
    L = pytest.importorskip(
        "lightning", reason="Lightning is not installed (pip install 'resviz[lightning]')"
    )
    from resviz.lightning import ResvizCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

        def train_dataloader(self):
            xs, ys = zip(*batches(2))
            ds = torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys))
            return torch.utils.data.DataLoader(ds, batch_size=8)

    module = Module()
    cb = ResvizCallback(run_dir=tmp_path / "r")
    trainer = L.Trainer(fast_dev_run=2, callbacks=[cb], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(module)
    run = open_run(tmp_path / "r")
    recs = run.records()
    assert [r.step for r in recs] == [0, 1] and run.state.value == "finished"
    assert set(recs[0].blocks) == {f"net.{b}" for b in BLOCKS}
    assert all(recs[0].blocks[f"net.{b}"]["grad_norm"] > 0 for b in BLOCKS) and recs[0].lr == 0.05
    assert "forward" not in module.net.layer1[0].__dict__


def test_lightning_with_accumulated_gradients_records_once_per_optimizer_step(tmp_path):
    """accumulate_grad_batches=2 over 4 micro-batches: 2 records (not 4), each with the norms of the
    accumulated gradient and of the whole accumulated batch, equal to an independent computation."""
    L = pytest.importorskip(
        "lightning", reason="Lightning is not installed (pip install 'resviz[lightning]')"
    )
    from resviz.lightning import ResvizCallback

    data = batches(4)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

        def train_dataloader(self):
            xs, ys = zip(*data)
            ds = torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys))
            return torch.utils.data.DataLoader(ds, batch_size=8)

    module = Module()
    reference = copy.deepcopy(module.net)
    trainer = L.Trainer(max_steps=2, accumulate_grad_batches=2, callbacks=[ResvizCallback(run_dir=tmp_path / "r")],
                        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)  # fmt: skip
    trainer.fit(module)
    recs = open_run(tmp_path / "r").records()
    assert [r.step for r in recs] == [0, 1]
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    for rec, micro in zip(recs, (data[:2], data[2:])):
        want_loss, want = accumulated_reference(reference, micro)
        opt.step()
        assert rec.loss == pytest.approx(want_loss, rel=1e-5)
        for b in BLOCKS:
            for p, v in want[b].items():
                assert rec.blocks[f"net.{b}"][p] == pytest.approx(v, rel=1e-5), (rec.step, b, p)


def _train_with_tensorboard(tmp_path, steps=2, **kwargs):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    recs = []
    with resviz.monitor(model, tmp_path / "r", input_shape=SHAPE, **kwargs) as mon:
        for x, y in batches(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            recs.append(mon.step(loss))
    assert all(r is not None for r in recs)  # recorded either way
    return recs


def test_lightning_a_grad_scaler_that_cannot_say_its_scale_is_logged_and_training_goes_on(tmp_path):
    pytest.importorskip("lightning", reason="Lightning is not installed (pip install 'resviz[lightning]')")
    from types import SimpleNamespace

    from resviz.lightning import ResvizCallback

    class BrokenScaler:
        def get_scale(self):
            raise RuntimeError("no scale here")

    cb = ResvizCallback(run_dir=tmp_path / "r")
    cb.monitor = resviz.monitor(net(), tmp_path / "r", input_shape=SHAPE)
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=BrokenScaler()))
    cb.on_before_optimizer_step(trainer, None, None)  # does not raise into Lightning's loop
    cb.monitor.close()
    assert cb._grad_scale is None
    assert any("GradScaler" in e and "no scale here" in e for e in cb.monitor.errors)
    assert any("no scale here" in e["message"] for e in open_run(tmp_path / "r").new_events())


def test_tensorboard_scalars_hold_the_recorded_probes(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'resviz[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recs = _train_with_tensorboard(tmp_path, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    want = {f"resviz/{b}/{p}" for b in BLOCKS for p in recs[0].blocks[b]} | {"resviz/loss"}
    assert want <= tags, sorted(want - tags)
    for b in BLOCKS:
        for p in recs[0].blocks[b]:
            got = events.Scalars(f"resviz/{b}/{p}")
            assert [e.step for e in got] == [0, 1]
            for e, rec in zip(got, recs):
                assert e.value == pytest.approx(rec.blocks[b][p], rel=1e-6), (b, p)  # float32 in the file
    assert [e.value for e in events.Scalars("resviz/loss")] == pytest.approx([r.loss for r in recs], rel=1e-6)


def test_tensorboard_missing_is_a_note_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed: ImportError
    _train_with_tensorboard(tmp_path, steps=1, tensorboard=True)
    notes = [e["message"] for e in open_run(tmp_path / "r").new_events()]
    assert any("TensorBoard scalars are off" in n for n in notes), notes
    assert not (tmp_path / "r" / "tensorboard").exists()


@pytest.mark.slow  # a fresh interpreter (~1-3 s)
def test_a_monitored_run_is_read_and_followed_without_torch(tmp_path):
    """What a machine without torch does with a run directory the monitor wrote: `resviz follow`,
    open_run's records, the stored report.json and the app's open job drawing the graph from it."""
    _train_with_tensorboard(tmp_path, steps=2)
    code = (
        "import sys, json\nfrom resviz.cli import main\n"
        f"rc = main(['follow', {str(tmp_path / 'r')!r}, '--once'])\n"
        "from resviz.core.training.rundir import open_run\n"
        f"run = open_run({str(tmp_path / 'r')!r})\n"
        "steps = [r.step for r in run.records()]\n"
        "from types import SimpleNamespace as NS\nfrom resviz.core.training.runreport import probe_blocks\n"
        "stored = NS(blocks=[NS(name=b['name']) for b in run.report['graph']['blocks']])\n"
        "same = probe_blocks(stored) == run.meta['blocks']  # the Training tab's blocks, from the file\n"
        "from resviz.gui.window.document import Source, open_job\nfrom resviz.render.view import ViewState\n"
        "from resviz.render.layout import approx_measure\n"
        f"drawn = open_job(Source({str(tmp_path / 'r')!r}), None, ViewState(), (approx_measure, approx_measure))\n"
        "same = same and len(drawn.layout.nodes) > 10  # the app's open job: the graph, laid out\n"
        "print(rc, steps, sorted(run.report), same, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "0 [0, 1] ['check', 'format', 'graph'] True False", (
        out.stdout + out.stderr
    )


def test_a_scaled_loss_is_measured_unscaled_with_grad_scale(tmp_path):
    """What a GradScaler does: backward on loss x S, parameter gradients unscaled before the
    optimizer step; with grad_scale=S the activation gradients are reported unscaled too."""
    recs = []
    for scale, where in ((1.0, "a"), (1024.0, "b")):
        model = net()
        x, y = batches(1)[0]
        with resviz.monitor(model, tmp_path / where, input_shape=SHAPE) as mon:
            loss = F.cross_entropy(model(x), y)
            (loss * scale).backward()
            for p in model.parameters():
                p.grad /= scale  # scaler.unscale_
            recs.append(mon.step(loss, grad_scale=scale))
    a, b = recs
    for blk in BLOCKS:
        for p in ("grad_norm", "input_grad_norm", "output_grad_norm", "residual_ratio"):
            assert b.blocks[blk][p] == pytest.approx(a.blocks[blk][p], rel=1e-5), (blk, p)


@pytest.mark.parametrize("kind", ["float64", "channels_last"])
def test_the_device_path_float64_norms_match_too(tmp_path, kind):
    """Tensors that are not contiguous float32 on the CPU (a float64 model; a channels_last one,
    whose activations are not contiguous; CUDA tensors alike) take the float64 vector_norm path,
    squared and summed on the device together with any values the CPU path gave."""
    model = net().double() if kind == "float64" else net().to(memory_format=torch.channels_last)
    rel = 1e-9 if kind == "float64" else 1e-5
    reference = copy.deepcopy(model)
    opt, opt_ref = (torch.optim.SGD(m.parameters(), lr=0.05) for m in (model, reference))
    with resviz.monitor(model, tmp_path / "r", input_shape=SHAPE) as mon:
        for x, y in batches(2):  # step 0 learns each block's plan, step 1 measures by it
            x = x.double() if kind == "float64" else x.contiguous(memory_format=torch.channels_last)
            x = x.requires_grad_(True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec = mon.step(loss)
            _, want = reference_probes(reference, x.detach(), y)
            opt_ref.step()
            for b in BLOCKS:
                for p, v in want[b].items():
                    assert rec.blocks[b][p] == pytest.approx(v, rel=rel), (rec.step, b, p)
        assert all(w.plan for w in mon.probes.watches)
