"""The engine's garbage-collector pauses: only in resviz's own process; nest and overlap across
threads; restore what was there. A library call leaves the host's collector alone."""

from __future__ import annotations

import gc
import threading

import pytest

from resviz.core import gcpause
from resviz.core.gcpause import gc_paused


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    gcpause.hold_automatic_off(False)
    (gc.enable if was else gc.disable)()


@pytest.fixture(autouse=True)
def as_the_command_line(collector_on):
    """The pause tests run as resviz's own process does (the CLI's main owns it)."""
    with gcpause.owning_process():
        yield


def test_nested_pauses_restore_the_collector_once_the_outer_ends():
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled() and gcpause.active()
        assert not gc.isenabled()  # the inner one ending changes nothing
    assert gc.isenabled() and not gcpause.active()


def test_overlapping_pauses_in_two_threads():
    """Thread A pauses, B pauses, A ends first: the collector stays off until B ends too."""
    a_in, b_in, a_out, b_out = (threading.Event() for _ in range(4))
    seen = {}

    def a():
        with gc_paused():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with gc_paused():
            b_in.set()
            a_out.wait(5)
            seen["after A ended"] = gc.isenabled()
        b_out.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"after A ended": False}
    assert gc.isenabled()


def test_a_pause_keeps_a_collector_that_was_off_off():
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_holding_automatic_collection_off_outlives_pauses():
    """The app collects on its UI thread: a pause ending in a worker must not switch it back on."""
    with gc_paused():
        gcpause.hold_automatic_off(True)  # installed while a worker was mid-pause
    assert not gc.isenabled()
    with gc_paused():
        pass
    assert not gc.isenabled()
    with gc_paused():
        gcpause.hold_automatic_off(False)  # released mid-pause: back on when the pause ends
        assert not gc.isenabled()
    assert gc.isenabled()


def test_releasing_the_hold_leaves_a_collector_the_host_had_off_off():
    gc.disable()
    gcpause.hold_automatic_off(True)
    gcpause.hold_automatic_off(False)
    assert not gc.isenabled()
    gc.disable()
    with gc_paused():
        gcpause.hold_automatic_off(True)
    gcpause.hold_automatic_off(False)
    assert not gc.isenabled()


def _collector_seen_by_forward(host_enabled: bool) -> tuple[list[bool], bool]:
    """The collector's state inside a library call of ``resviz.analyze`` and after it."""
    import torch
    from torch import nn

    import resviz
    from resviz.core.sources import zoo

    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(gc.isenabled())
            return x

    (gc.enable if host_enabled else gc.disable)()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Probe())
    resviz.analyze(model, (1, 3, 8, 8))
    zoo.build("resnet20")  # building on meta pauses in the CLI too
    with torch.no_grad():
        model(torch.zeros(1, 3, 8, 8))
    return seen, gc.isenabled()


@pytest.mark.parametrize("host_enabled", [True, False])
def test_a_library_call_leaves_the_host_collector_alone_throughout(host_enabled, monkeypatch):
    """``resviz.analyze`` from someone else's program: never a pause, even for the call's length
    (the host's other threads run meanwhile)."""
    monkeypatch.setattr(gcpause, "_owners", 0)  # not the command line: someone else's process
    seen, after = _collector_seen_by_forward(host_enabled)
    assert seen and set(seen) == {host_enabled} and after is host_enabled


def test_the_command_line_pauses_the_collector_while_it_analyses():
    seen, after = _collector_seen_by_forward(True)
    assert seen[0] is False and seen[-1] is True and after is True
