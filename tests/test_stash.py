"""The watcher's stash (``capture/stash.py``): per-step numbers copied into one float64 buffer
per device and read back in one copy, and the watcher's steps and losses when the stash is
emptied in the middle of a step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradlens
from gradlens.capture.stash import Stash


def test_put_and_take_give_back_every_value_exactly() -> None:
    stash = Stash()
    a = stash.put(torch.tensor(0.1, dtype=torch.float32))
    b = stash.put(torch.tensor([[1.5, -2.0], [3.0, float("nan")]]))
    c = stash.put(torch.tensor([7, 8], dtype=torch.int64))
    d = stash.put(torch.tensor(0.3, dtype=torch.bfloat16))
    taken = stash.take()
    assert taken.read(a) == float(torch.tensor(0.1, dtype=torch.float32))  # float32, exactly
    values = taken.read(b)
    assert isinstance(values, list) and values[:3] == [1.5, -2.0, 3.0] and values[3] != values[3]
    assert taken.read(c) == [7.0, 8.0]
    assert taken.read(d) == float(torch.tensor(0.3, dtype=torch.bfloat16))


def test_the_buffer_grows_keeping_what_it_holds_and_is_reused_after_a_take() -> None:
    stash = Stash()
    first = stash.put(torch.arange(3.0))
    big = stash.put(torch.arange(10_000.0))  # past the first buffer: it doubles, copying
    taken = stash.take()
    assert taken.read(first) == [0.0, 1.0, 2.0]
    assert taken.read(big) == [float(i) for i in range(10_000)]
    buffer = stash._buffers[torch.device("cpu")]
    again = stash.put(torch.tensor(5.0))
    assert again.start == 0 and stash._buffers[torch.device("cpu")] is buffer  # no new memory
    assert stash.take().read(again) == 5.0


def test_a_slot_cannot_be_read_from_another_take() -> None:
    stash = Stash()
    old = stash.put(torch.tensor(1.0))
    stash.take()
    stash.put(torch.tensor(2.0))
    with pytest.raises(RuntimeError, match="after its take"):
        stash.take().read(old)


def _model() -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, torch.randn(8, 4), torch.randn(8, 1)


def test_reading_the_record_between_backward_and_step_keeps_each_steps_loss() -> None:
    """``lens.record`` empties the stash while a backward's loss waits for its step, and
    while lens.log's scalar does: both are read then, and land in the right step."""
    model, opt, x, y = _model()
    losses = []
    with gradlens.watch(model, opt, live=False) as lens:
        for i in range(3):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            lens.log(acc=torch.tensor(0.5 + i))
            losses.append(loss.item())
            assert len(lens.record.steps) == i  # a copy to the host mid-step
            opt.step()
    steps = lens.steps
    assert [s.loss for s in steps] == losses
    assert [s.scalars["acc"] for s in steps] == [0.5, 1.5, 2.5]


def test_two_backward_calls_before_one_step_sum_their_losses() -> None:
    model, opt, x, y = _model()
    with gradlens.watch(model, opt, live=False) as lens:
        opt.zero_grad()
        first = nn.functional.mse_loss(model(x[:4]), y[:4])
        first.backward()
        second = nn.functional.mse_loss(model(x[4:]), y[4:])
        second.backward()
        opt.step()
    (step,) = lens.steps
    assert step.backward_calls == 2
    assert step.loss == pytest.approx(first.item() + second.item(), rel=1e-12)


def test_a_number_logged_first_under_inference_mode_does_not_break_later_steps() -> None:
    """The stash's buffer is made by whichever value comes first; one made under
    ``torch.inference_mode()`` could never be written outside it again."""
    model, opt, x, y = _model()
    with gradlens.watch(model, opt, live=False) as lens:
        with torch.inference_mode():
            lens.log(val=nn.functional.mse_loss(model(x), y))
        for _ in range(2):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            with torch.inference_mode():
                lens.log(val=torch.tensor(1.0))
    assert len(lens.steps) == 2 and lens.steps[1].scalars["val"] == 1.0
    assert not lens.record.notes
