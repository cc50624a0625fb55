"""gradlens.integrations.lightning.GradlensCallback in real ``Trainer.fit`` runs (CPU, tiny)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from integ_support import GradLog, assert_steps_match, require
from torch import nn

import gradlens

pl = require("lightning.pytorch")
from gradlens.integrations.lightning import GradlensCallback  # noqa: E402


class Tiny(pl.LightningModule):  # type: ignore[misc]
    """Linear → tanh → linear, SGD; keeps its micro-batch losses. ``forget_zero_grad``
    overrides Lightning's zeroing with nothing (the planted bug)."""

    def __init__(self, *, forget_zero_grad: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.forget_zero_grad = forget_zero_grad
        self.losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        if not self.forget_zero_grad:
            optimizer.zero_grad()


class Independent(pl.Callback):  # type: ignore[misc]
    """Reads the same gradients in the same hook, without gradlens."""

    def __init__(self) -> None:
        self.seen = GradLog()
        self.open = False

    def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
        self.seen.take(module)
        self.open = True

    def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
        if self.open:
            self.seen.stepped(module)
            self.open = False


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4
    )


def fit(module: Tiny, tmp_path: Path, *callbacks: Any, **trainer: Any) -> Any:
    t = pl.Trainer(
        max_steps=trainer.pop("max_steps", 4),
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        **trainer,
    )
    t.fit(module, loader())
    return t


def test_accumulated_steps_equal_an_independent_computation_with_no_false_finding(
    tmp_path: Path,
) -> None:
    module, check = Tiny(), Independent()
    cb = GradlensCallback(detail_every=1, report=False, json=tmp_path / "w.json")
    trainer = fit(module, tmp_path, cb, check, accumulate_grad_batches=4)
    lens = cb.lens
    assert lens is not None and trainer.global_step == 4
    assert lens.diagnostics == []  # 4 backward calls per step, zeroed by Lightning: no finding
    assert_steps_match(lens, check.seen)
    for step in lens.steps:
        assert step.backward_calls == 4
        window = module.losses[4 * step.step : 4 * step.step + 4]
        assert step.loss == pytest.approx(sum(window) / 4, rel=1e-6)  # Lightning divides by 4
        assert step.lr == 0.1
    saved = gradlens.load(tmp_path / "w.json")
    assert isinstance(saved, gradlens.Lens) and saved.steps == lens.steps
    assert torch._C._is_torch_function_mode_enabled() is False  # the hooks are gone


def test_a_planted_missing_zero_grad_is_caught(tmp_path: Path) -> None:
    cb = GradlensCallback(report=False)
    fit(Tiny(forget_zero_grad=True), tmp_path, cb, accumulate_grad_batches=2)
    assert cb.lens is not None
    found = [d for d in cb.lens.diagnostics if d.kind == "grad-accumulation"]
    assert len(found) == 1 and found[0].step == 1  # the first step that reused a .grad


class Manual(Tiny):
    """Manual optimization, with the user's own ``zero_grad()`` forgotten."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        x, y = batch
        self.manual_backward(nn.functional.mse_loss(self.net(x), y))
        opt.step()  # no opt.zero_grad() anywhere


def test_a_forgotten_zero_grad_in_manual_optimization_is_caught(tmp_path: Path) -> None:
    cb = GradlensCallback(report=False)
    fit(Manual(), tmp_path, cb, max_steps=3)
    assert cb.lens is not None and len(cb.lens.steps) == 3
    found = [d for d in cb.lens.diagnostics if d.kind == "grad-accumulation"]
    assert len(found) == 1 and found[0].step == 1
    assert found[0].source is not None and found[0].source.endswith(
        f"test_integ_lightning.py:{Manual.training_step.__code__.co_firstlineno + 3}"
    )  # the user's manual_backward line


class WithLBFGS(Tiny):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)


def test_lbfgs_closure_evaluations_are_one_step_each(tmp_path: Path) -> None:
    # Lightning calls on_before_optimizer_step after every closure evaluation LBFGS makes.
    module, cb = WithLBFGS(), GradlensCallback(report=False)
    fit(module, tmp_path, cb, max_steps=3)
    assert cb.lens is not None and [s.step for s in cb.lens.steps] == [0, 1, 2]
    assert len(module.losses) > 3  # more than one evaluation per step
    assert cb.lens.diagnostics == [] and cb.lens.record.notes == ()
    for step in cb.lens.steps:  # the gradients and loss of the last evaluation
        assert step.backward_calls == 1 and step.loss in module.losses


class Breaks(Tiny):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == 3:
            raise RuntimeError("the data loader gave a bad batch")
        return super().training_step(batch, batch_idx)


def test_training_that_raises_removes_the_hooks_and_keeps_the_steps(tmp_path: Path) -> None:
    cb = GradlensCallback(report=False)
    with pytest.raises(RuntimeError, match="bad batch"):
        fit(Breaks(), tmp_path, cb)
    assert torch._C._is_torch_function_mode_enabled() is False
    assert cb.lens is not None and [s.step for s in cb.lens.steps] == [0, 1, 2]


def test_amp_unscaled_statistics_and_a_skipped_overflow_step(tmp_path: Path) -> None:
    from lightning.pytorch.plugins import MixedPrecision

    # A scale so large that step 0's gradients overflow: the scaler skips that step and drops
    # its scale to 2**10, where every later step is finite.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-30)
    module, check = Tiny(), Independent()
    cb = GradlensCallback(detail_every=1, report=False)
    trainer = fit(module, tmp_path, cb, check, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    lens = cb.lens
    assert lens is not None
    assert lens.record.total_steps == trainer.global_step == 4
    assert [d.kind for d in lens.diagnostics] == []  # the skipped overflow is AMP's business
    assert any("skipped 1 optimizer step" in n for n in lens.record.notes)
    # The recorded steps are 1, 2, 3: unscaled gradients (as the independent reader saw them).
    check.seen.grads, check.seen.before = check.seen.grads[1:], check.seen.before[1:]
    check.seen.after = check.seen.after[-3:]
    assert_steps_match(lens, check.seen, first_step=1)
    for step in lens.steps:  # the loss divided by the scale the backward used
        assert step.loss == pytest.approx(module.losses[step.step], rel=1e-3)


def test_sinks_and_a_second_fit_with_the_same_callback(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gradlens.sinks import TensorBoard

    cb = GradlensCallback(report=False, sinks=[TensorBoard(tmp_path / "tb")])
    fit(Tiny(), tmp_path, cb)
    first = cb.lens
    fit(Tiny(), tmp_path, cb, max_steps=2)  # a new Lens for the new run
    assert first is not None and cb.lens is not None and cb.lens is not first
    assert len(first.steps) == 4 and len(cb.lens.steps) == 2
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    norms = [e.value for e in events.Scalars("grad_norm/net.0.weight")]
    assert len(norms) == 6
    assert norms[:4] == pytest.approx([s.grads["net.0.weight"].grad_norm for s in first.steps])
