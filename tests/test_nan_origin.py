"""watch(nan_origin=True): the first module that made a nan or inf, named with its forward line,
with no host sync; the data blamed (not a module) when the nan came in with it."""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from model_zoo import gpt2_step
from torch import nn

import gradlens
from gradlens._lens import Lens
from gradlens.capture.nan_origin import MAX_CALLS

HERE = Path(__file__).name


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # nan for x < 0


class DivideBy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x - x)  # inf (or nan for 0 / 0)


class Sqrt(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)


class LogInPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.log_()  # writes its own input: judged on what it was given


class Stack(nn.Module):
    """Five layers called one by one (layer ``bad`` replaced by ``planted``)."""

    def __init__(self, planted: nn.Module | None = None, bad: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(8, 8) for _ in range(5)]
        if planted is not None:
            layers[bad] = planted
        self.layers = nn.ModuleList(layers)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x)) if isinstance(layer, nn.Linear) else layer(x - 1.0)  # CALL
        return x


CALL_LINE = next(
    i
    for i, line in enumerate(inspect.getsource(sys.modules[__name__]).splitlines(), 1)
    if line.endswith("# CALL")
)


def train(net: nn.Module, x: torch.Tensor, steps: int = 3, **kw: Any) -> tuple[Lens, list[float]]:
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    y = torch.zeros(x.shape[0], 8)
    losses = []
    with gradlens.watch(net, opt, live=False, **kw) as lens:
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.detach().clone())
    return lens, [float(v) for v in losses]


def data(n: int = 16) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(3))


def kinds(lens: Lens) -> list[str]:
    return [d.kind for d in lens.diagnostics]


def origin(lens: Lens) -> Any:
    found = [d for d in lens.diagnostics if d.kind in ("nan-origin", "nan-input")]
    assert len(found) == 1, lens.diagnostics
    return found[0]


@pytest.mark.parametrize("planted", [Log(), DivideBy()], ids=["log", "divide"])
def test_the_module_that_made_the_nan_is_named_with_its_line(planted: nn.Module) -> None:
    lens, _ = train(Stack(planted), data(), nan_origin=True)
    found = origin(lens)
    assert found.kind == "nan-origin"
    assert found.step == 0
    assert found.name == "layers.2"
    assert found.source is not None and found.source.endswith(f"{HERE}:{CALL_LINE}")
    kind = type(planted).__name__
    assert f"made by `layers.2` ({kind}), called at " in found.message
    assert f"{HERE}:{CALL_LINE}: its inputs" in found.message
    assert "its inputs and its own parameters were finite, its output was not" in found.message
    assert kinds(lens)[:2] == ["nan-origin", "nan-grad"]  # the origin first, then the gradient
    first = lens.steps[0]
    assert first.forward_calls == 10  # 5 layers, 3 ReLU calls... and the Stack itself
    bad = [(c.module, c.inputs_finite, c.output_finite) for c in first.forward_nonfinite]
    assert bad[0] == ("layers.2", True, False)
    assert ("layers.3", False, False) in bad  # given the nan: not blamed


def test_without_nan_origin_nothing_is_probed() -> None:
    lens, _ = train(Stack(Log()), data())
    assert "nan-origin" not in kinds(lens) and "nan-grad" in kinds(lens)
    assert all(s.forward_calls == 0 and s.forward_nonfinite == () for s in lens.steps)


def test_a_nan_in_the_data_blames_no_module() -> None:
    x = data()
    x[3, 5] = float("nan")
    lens, _ = train(Stack(), x, nan_origin=True)
    found = origin(lens)
    assert found.kind == "nan-input"
    assert "was given it in its inputs" in found.message
    assert "it came from the data, or from code outside every module" in found.message
    assert found.name == "layers.0"  # the first module that saw it, not blamed for it
    assert "nan-origin" not in kinds(lens)


def test_inf_in_the_data_blames_no_module() -> None:
    x = data()
    x[0, 0] = float("inf")
    lens, _ = train(Stack(), x, nan_origin=True)
    assert origin(lens).kind == "nan-input"


class Shift(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5  # saves nothing for backward: takes an inference tensor


def test_inference_tensors_as_inputs_are_probed() -> None:
    with torch.inference_mode():
        x = data() * 1.0  # made in inference mode: it has no version counter
    lens, _ = train(nn.Sequential(Shift(), Stack(Log())), x, nan_origin=True)
    assert origin(lens).name == "1.layers.2"
    assert lens.record.notes == ()


def test_a_module_called_twice_is_named_with_the_call_that_made_it() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.root = Sqrt()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.root(x.abs() + 1.0)  # finite
            return self.lin(self.root(h - 10.0))  # nan: its 2nd call

    net = Twice()
    lens, _ = train(net, data(), nan_origin=True)
    found = origin(lens)
    assert found.name == "root"
    assert "`root` (Sqrt) (its 2nd call in the step)" in found.message
    line = inspect.getsourcelines(Twice.forward)[1] + 2
    assert found.source is not None and found.source.endswith(f"{HERE}:{line}")


def test_tuple_and_dict_outputs_and_non_tensors() -> None:
    class Many(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> tuple[Any, ...]:
            h = self.lin(x)
            return h, {"scale": torch.log(h.detach()[:1] - 100.0), "tag": "x"}, None, 3

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.many = Many()
            self.head = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, extra, _, _ = self.many(x)
            return self.head(h) + extra["scale"].sum()

    lens, _ = train(Net(), data(), nan_origin=True)
    found = origin(lens)
    assert found.kind == "nan-origin" and found.name == "many"


def test_an_in_place_module_is_judged_on_what_it_was_given() -> None:
    lens, _ = train(Stack(LogInPlace()), data(), nan_origin=True)
    found = origin(lens)
    assert found.kind == "nan-origin" and found.name == "layers.2"


def test_nan_made_between_submodules_names_the_module_whose_code_made_it() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.log(self.a(x) - 10.0))  # the log is the block's own code

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Linear(8, 8)
            self.block = Block()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.first(x))

    lens, _ = train(Net(), data(), nan_origin=True)
    found = origin(lens)
    assert found.kind == "nan-origin" and found.name == "block"
    assert "made in the forward code of `block` (Block)" in found.message, found.message
    assert "its submodule `block.b` (Linear) was then given it" in found.message


def test_a_nan_made_after_the_model_is_said_to_be_outside_it() -> None:
    net = Stack()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = data()
    with gradlens.watch(net, opt, live=False, nan_origin=True) as lens:
        opt.zero_grad()
        torch.log(net(x) - 100.0).mean().backward()  # the nan is made in the loss
        opt.step()
    found = origin(lens)
    assert found.kind == "nan-origin" and found.name is None
    assert "every watched module's inputs and outputs were finite (11 calls probed)" in (
        found.message
    )
    assert "in the loss computation or in backward" in found.message


def test_broken_weights_are_said_to_be_broken_before_the_forward() -> None:
    net = Stack()
    with torch.no_grad():
        net.layers[1].weight[0, 0] = float("nan")
    lens, _ = train(net, data(), nan_origin=True)
    found = origin(lens)
    assert found.kind == "nan-input" and found.name == "layers.1"
    assert "parameters or buffers of `layers.1` (Linear) already held a nan/inf" in found.message


def test_finite_steps_have_no_finding_and_eval_is_not_probed() -> None:
    net = Stack()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = data()
    with gradlens.watch(net, opt, live=False, nan_origin=True) as lens:
        for _ in range(3):
            with torch.no_grad():
                net(x + float("nan"))  # an evaluation: no gradient, not part of a step
            opt.zero_grad()
            nn.functional.mse_loss(net(x), torch.zeros(16, 8)).backward()
            opt.step()
    assert lens.diagnostics == []
    assert [s.forward_calls for s in lens.steps] == [11, 11, 11]
    assert all(s.forward_nonfinite == () for s in lens.steps)


def test_real_gpt2_with_a_nan_planted_in_one_block() -> None:
    model, (ids,), loss_fn = gpt2_step(vocab=200, seq=16, d=32, layers=3, heads=2, ctx=16)
    model.transformer.h[1].mlp.act = Sqrt()  # sqrt of the negative pre-activations: nan
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with gradlens.watch(model, opt, live=False, nan_origin=True) as lens:
        for _ in range(2):
            opt.zero_grad()
            loss_fn(model, ids).backward()
            opt.step()
    found = origin(lens)
    assert found.kind == "nan-origin"
    assert found.name == "transformer.h.1.mlp.act"
    assert found.source is not None and found.source.endswith("model_zoo.py:71")
    assert "`transformer.h.1.mlp.act` (Sqrt)" in found.message
    assert lens.steps[0].forward_calls > 3 * 10


def test_the_program_is_unchanged_and_hooks_are_removed_even_when_it_raises() -> None:
    x = data()
    _, plain = train(Stack(), x, steps=4)
    _, probed = train(Stack(), x, steps=4, nan_origin=True)
    assert probed == plain  # the same losses, bit for bit
    net = Stack()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with pytest.raises(KeyError), gradlens.watch(net, opt, live=False, nan_origin=True):
        net(x).sum().backward()
        assert any(m._forward_hooks for m in net.modules())
        raise KeyError("boom")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert torch._C._len_torch_function_stack() == 0


def test_probes_keep_no_activation_alive() -> None:
    net = Stack()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = data()
    with gradlens.watch(net, opt, live=False, nan_origin=True):
        out = net(x)
        ref = __import__("weakref").ref(out)
        del out
        gc.collect()
        assert ref() is None  # the module output is not held by the probe cache


def test_a_forward_loop_that_never_steps_stops_probing_at_the_cap() -> None:
    net = nn.Linear(8, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = data(2)
    with gradlens.watch(net, opt, live=False, nan_origin=True) as lens:
        for _ in range(MAX_CALLS + 5):
            net(x)
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    step = lens.steps[0]
    assert step.forward_calls == MAX_CALLS and not step.forward_complete


SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__", "__index__")


def test_no_host_copy_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: Any, _o: Any = original, _n: str = name) -> Any:
            calls.append(_n)
            return _o(self, *args)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    net = Stack(Log())
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = data(), torch.zeros(16, 8)
    with gradlens.watch(net, opt, live=False, nan_origin=True, detail_every=2) as lens:
        for _ in range(20):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
        assert calls == []  # nothing copied while training, nan or not
    assert calls == ["cpu", "tolist"]  # one batch at the end
    assert "nan-origin" in kinds(lens)


def test_gradlens_run_names_the_origin(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """\
            import torch
            from torch import nn

            class Log(nn.Module):
                def forward(self, x):
                    return torch.log(x)

            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), Log(), nn.Linear(8, 1))
            opt = torch.optim.SGD(net.parameters(), lr=0.1)
            x, y = torch.randn(16, 4), torch.randn(16, 1)
            for _ in range(3):
                opt.zero_grad()
                nn.functional.mse_loss(net(x), y).backward()
                opt.step()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "gradlens", "run", str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "made by `net.3` (Log), called at train.py:14" in text or (
        "made by `3` (Log), called at train.py:14" in text
    ), text
