"""The engine's garbage-collector pauses: nest and overlap across threads, restore what was there."""

from __future__ import annotations

import gc
import threading

import pytest

from resviz.core import gcpause
from resviz.core.gcpause import gc_paused


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    gcpause.hold_automatic_off(False)
    (gc.enable if was else gc.disable)()


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
