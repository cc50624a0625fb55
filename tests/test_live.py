"""What a watched loop shows while it runs (``gradlens._live.LiveOutput``): compact lines in
logs and pipes, a rich live view on a terminal, or nothing; also when the loop raises."""

from __future__ import annotations

import inspect
import io
import re
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

import gradlens
import gradlens._live
from gradlens._lens import Lens
from gradlens._live import LINE_EVERY, LiveOutput
from gradlens.capture.watch import Watcher
from gradlens.records import Diagnostic, Severity, WatchRecord

HERE = Path(__file__).name
PARAMS = ("0.weight", "0.bias", "2.weight", "2.bias")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def _no_forced_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def console(*, terminal: bool) -> Console:
    return Console(file=io.StringIO(), width=100, force_terminal=terminal)


def output(c: Console) -> str:
    """Returns what ``c`` printed, without the terminal's escape codes."""
    file = c.file
    assert isinstance(file, io.StringIO)
    return _ANSI.sub("", file.getvalue())


def setup() -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(16, 3)
    y = (x.sum(1, keepdim=True) > 0).float()
    return model, optimizer, x, y


def lens_on(
    model: nn.Module, optimizer: torch.optim.Optimizer, live: bool | None, c: Console
) -> Lens:
    return Lens(Watcher(dict(model.named_parameters()), [optimizer]), live=live, console=c)


def loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    *,
    zero_grad: bool = True,
    raise_at: int | None = None,
) -> None:
    for step in range(steps):
        if zero_grad:
            optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
        if step == raise_at:
            raise RuntimeError(f"the loop broke at step {step}")


def backward_line() -> int:
    lines, start = inspect.getsourcelines(loop)
    (hit,) = [start + i for i, line in enumerate(lines) if "loss.backward()" in line]
    return hit


def hooks_gone() -> bool:
    from torch.nn.modules import module as torch_module
    from torch.optim import optimizer as torch_optimizer

    return (
        not torch_optimizer._global_optimizer_pre_hooks
        and not torch_module._global_forward_pre_hooks
        and torch._C._len_torch_function_stack() == 0
    )


def views(text: str) -> list[int]:
    """Returns the step counts of the live view headers ("step N  ·  loss ...") in ``text``."""
    return [int(n) for n in re.findall(r"step (\d+)  ·  loss", text)]


# ---- not a terminal: compact lines -----------------------------------------------------------


def test_lines_every_100_steps_and_each_finding_once() -> None:
    c = console(terminal=False)
    model, optimizer, x, y = setup()
    with lens_on(model, optimizer, None, c) as lens:
        loop(model, optimizer, x, y, 250, zero_grad=False)
    lines = output(c).splitlines()
    assert len(lines) == 4, lines
    finding, *steps = lines
    assert finding.startswith("gradlens error: [grad-accumulation] ")  # the words are watch's
    assert "step 1 " in finding
    assert finding.endswith(f"{HERE}:{backward_line()})")
    assert [line.split(" | ")[0] for line in steps] == ["step 100", "step 200", "step 250"]
    for line in steps:
        assert " | loss " in line and " | lr 0.001 | " in line
        assert line.endswith(" | 1 finding")
    assert [d.kind for d in lens.diagnostics] == ["grad-accumulation"]


def test_lines_through_gradlens_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gradlens.watch(live=None)`` prints on a console of its own: handed ours here."""
    c = console(terminal=False)
    monkeypatch.setattr(gradlens._live, "Console", lambda: c)
    model, optimizer, x, y = setup()
    with gradlens.watch(model, optimizer) as lens:
        loop(model, optimizer, x, y, 120)
    lines = output(c).splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 100", "step 120"]
    assert lines[-1].endswith("| 0 findings")
    assert len(lens.steps) == 120


def test_a_loop_that_raises_prints_the_final_line() -> None:
    c = console(terminal=False)
    model, optimizer, x, y = setup()
    with pytest.raises(RuntimeError, match="broke at step 6"), lens_on(model, optimizer, None, c):
        loop(model, optimizer, x, y, 20, raise_at=6)
    (line,) = output(c).splitlines()
    assert line.startswith("step 7 | loss ")
    assert hooks_gone()


def test_line_output_by_hand() -> None:
    """``due`` is cheap and exact; a jump past several lines prints one; findings print once."""
    c = console(terminal=False)
    out = LiveOutput(None, c)
    out.start(WatchRecord(params=(), steps=()))
    assert output(c) == ""
    assert not out.due(LINE_EVERY - 1)
    assert out.due(LINE_EVERY)

    found = Diagnostic("nan-grad", "w got a NaN gradient", Severity.ERROR, source="t.py:3")
    out.update(WatchRecord(params=(), steps=(), diagnostics=(found,), total_steps=7))
    out.update(WatchRecord(params=(), steps=(), diagnostics=(found,), total_steps=8))
    assert output(c).splitlines() == ["gradlens error: [nan-grad] w got a NaN gradient (t.py:3)"]

    out.update(WatchRecord(params=(), steps=(), diagnostics=(found,), total_steps=350))
    assert output(c).splitlines()[1:] == ["step 350 | no optimizer step yet | 1 finding"]
    assert not out.due(399)  # the next line is at 400, not at 200 or 300
    assert out.due(400)

    more = Diagnostic("no-grad", "b got no gradient")  # a warning without a source
    out.stop(WatchRecord(params=(), steps=(), diagnostics=(found, more), total_steps=351))
    assert output(c).splitlines()[2:] == [
        "gradlens warning: [no-grad] b got no gradient",
        "step 351 | no optimizer step yet | 2 findings",
    ]


# ---- live=False: nothing -----------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [False, True])
def test_live_false_prints_nothing(terminal: bool) -> None:
    c = console(terminal=terminal)
    model, optimizer, x, y = setup()
    with lens_on(model, optimizer, False, c) as lens:
        loop(model, optimizer, x, y, 120, zero_grad=False)
    assert c.file.getvalue() == ""  # type: ignore[attr-defined]
    assert [d.kind for d in lens.diagnostics] == ["grad-accumulation"]  # found all the same
    out = LiveOutput(False, c)
    out.start(lens.record)
    assert not out.due(10**6)
    out.update(lens.record)
    out.stop(lens.record)
    assert c.file.getvalue() == ""  # type: ignore[attr-defined]


# ---- a terminal: the live view -----------------------------------------------------------------


@pytest.mark.parametrize("live", [None, True])
def test_live_view_refreshes_on_every_step_when_due(
    live: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gradlens._live, "REFRESH_SECONDS", 0)
    c = console(terminal=True)
    stdout = sys.stdout
    model, optimizer, x, y = setup()
    with lens_on(model, optimizer, live, c) as lens:
        loop(model, optimizer, x, y, 12, zero_grad=False)
    text = output(c)
    assert text.startswith("waiting for the first optimizer step")
    shown = views(text)
    assert sorted(set(shown)) == list(range(1, 13))  # a refresh per step
    assert shown[-1] == 12  # the final state is the last thing drawn
    last = text[text.rindex("step 12  ·  loss") :]
    for name in PARAMS:
        assert name in last
    assert "gradients at the latest step" in last
    assert "grad-accumulation" in last  # the findings table of the final view
    assert " | " not in text  # no compact lines on a terminal
    assert c._live_stack == []
    assert sys.stdout is stdout  # rich's stdout redirection is undone
    assert lens.record.total_steps == 12


def test_live_view_shows_the_final_state_without_a_refresh() -> None:
    """With the default REFRESH_SECONDS a short fast loop is drawn at start and at the end."""
    c = console(terminal=True)
    model, optimizer, x, y = setup()
    with lens_on(model, optimizer, None, c):
        loop(model, optimizer, x, y, 5)
    text = output(c)
    assert text.startswith("waiting for the first optimizer step")
    assert views(text)[-1] == 5
    assert all(name in text for name in PARAMS)
    assert c._live_stack == []


def test_live_true_on_a_file_prints_the_final_view_once() -> None:
    c = console(terminal=False)
    model, optimizer, x, y = setup()
    with lens_on(model, optimizer, True, c):
        loop(model, optimizer, x, y, 150)
    text = output(c)
    assert views(text) == [150]
    assert "waiting" not in text and " | " not in text
    assert all(name in text for name in PARAMS)
    assert c._live_stack == []


def test_a_loop_that_raises_stops_the_live_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradlens._live, "REFRESH_SECONDS", 0)
    c = console(terminal=True)
    stdout = sys.stdout
    model, optimizer, x, y = setup()
    lens = lens_on(model, optimizer, None, c)
    with pytest.raises(RuntimeError, match="broke at step 3"), lens:
        loop(model, optimizer, x, y, 10, raise_at=3)
    assert c._live_stack == []
    assert lens._output._live is None
    assert sys.stdout is stdout
    assert hooks_gone()
    text = output(c)
    assert views(text)[-1] == 4
    assert all(name in text for name in PARAMS)
    assert text.endswith("\n")  # the view was closed: later output starts on a new line
    assert lens.record.total_steps == 4
    c.print("after")
    assert output(c).endswith("\nafter\n")
