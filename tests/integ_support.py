"""Helpers of the framework and sink tests: optional packages, and statistics computed
independently of gradlens (float64, straight from the gradients)."""

from __future__ import annotations

import importlib
import math
import os
from types import ModuleType
from typing import Any

import pytest
import torch

import gradlens


def require(module: str) -> ModuleType:
    """Returns the imported ``module``; skips the test module when it is not installed, except
    where ``GRADLENS_REQUIRE_EXTRAS=1`` (CI installs the extras: there a missing one fails)."""
    if os.environ.get("GRADLENS_REQUIRE_EXTRAS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def grad_stats(g: torch.Tensor) -> dict[str, float]:
    """Returns a gradient's norm, mean, population std, max |g| and zero fraction (float64)."""
    d = g.detach().double()
    return {
        "grad_norm": d.norm().item(),
        "grad_mean": d.mean().item(),
        "grad_std": d.std(unbiased=False).item(),
        "grad_max": d.abs().max().item(),
        "zero_frac": (d == 0).double().mean().item(),
    }


class GradLog:
    """Keeps each step's gradients, weights before and after: an independent record."""

    def __init__(self) -> None:
        self.grads: list[dict[str, dict[str, float]]] = []
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []

    def take(self, model: torch.nn.Module) -> None:
        """The gradients the next step will use, and the weights before it."""
        self.grads.append(
            {n: grad_stats(p.grad) for n, p in model.named_parameters() if p.grad is not None}
        )
        self.before.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def stepped(self, model: torch.nn.Module) -> None:
        """The weights after the step taken last."""
        self.after.append({n: p.detach().clone() for n, p in model.named_parameters()})


def assert_steps_match(lens: gradlens.Lens, log: GradLog, *, first_step: int = 0) -> None:
    """Asserts every recorded step's statistics equal the independent ones of the same step."""
    steps = lens.steps
    assert [s.step for s in steps] == list(range(first_step, first_step + len(log.grads)))
    for step, grads, before, after in zip(steps, log.grads, log.before, log.after, strict=True):
        assert set(step.grads) == set(grads)
        for name, want in grads.items():
            got = step.grads[name]
            assert got.grad_norm == pytest.approx(want["grad_norm"], rel=1e-5)
            assert got.grad_mean == pytest.approx(want["grad_mean"], rel=1e-4, abs=1e-7)
            assert got.grad_std == pytest.approx(want["grad_std"], rel=2e-3, abs=1e-6)
            assert got.grad_max == pytest.approx(want["grad_max"], rel=1e-6)
            if step.detail:
                assert got.zero_frac == pytest.approx(want["zero_frac"])
                w0, w1 = before[name].double(), after[name].double()
                assert got.weight_norm == pytest.approx(w0.norm().item(), rel=1e-5)
                ratio = (w1 - w0).norm().item() / w0.norm().item()
                assert got.update_ratio == pytest.approx(ratio, rel=1e-4)


def finite(values: Any) -> bool:
    return all(math.isfinite(v) for v in values)
