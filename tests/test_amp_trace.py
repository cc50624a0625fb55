"""trace() under AMP: infinite gradients of a loss scaled by ``GradScaler`` are the scaler
settling its scale (it skips the step and lowers the scale), told as ``amp-overflow`` (INFO),
never excused for a loss that a GradScaler did not scale."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import gradlens
from gradlens.records import BackwardEvent, Severity
from gradlens.records.serialize import dumps, loads


def _model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(20)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    return model, torch.randn(5, 4) * 100, torch.tensor([0, 2, 1, 1, 0])


def _kinds(t: Any) -> list[tuple[str, Severity]]:
    return [(d.kind, d.severity) for d in t.diagnostics]


def test_the_scalers_first_overflow_is_told_as_amp_at_work() -> None:
    model, x, y = _model()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.trace(model) as t:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0**29  # the step was skipped: the gradients were not finite
    assert _kinds(t) == [("amp-overflow", Severity.INFO)]
    (back,) = [e for e in t.events if isinstance(e, BackwardEvent)]
    assert back.grad_scaler
    again = loads(dumps(t.record))
    assert [e.grad_scaler for e in again.events if isinstance(e, BackwardEvent)] == [True]


class _Trainer:
    def __init__(self) -> None:
        self.model, self.x, self.y = _model()
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)

    def step(self) -> None:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(self.model(self.x), self.y)
        self.scaler.scale(loss).backward()  # the scaler is found as self.scaler


def test_a_scaler_kept_on_an_object_is_found() -> None:
    trainer = _Trainer()
    with gradlens.trace(trainer.model) as t:
        trainer.step()
    assert _kinds(t) == [("amp-overflow", Severity.INFO)]


def test_a_loss_multiplied_by_a_large_number_is_not_excused() -> None:
    model, x, y = _model()
    big = torch.tensor(2.0**30)  # not a GradScaler's scale: the overflow is the program's
    with gradlens.trace(model) as t:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        (loss * big).backward()
    kinds = _kinds(t)
    assert ("amp-overflow", Severity.INFO) not in kinds
    assert any(k in ("inf-grad", "nan-grad") and s is Severity.ERROR for k, s in kinds), kinds
    assert not any(e.grad_scaler for e in t.events if isinstance(e, BackwardEvent))


def test_a_scale_that_fits_says_nothing() -> None:
    model, x, y = _model()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    with gradlens.trace(model) as t:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
    assert _kinds(t) == []
    assert [e.grad_scaler for e in t.events if isinstance(e, BackwardEvent)] == [True]
