"""The Training tab's model, headless: no Qt, no torch, no threads, no waits. What the tab shows —
the run's series, its state, its fault and error, the flagged norms — is filed and read here."""

from __future__ import annotations

import math

from resviz.core.training import RunState
from resviz.core.training.store import record_payload
from resviz.gui.training.run_model import TabRun

NAMES = ["layer1.0", "layer1.1", "layer1.2"]


def payload(step, grads=(0.1, 0.1, 0.1), nonfinite=False, flags=None):
    blocks = {n: {"grad_norm": g, "input_grad_norm": g, "output_grad_norm": g} for n, g in zip(NAMES, grads)}
    return record_payload({"step": step, "loss": math.nan if nonfinite else 1.0, "accuracy": 0.5, "lr": 0.1,
                           "seconds": 0.01, "blocks": blocks, "flags": flags or {}, "nonfinite": nonfinite},
                          wall=100.0 + step)  # fmt: skip


def test_a_run_s_state_steps_and_stores_are_the_core_run_store():
    run = TabRun(capacity=8)
    run.set_state("building")
    run.started({"names": NAMES, "twin": True, "plain_names": NAMES})
    assert set(run.stores) == {"residual", "plain"} and run.stores["residual"].state is RunState.IDLE
    run.set_state("running")
    run.stepped([{"residual": payload(s), "plain": payload(s)} for s in range(20)])
    assert run.steps_done() == 20
    res = run.stores["residual"]
    assert res.state is RunState.RUNNING and res.count == 20 and len(res) <= 8  # bounded, thinned
    run.set_state("error")
    assert res.state is RunState.STOPPED and run.stores["plain"].state is RunState.STOPPED


def test_flags_are_tracked_since_their_first_step_and_forgotten_when_back_in_range():
    run = TabRun()
    run.started({"names": NAMES})
    run.stepped([{"residual": payload(0)}])
    run.stepped([{"residual": payload(1, (2e3, 0.1, 0.1), flags={"layer1.0.grad_norm": "exploding"})}])
    run.stepped([{"residual": payload(2, (3e3, 1e-9, 0.1), flags={"layer1.0.grad_norm": "exploding",
                                                                   "layer1.1.grad_norm": "vanishing"})}])  # fmt: skip
    assert run.flag_since == {"layer1.0.grad_norm": 1, "layer1.1.grad_norm": 2}
    entries = {e[0]: e for e in run.flag_entries()}
    assert entries["layer1.0.grad_norm"][3:6] == ("exploding", 3e3, 1)
    run.stepped([{"residual": payload(3, (0.1, 1e-9, 0.1), flags={"layer1.1.grad_norm": "vanishing"})}])
    assert run.flag_since == {"layer1.1.grad_norm": 2}


def test_a_fault_keeps_the_flags_before_it_names_its_blocks_and_a_reset_forgets_it():
    run = TabRun()
    run.started({"names": NAMES})
    run.stepped([{"residual": payload(0, (2e3, 0.1, 0.1), flags={"layer1.0.grad_norm": "exploding"})}])
    run.stepped([{"residual": payload(1, (math.nan, math.nan, 0.1), nonfinite=True)}])
    run.faulted({"message": "NaN in layer1.1", "which": "residual", "blocks": ["layer1.1"]})
    run.set_state("faulted")
    assert run.stores["residual"].state is RunState.FAULTED
    assert [f["step"] for f in run.stores["residual"].faults] == [1]
    assert run.flag_since == {"layer1.0.grad_norm": 0}  # what was exploding before the NaN
    assert run.bad_blocks() == {"layer1.0", "layer1.1"}
    run.resumed()
    assert run.fault is None
    run.failed("boom")
    run.reset()
    assert run.error is None and run.steps_done() == 0 and run.flag_since == {}
    assert run.stores["residual"].names == NAMES


def test_a_followed_run_s_store_is_adopted_as_it_is():
    from resviz.core.training import RunStore

    store = RunStore(NAMES)
    store.append(payload(0, (2e3, 0.1, 0.1), flags={"layer1.0.grad_norm": "exploding"}))
    run = TabRun()
    run.adopt("residual", store)
    assert run.stores["residual"] is store and run.flag_since == {"layer1.0.grad_norm": 0}


def test_the_model_imports_neither_qt_nor_torch():
    import subprocess
    import sys

    code = ("import sys; import resviz.gui.training.run_model, resviz.gui.training.follow; "
            "print(sorted(m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
