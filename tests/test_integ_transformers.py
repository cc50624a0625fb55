"""gradlens.integrations.transformers.GradlensCallback in real Hugging Face ``Trainer.train`` runs
(CPU, a tiny torch.nn model, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from integ_support import GradLog, assert_steps_match, require
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = require("transformers")
require("accelerate")
from gradlens.integrations.transformers import GradlensCallback  # noqa: E402


class Tiny(nn.Module):
    """Linear → tanh → linear with an MSE loss, as a Trainer model; keeps its losses."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.losses: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        loss = nn.functional.mse_loss(out.float(), labels)
        self.losses.append(loss.item())
        return {"loss": loss, "logits": out}


class Independent(transformers.TrainerCallback):  # type: ignore[misc]
    """Reads the same gradients in the same hook, without gradlens."""

    def __init__(self) -> None:
        self.seen = GradLog()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seen.take(kw["model"])

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seen.stepped(kw["model"])


def dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    return [{"x": x[i], "labels": x[i].sum(0, keepdim=True)} for i in range(64)]


def trainer(model: nn.Module, tmp_path: Path, *callbacks: Any, **options: Any) -> Any:
    cls = options.pop("trainer_class", transformers.Trainer)
    optimizers = options.pop("optimizers", (None, None))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=options.pop("max_steps", 4),
        per_device_train_batch_size=4,
        learning_rate=0.1,
        lr_scheduler_type="constant",
        optim="sgd",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        **options,
    )
    return cls(
        model=model,
        args=args,
        train_dataset=dataset(),
        callbacks=list(callbacks),
        optimizers=optimizers,
    )


def test_accumulated_clipped_steps_equal_an_independent_computation(tmp_path: Path) -> None:
    model, check = Tiny(), Independent()
    cb = GradlensCallback(detail_every=1, report=False, plot=tmp_path / "w.png")
    t = trainer(model, tmp_path, cb, check, gradient_accumulation_steps=4, max_grad_norm=0.5)
    t.train()
    lens = cb.lens
    assert lens is not None and t.state.global_step == 4
    assert lens.diagnostics == []  # 4 backward calls per step, zeroed by the Trainer
    assert_steps_match(lens, check.seen)
    for step in lens.steps:
        assert step.backward_calls == 4
        window = model.losses[4 * step.step : 4 * step.step + 4]
        assert step.loss == pytest.approx(sum(window) / 4, rel=1e-6)  # the Trainer divides by 4
        total = sum(s.grad_norm**2 for s in step.grads.values()) ** 0.5
        assert total == pytest.approx(0.5, rel=1e-4)  # measured after clipping to 0.5
    assert (tmp_path / "w.png").stat().st_size > 1000
    assert torch._C._is_torch_function_mode_enabled() is False  # the hooks are gone


class LossWeightTrainer(transformers.Trainer):  # type: ignore[misc]
    """A learnable loss weight outside the model: ``model.zero_grad()`` never clears it."""

    weight: nn.Parameter

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kw: Any) -> Any:
        out = model(**inputs)
        loss = out["loss"] * self.weight.exp() - self.weight
        return (loss, out) if return_outputs else loss


def test_a_planted_stale_gradient_outside_the_model_is_caught(tmp_path: Path) -> None:
    model = Tiny()
    weight = nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([*model.parameters(), weight], lr=0.05)
    cb = GradlensCallback(report=False)
    t = trainer(model, tmp_path, cb, optimizers=(opt, None), trainer_class=LossWeightTrainer)
    t.weight = weight
    t.train()
    assert cb.lens is not None
    found = [d for d in cb.lens.diagnostics if d.kind == "grad-accumulation"]
    assert len(found) == 1 and found[0].step == 1
    assert "weight" in (found[0].message or "") and "net." not in found[0].message


def test_fp16_amp_unscaled_and_a_skipped_overflow_step(tmp_path: Path) -> None:
    model, check = Tiny(), Independent()
    cb = GradlensCallback(detail_every=1, report=False)
    t = trainer(model, tmp_path, cb, check, fp16=True, gradient_accumulation_steps=2)
    # Accelerate makes a GradScaler for fp16 on GPUs only; this is the same setup on the CPU,
    # at a scale where step 0's loss overflows (to inf, even in float32): the scaler skips
    # that step and drops to 2**10.
    assert t.accelerator.scaler is None
    t.accelerator.scaler = torch.amp.GradScaler(
        "cpu", init_scale=2.0**127, backoff_factor=2.0**-117
    )
    t.train()
    lens = cb.lens
    assert lens is not None and lens.record.total_steps == t.state.global_step == 4
    assert [d.kind for d in lens.diagnostics] == []
    assert any("skipped 1 optimizer step" in n for n in lens.record.notes)
    check.seen.grads, check.seen.before = check.seen.grads[1:], check.seen.before[1:]
    check.seen.after = check.seen.after[1:]
    assert_steps_match(lens, check.seen, first_step=1)
    for step in lens.steps:  # the loss divided by the scale the backward used
        window = model.losses[2 * step.step : 2 * step.step + 2]
        assert step.loss == pytest.approx(sum(window) / 2, rel=1e-3)


class Breaks(Tiny):
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(self.losses) == 3:
            raise RuntimeError("the data loader gave a bad batch")
        return super().forward(x, labels)


def test_as_a_context_manager_the_hooks_go_when_training_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="bad batch"), GradlensCallback(report=False) as cb:
        trainer(Breaks(), tmp_path, cb).train()
    assert torch._C._is_torch_function_mode_enabled() is False
    assert cb.lens is not None and [s.step for s in cb.lens.steps] == [0, 1, 2]
