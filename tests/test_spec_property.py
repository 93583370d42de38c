"""Random declarative ResNets, many deliberately broken, against eager PyTorch on the CPU.

Ground truth comes from running the real model eagerly: a function mode sees every add of two
tensors inside a block, records the blocks whose two operands disagree and, like resviz, carries
on with the residual branch (`out` in ``out += identity``).
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

import resviz
from resviz.core.sources import spec as specmod

ADDS = {torch.Tensor.add_, torch.Tensor.add, torch.add, torch.Tensor.__iadd__, torch.Tensor.__add__}


class EagerAdds(TorchFunctionMode):
    """Records mismatching adds by block, continuing with the first operand."""

    def __init__(self, model):
        super().__init__()
        self.stack, self.broken = [], {}
        self.handles = []
        for name, m in model.named_modules():
            if type(m).__name__.endswith(("Block", "Bottleneck")):
                self.handles.append(m.register_forward_pre_hook(lambda mod, a, n=name: self.stack.append(n)))
                self.handles.append(m.register_forward_hook(lambda *a: [self.stack.pop()] and None))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in ADDS and len(args) == 2 and all(isinstance(a, torch.Tensor) for a in args):
            a, b = args
            if a.shape != b.shape and self.stack:
                self.broken[self.stack[-1]] = (tuple(a.shape), tuple(b.shape))
                try:
                    return func(*args, **kwargs)  # broadcastable: PyTorch runs it
                except RuntimeError:
                    return a
        return func(*args, **kwargs)


@st.composite
def random_spec(draw):
    block = draw(st.sampled_from(["basic", "bottleneck", "preact", "preact-bottleneck"]))
    n_stages = draw(st.integers(1, 3))
    stages = []
    for i in range(n_stages):
        stages.append({
            "blocks": draw(st.integers(1, 2)),
            "width": draw(st.sampled_from([4, 8])) * (2**i),
            "stride": 1 if i == 0 else draw(st.sampled_from([1, 2])),
            "shortcut": draw(st.sampled_from(["A", "B", "C", "D", "identity", "identity"])),
            "padding": draw(st.sampled_from([1, 1, 1, 0])),
            "pool_ceil_mode": draw(st.booleans()),
        })  # fmt: skip
    if block.endswith("bottleneck"):
        for s in stages:
            if s["shortcut"] == "A":
                s["shortcut"] = "B"
    size = draw(st.integers(9, 33))
    return {
        "name": "random", "input": f"3x{size}x{size}", "classes": 5, "block": block,
        "stem": {"kind": "cifar", "channels": draw(st.sampled_from([4, 8]))}, "stages": stages,
    }  # fmt: skip


@settings(max_examples=int(__import__("os").environ.get("RESVIZ_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_spec())
def test_mismatches_are_exactly_the_blocks_whose_paths_disagree(data):
    spec = specmod.parse_spec(data)
    torch.manual_seed(0)
    model = specmod.build(spec, device="cpu").eval()
    mode = EagerAdds(model)
    try:
        with torch.no_grad(), mode:
            model(torch.randn(spec.input_shape))
        eager_error = None
    except RuntimeError as e:  # a conv too small for its input: not a shortcut question
        eager_error = e
    finally:
        for h in mode.handles:
            h.remove()
    report = resviz.analyze(model, spec.input_shape, suggest_sizes=False)
    found = {m.block: (m.residual_shape, m.shortcut_shape) for m in report.mismatches}
    if eager_error is None:
        assert found == mode.broken
        assert report.complete and not report.errors
    else:
        assert not report.complete or report.errors
        assert set(mode.broken) <= set(found)
    for m in report.mismatches:
        assert m.cause and m.fix
    if report.complete:  # every block is found, broken or not
        assert len(report.blocks) == sum(s["blocks"] for s in data["stages"])


# ----------------------------------------------------------------- broken residual branches


@st.composite
def spec_with_a_broken_branch(draw):
    """A healthy spec net (projection shortcuts) and a block whose last conv makes a wrong width."""
    block = draw(st.sampled_from(["basic", "bottleneck", "preact", "preact-bottleneck"]))
    stages = [{"blocks": draw(st.integers(1, 2)), "width": draw(st.sampled_from([4, 8])) * 2**i,
               "stride": 1 if i == 0 else 2, "shortcut": "B"}
              for i in range(draw(st.integers(1, 2)))]  # fmt: skip
    data = {"name": "branch", "input": f"3x{draw(st.integers(8, 20))}x", "classes": 3,
            "block": block, "stem": {"kind": "cifar", "channels": 4}, "stages": stages}  # fmt: skip
    data["input"] += data["input"].split("x")[1]
    n_blocks = sum(s["blocks"] for s in stages)
    which = draw(st.integers(0, n_blocks - 1))
    delta = draw(st.sampled_from([-2, 2, 4]))
    return data, which, delta


def _last_layers(block):
    """The block's last conv and the norm right after it (None in a pre-activation block)."""
    last = "conv3" if hasattr(block, "conv3") else "conv2"
    norm = {"conv3": "bn3", "conv2": "bn2"}[last] if not block.preact else None
    return last, norm


@settings(max_examples=int(__import__("os").environ.get("RESVIZ_EXAMPLES", 15)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_with_a_broken_branch())
def test_a_broken_residual_branch_is_blamed_and_its_fix_mends_the_eager_model(case):
    data, which, delta = case
    spec = specmod.parse_spec(data)
    torch.manual_seed(0)
    model = specmod.build(spec, device="cpu").eval()
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        healthy = model(x).shape
    name, block = [(n, m) for n, m in model.named_modules() if hasattr(m, "downsample")][which]
    last, norm = _last_layers(block)
    conv = getattr(block, last)
    bad = conv.out_channels + delta
    setattr(block, last, torch.nn.Conv2d(conv.in_channels, bad, 1 if last == "conv3" else 3,
                                         padding=0 if last == "conv3" else 1, bias=False))  # fmt: skip
    if norm:
        setattr(block, norm, torch.nn.BatchNorm2d(bad))
    report = resviz.analyze(model, spec.input_shape, suggest_sizes=False)
    (m,) = report.mismatches  # one block, nothing downstream blamed
    assert m.block == name and m.broken_path == "residual"
    assert m.culprits[0] == f"{name}.{last}" and f"has out_channels {bad}" in m.cause
    assert report.complete and not report.errors
    exec(m.fix, {"nn": torch.nn, "model": model})  # pasted as the user would
    with torch.no_grad():
        assert model(x).shape == healthy  # the eager model runs again
    assert resviz.analyze(model, spec.input_shape, suggest_sizes=False).ok
