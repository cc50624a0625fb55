"""gradlens holds Python's cyclic collector off only while it builds records (``_gc.py``), and
always leaves it as it found it: on, off, or after an error."""

from __future__ import annotations

import gc

import pytest
import torch

import gradlens
from gradlens._gc import gc_paused


def _graph() -> gradlens.Graph:
    w = torch.ones(3, requires_grad=True)
    return gradlens.graph((w * 2).sum(), params={"w": w})


def test_the_collector_is_off_inside_and_back_on_after() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_callers_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        _graph().view(depth=0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_inside_still_turns_it_back_on() -> None:
    with pytest.raises(gradlens.GradlensError), gc_paused():
        raise gradlens.GradlensError("boom")
    assert gc.isenabled()
    with pytest.raises(gradlens.NoGraphError):
        gradlens.graph(torch.ones(2))  # no grad_fn: raises from inside the paused build
    assert gc.isenabled()


def test_graph_view_and_trace_leave_it_on() -> None:
    g = _graph()
    g.view(depth="auto")
    with gradlens.trace():
        (torch.ones(2, requires_grad=True) * 3).sum().backward()
    assert gc.isenabled()
    assert [n.name for n in g.nodes][:2] == ["output", "SumBackward0"]


def _step() -> None:
    (torch.ones(2, requires_grad=True) * 3).sum().backward()


def test_a_trace_sets_the_old_objects_aside_and_puts_them_back() -> None:
    assert gc.get_freeze_count() == 0
    with gradlens.trace():
        assert gc.get_freeze_count() > 0  # the objects alive before the trace
        _step()
    assert gc.get_freeze_count() == 0
    with pytest.raises(ValueError), gradlens.trace():
        assert gc.get_freeze_count() > 0
        raise ValueError("the user's code raises")
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_programs_own_freeze_and_disabled_collector_are_left_alone() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gradlens.trace():
            _step()
        assert gc.get_freeze_count() > frozen // 2  # not unfrozen (less what died since)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        with gradlens.trace():
            assert gc.get_freeze_count() == 0
            _step()
        assert not gc.isenabled()
    finally:
        gc.enable()
