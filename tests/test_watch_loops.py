"""gradlens.watch on real training-loop shapes, each run plainly and under watch.

Every loop here is run twice from the same seeds: without gradlens and inside ``watch()``. The
final parameters must be bit-identical (``torch.equal``): a recorder never changes the program
it watches. Then the findings must be exactly the right ones: none for a correct loop; the one
mistake, at its step and line, for a loop with one. The shapes follow PyTorch's own examples
(pytorch/examples dcgan, mnist) and the seeds' hand-written logistic regression.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from integ_support import GradLog, assert_steps_match
from torch import nn

import gradlens
from gradlens import GradlensError

HERE = Path(__file__).name

Watching = Callable[[dict[str, Any]], contextlib.AbstractContextManager[Any]]


def plain(_: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


class Run:
    """A loop run under ``watch``: the lens (set when the block is entered)."""

    lens: gradlens.Lens


def watched(
    make: Callable[[dict[str, Any]], gradlens.Lens] = lambda _: gradlens.watch(live=False),
) -> tuple[Run, Watching]:
    run = Run()

    def enter(objects: dict[str, Any]) -> contextlib.AbstractContextManager[Any]:
        run.lens = make(objects)
        return run.lens

    return run, enter


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def state(*modules: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


def line_of(fn: Callable[..., Any], needle: str) -> str:
    lines, start = inspect.getsourcelines(fn)
    hits = [start + i for i, line in enumerate(lines) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return f"tests/{HERE}:{hits[0]}"


def kinds(lens: gradlens.Lens) -> list[tuple[str, str | None, int | None]]:
    return [(d.kind, d.name, d.step) for d in lens.diagnostics]


# ---- a DCGAN step (pytorch/examples dcgan, shrunk to 8x8 images) -----------------------------

NZ, NGF, NDF = 4, 4, 4


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 2, 4, 1, 0, bias=False),
            nn.BatchNorm2d(NGF * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, 1, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Discriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(1, NDF, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(NDF * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, 1, 2, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def dcgan(watching: Watching, *, set_to_none: bool = True, iters: int = 3) -> dict[str, Any]:
    torch.manual_seed(0)
    netG, netD = Generator(), Discriminator()
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1.0, 0.0
    data = torch.rand(iters, 4, 1, 8, 8) * 2 - 1
    losses: dict[str, list[float]] = {"D": [], "G": []}
    with watching({"netD": netD, "netG": netG, "optD": optimizerD, "optG": optimizerG}):
        for i in range(iters):
            netD.zero_grad(set_to_none=set_to_none)
            real = data[i]
            label = torch.full((real.size(0),), real_label)
            output = netD(real)
            errD_real = criterion(output, label)
            errD_real.backward()
            noise = torch.randn(real.size(0), NZ, 1, 1)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            optimizerD.step()
            netG.zero_grad(set_to_none=set_to_none)
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()  # also adds to netD's .grad; netD.zero_grad() clears it next time
            optimizerG.step()
            losses["D"].append((errD_real + errD_fake).item())
            losses["G"].append(errG.item())
    return {"state": state(netG, netD), "losses": losses}


@pytest.mark.parametrize("set_to_none", [True, False])
def test_dcgan_under_watch_everything(set_to_none: bool) -> None:
    base = dcgan(plain, set_to_none=set_to_none)
    run, enter = watched()
    out = dcgan(enter, set_to_none=set_to_none)
    assert same(base["state"], out["state"])
    lens = run.lens
    assert lens.diagnostics == []
    d_steps = [s for s in lens.steps if s.optimizer == "Adam"]
    g_steps = [s for s in lens.steps if s.optimizer == "Adam#2"]
    assert [s.step for s in d_steps] == [0, 1, 2] and [s.step for s in g_steps] == [0, 1, 2]
    # Each optimizer has its own loss: D's is errD_real + errD_fake, G's is errG.
    assert [s.loss for s in d_steps] == pytest.approx(base["losses"]["D"], rel=1e-6)
    assert [s.loss for s in g_steps] == pytest.approx(base["losses"]["G"], rel=1e-6)
    assert [s.backward_calls for s in d_steps] == [2, 2, 2]
    assert [s.backward_calls for s in g_steps] == [1, 1, 1]
    assert set(d_steps[0].grads) == {
        "netD.main.0.weight",
        "netD.main.2.weight",
        "netD.main.3.weight",
        "netD.main.3.bias",
        "netD.main.5.weight",
    }
    assert all(not s.missing for s in lens.steps)
    assert all(name.startswith("netG.") for s in g_steps for name in s.grads)
    assert lens.record.total_steps == 6


def test_dcgan_watching_only_the_discriminator() -> None:
    base = dcgan(plain)
    run, enter = watched(lambda o: gradlens.watch(o["netD"], o["optD"], live=False))
    out = dcgan(enter)
    assert same(base["state"], out["state"])
    assert run.lens.diagnostics == []  # errG.backward() adds to D's .grad: not a finding
    assert [s.step for s in run.lens.steps] == [0, 1, 2]
    assert [s.loss for s in run.lens.steps] == pytest.approx(base["losses"]["D"], rel=1e-6)


def dcgan_without_zeroing_d(watching: Watching) -> None:
    torch.manual_seed(0)
    netG, netD = Generator(), Discriminator()
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4)
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4)
    with watching({}):
        for _ in range(3):
            real = torch.rand(4, 1, 8, 8)
            errD = criterion(netD(real), torch.ones(4))
            errD.backward()  # netD's .grad is never reset: stale from the step before
            optimizerD.step()
            netG.zero_grad()
            errG = criterion(netD(netG(torch.randn(4, NZ, 1, 1))), torch.ones(4))
            errG.backward()
            optimizerG.step()


def test_a_gan_that_never_zeroes_d_is_caught_at_ds_step_1() -> None:
    run, enter = watched()
    dcgan_without_zeroing_d(enter)
    (found,) = run.lens.diagnostics
    assert (found.kind, found.step) == ("grad-accumulation", 1)
    assert found.name == "netD.main.0.weight"
    assert "Adam's step 1" in found.message
    # The first backward that added on top of the .grad D's step 0 used: errG's.
    assert found.source == line_of(dcgan_without_zeroing_d, "errG.backward()")


# ---- two models of one class -----------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.out = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.fc(x)))


def two_models(watching: Watching) -> list[torch.Tensor]:
    torch.manual_seed(0)
    student, teacher = MLP(), MLP()
    opt_s = torch.optim.SGD(student.parameters(), lr=0.1)
    opt_t = torch.optim.SGD(teacher.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    with watching({}):
        for _ in range(2):
            for net, opt, scale in ((student, opt_s, 1.0), (teacher, opt_t, 10.0)):
                opt.zero_grad()
                (net(x) * scale).pow(2).mean().backward()
                opt.step()
    return state(student, teacher)


def test_two_models_of_one_class_keep_distinct_names_and_rows() -> None:
    base = two_models(plain)
    run, enter = watched()
    assert same(base, two_models(enter))
    lens = run.lens
    names = [p.name for p in lens.record.params]
    assert names == [
        "student.fc.weight",
        "student.fc.bias",
        "student.out.weight",
        "student.out.bias",
        "teacher.fc.weight",
        "teacher.fc.bias",
        "teacher.out.weight",
        "teacher.out.bias",
    ]
    s0 = next(s for s in lens.steps if s.optimizer == "SGD")
    t0 = next(s for s in lens.steps if s.optimizer == "SGD#2")
    assert set(s0.grads) == set(names[:4]) and set(t0.grads) == set(names[4:])
    assert lens.diagnostics == []
    # Same names on another run of the same program.
    run2, enter2 = watched()
    two_models(enter2)
    assert [p.name for p in run2.lens.record.params] == names


# ---- add_param_group, frozen mid-run, two optimizers on the same parameters -------------------


def add_group(watching: Watching) -> list[torch.Tensor]:
    torch.manual_seed(0)
    body, head = nn.Linear(3, 3), nn.Linear(3, 1)
    net = nn.Sequential(body, nn.ReLU(), head)
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    x = torch.randn(8, 3)
    with watching({"net": net, "opt": opt}):
        for step in range(4):
            if step == 2:  # fine-tuning: unfreeze the body
                opt.add_param_group({"params": body.parameters(), "lr": 0.001})
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    return state(net)


@pytest.mark.parametrize("how", ["everything", "model"])
def test_add_param_group_mid_run_is_watched_from_then_on(how: str) -> None:
    base = add_group(plain)
    run, enter = watched(
        (lambda o: gradlens.watch(o["net"], o["opt"], live=False))
        if how == "model"
        else (lambda _: gradlens.watch(live=False))
    )
    assert same(base, add_group(enter))
    lens = run.lens
    assert lens.diagnostics == []
    prefix = "" if how == "model" else "net."
    body = {f"{prefix}0.weight", f"{prefix}0.bias"}
    head = {f"{prefix}2.weight", f"{prefix}2.bias"}
    assert [set(s.grads) for s in lens.steps] == [head, head, head | body, head | body]


def freeze_mid_run(watching: Watching) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3)
    with watching({"net": net, "opt": opt}):
        for step in range(4):
            if step == 2:
                net[0].requires_grad_(False)
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    return state(net)


def test_parameters_frozen_mid_run_are_frozen_not_no_grad() -> None:
    base = freeze_mid_run(plain)
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    assert same(base, freeze_mid_run(enter))
    found = run.lens.diagnostics
    assert [(d.kind, d.name, d.step) for d in found] == [
        ("frozen", "0.weight", 2),
        ("frozen", "0.bias", 2),
    ]
    assert "from step 2 on" in found[0].message
    assert all(not s.missing for s in run.lens.steps)


def shared_params(watching: Watching) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt_a = torch.optim.SGD(net.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(8, 3)
    with watching({}):
        for _ in range(3):
            opt_a.zero_grad()
            net(x).pow(2).mean().backward()
            opt_a.step()
            opt_b.step()  # a second optimizer on the same parameters and gradient
    return state(net)


def test_two_optimizers_on_the_same_parameters() -> None:
    base = shared_params(plain)
    run, enter = watched()
    assert same(base, shared_params(enter))
    lens = run.lens
    assert lens.diagnostics == []
    assert [(s.optimizer, s.step) for s in lens.steps] == [
        ("SGD", 0),
        ("SGD#2", 0),
        ("SGD", 1),
        ("SGD#2", 1),
        ("SGD", 2),
        ("SGD#2", 2),
    ]
    assert all(set(s.grads) == {"net.weight", "net.bias"} for s in lens.steps)


# ---- gradient accumulation, zeroing styles, a missed zero_grad --------------------------------


def accumulate(watching: Watching, zero: str = "optimizer") -> dict[str, Any]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    micro: list[list[float]] = []
    with watching({"net": net, "opt": opt}):
        for _ in range(3):
            if zero == "optimizer":
                opt.zero_grad()
            elif zero == "model":
                net.zero_grad()
            elif zero == "keep":
                opt.zero_grad(set_to_none=False)
            micro.append([])
            for k in range(4):  # four micro-batches, one optimizer step
                loss = nn.functional.mse_loss(net(x[4 * k : 4 * k + 4]), y[4 * k : 4 * k + 4]) / 4
                micro[-1].append(loss.item())
                loss.backward()
            opt.step()
    return {"state": state(net), "micro": micro}


@pytest.mark.parametrize("zero", ["optimizer", "model", "keep"])
def test_gradient_accumulation_over_micro_batches(zero: str) -> None:
    base = accumulate(plain, zero)
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    out = accumulate(enter, zero)
    assert same(base["state"], out["state"])
    lens = run.lens
    assert lens.diagnostics == []
    assert [s.backward_calls for s in lens.steps] == [4, 4, 4]
    assert [s.loss for s in lens.steps] == pytest.approx([sum(m) for m in out["micro"]], rel=1e-6)


def test_accumulation_without_any_zeroing_is_caught_at_step_1() -> None:
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    accumulate(enter, "never")
    (found,) = run.lens.diagnostics
    assert (found.kind, found.step, found.name) == ("grad-accumulation", 1, "0.weight")
    assert found.source == line_of(accumulate, "loss.backward()")


def amp_clip(watching: Watching, *, zero: bool = True) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    with watching({"net": net, "opt": opt}):
        for _ in range(3):
            if zero:
                opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.mse_loss(net(x).float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
    return state(net)


def test_amp_unscale_and_clipping_change_nothing_and_find_nothing() -> None:
    base = amp_clip(plain)
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    assert same(base, amp_clip(enter))
    assert run.lens.diagnostics == []
    assert len(run.lens.steps) == 3


def test_a_missed_zero_grad_is_still_caught_through_unscale_and_clipping() -> None:
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    amp_clip(enter, zero=False)
    assert kinds(run.lens) == [("grad-accumulation", "0.weight", 1)]


# ---- hand-written updates (the seeds' logistic regression without an optimizer) --------------


def by_hand(watching: Watching, style: str, *, zero: bool = True) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(20, 2, generator=g) + 1.5, torch.randn(20, 2, generator=g) - 1.5])
    y = torch.cat([torch.zeros(20, 1), torch.ones(20, 1)])
    w = torch.zeros(2, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lr = 0.1
    grads: list[list[float]] = []
    with watching({}):
        for _ in range(4):
            loss = nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
            loss.backward()
            grads.append([w.grad.norm().item(), b.grad.norm().item()])
            if style == "no_grad":
                with torch.no_grad():
                    w -= lr * w.grad
                    b -= lr * b.grad
            elif style == "data":
                w.data.add_(w.grad, alpha=-lr)
                b.data.add_(b.grad, alpha=-lr)
            else:
                w.data -= lr * w.grad
                b.data -= lr * b.grad
            if zero and style == "no_grad":
                w.grad.zero_()
                b.grad.zero_()
            elif zero:
                w.grad = None
                b.grad = None
    return {"state": [w.detach().clone(), b.detach().clone()], "grads": grads}


@pytest.mark.parametrize("style", ["no_grad", "data", "data_isub"])
def test_hand_written_sgd_is_watched_step_by_step(style: str) -> None:
    base = by_hand(plain, style)
    run, enter = watched()
    out = by_hand(enter, style)
    assert same(base["state"], out["state"])
    lens = run.lens
    assert lens.diagnostics == []
    assert [(s.optimizer, s.step) for s in lens.steps] == [("manual", i) for i in range(4)]
    assert [p.name for p in lens.record.params] == ["w", "b"]
    norms = [[s.grads["w"].grad_norm, s.grads["b"].grad_norm] for s in lens.steps]
    assert norms == [pytest.approx(n, rel=1e-5) for n in base["grads"]]


@pytest.mark.parametrize("style", ["no_grad", "data"])
def test_hand_written_sgd_without_zeroing_is_caught_at_step_1(style: str) -> None:
    run, enter = watched()
    by_hand(enter, style, zero=False)
    (found,) = run.lens.diagnostics
    assert (found.kind, found.step, found.name) == ("grad-accumulation", 1, "w")
    assert "hand-written update" in found.message
    assert found.source == line_of(by_hand, "loss.backward()")


def test_a_model_updated_by_hand_under_watch_model() -> None:
    def loop(watching: Watching) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = nn.Linear(3, 1)
        x = torch.randn(8, 3)
        with watching({"net": net}):
            for _ in range(3):
                net(x).pow(2).mean().backward()
                with torch.no_grad():
                    for p in net.parameters():
                        p.add_(p.grad, alpha=-0.1)
                net.zero_grad()
        return state(net)

    base = loop(plain)
    run, enter = watched(lambda o: gradlens.watch(o["net"], live=False))
    assert same(base, loop(enter))
    assert run.lens.diagnostics == []
    assert [set(s.grads) for s in run.lens.steps] == [{"weight", "bias"}] * 3


def test_backward_alone_is_nothing_to_watch(tmp_path: Path) -> None:
    w = torch.tensor([1.0], requires_grad=True)
    with gradlens.watch(live=False) as lens:
        for _ in range(3):
            (w * 2).sum().backward()
    assert lens.steps == [] and lens.record.total_steps == 0
    assert lens.diagnostics == []
    with pytest.raises(GradlensError, match="nothing to watch: no optimizer stepped"):
        lens.plot(tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


# ---- LBFGS and its closure --------------------------------------------------------------------


def lbfgs(watching: Watching) -> dict[str, Any]:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    x = torch.randn(16, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    opt = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=5)
    last: list[float] = []
    grads: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        last.append(loss.item())
        return loss

    finals: list[float] = []
    with watching({"net": net, "opt": opt}):
        for _ in range(3):
            opt.step(closure)
            finals.append(last[-1])
            grads.append(net.weight.grad.norm().item())
    return {"state": state(net), "finals": finals, "grads": grads, "calls": len(last)}


@pytest.mark.parametrize("how", ["everything", "model"])
def test_lbfgs_is_measured_after_its_closure(how: str) -> None:
    base = lbfgs(plain)
    run, enter = watched(
        (lambda o: gradlens.watch(o["net"], o["opt"], live=False))
        if how == "model"
        else (lambda _: gradlens.watch(live=False))
    )
    out = lbfgs(enter)
    assert same(base["state"], out["state"]) and out["calls"] == base["calls"]
    lens = run.lens
    assert lens.diagnostics == []  # no false no-grad: the closure's gradients are there
    weight = "weight" if how == "model" else "net.weight"
    assert [s.loss for s in lens.steps] == pytest.approx(base["finals"], rel=1e-6)
    assert [s.grads[weight].grad_norm for s in lens.steps] == pytest.approx(base["grads"], rel=1e-5)
    assert [s.optimizer for s in lens.steps] == ["LBFGS"] * 3


# ---- torch.compile ---------------------------------------------------------------------------


def test_watch_adds_no_graph_break_to_a_compiled_model() -> None:
    dynamo = pytest.importorskip("torch._dynamo", reason="torch.compile is not available")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(16, 4)
    dynamo.reset()
    alone = dynamo.explain(net)(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for lens in (gradlens.watch(net, opt, live=False), gradlens.watch(live=False)):
        dynamo.reset()
        with lens:
            under = dynamo.explain(net)(x)
        assert (under.graph_count, under.graph_break_count) == (
            alone.graph_count,
            alone.graph_break_count,
        )
        assert under.break_reasons == []


def compiled_loop(watching: Watching) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    fast = torch.compile(net, backend="eager")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    with watching({}):
        for _ in range(3):
            opt.zero_grad()
            fast(x).pow(2).mean().backward()
            opt.step()
    return state(net)


def test_a_compiled_model_trains_the_same_and_is_named_by_its_variable() -> None:
    pytest.importorskip("torch._dynamo", reason="torch.compile is not available")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    base = compiled_loop(plain)
    torch._dynamo.reset()
    counters.clear()
    run, enter = watched()
    assert same(base, compiled_loop(enter))
    assert dict(counters["graph_break"]) == {}
    names = {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    assert set(run.lens.steps[0].grads) == names
    assert run.lens.diagnostics == []


# ---- leaving the block early, and gradlens's own errors -----------------------------------------


@contextlib.contextmanager
def no_hooks_left() -> Iterator[None]:
    from torch.optim import optimizer as torch_optimizer

    pre = dict(torch_optimizer._global_optimizer_pre_hooks)
    post = dict(torch_optimizer._global_optimizer_post_hooks)
    yield
    assert dict(torch_optimizer._global_optimizer_pre_hooks) == pre
    assert dict(torch_optimizer._global_optimizer_post_hooks) == post
    assert not torch.overrides._is_torch_function_mode_enabled()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_leaving_by_an_exception_keeps_what_was_recorded(error: type[BaseException]) -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    with no_hooks_left(), pytest.raises(error), gradlens.watch(net, opt, live=False) as lens:
        for step in range(5):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            if step == 3:
                raise error("stop")
            opt.step()
    assert [s.step for s in lens.steps] == [0, 1, 2]
    assert lens.record.total_steps == 3
    assert "watch report: 3 of 3 steps kept" in lens_text(lens)
    assert not net.weight._backward_hooks


def lens_text(lens: gradlens.Lens) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    lens.report(console)
    return console.export_text()


def test_an_error_inside_gradlens_is_a_note_and_the_loop_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradlens.capture import gradstats

    base = accumulate(plain)

    def broken(grads: Any) -> torch.Tensor:
        raise RuntimeError("statistics failed")

    monkeypatch.setattr(gradstats, "light_stats", broken)
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    with no_hooks_left():
        out = accumulate(enter)
    assert same(base["state"], out["state"])
    assert run.lens.record.notes == (
        "gradlens stopped watching optimizer SGD: RuntimeError: statistics failed",
    )
    assert "gradlens stopped watching optimizer SGD" in lens_text(run.lens)


def test_plot_to_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    run, enter = watched(lambda o: gradlens.watch(o["net"], o["opt"], live=False))
    accumulate(enter)
    with pytest.raises(GradlensError, match="does not exist"):
        run.lens.plot(tmp_path / "missing" / "plot.png")


# ---- records: save and load ------------------------------------------------------------------


def test_a_gan_record_saves_and_loads_with_its_optimizers(tmp_path: Path) -> None:
    from gradlens.records.serialize import from_json_dict, to_json_dict

    run, enter = watched()
    dcgan(enter, iters=2)
    record = run.lens.record
    path = tmp_path / "gan.json"
    gradlens.save(run.lens, path)
    loaded = gradlens.load(path)
    assert isinstance(loaded, gradlens.Lens)
    assert loaded.record == record
    assert [s.optimizer for s in loaded.steps] == ["Adam", "Adam#2", "Adam", "Adam#2"]
    # A file written before steps named their optimizer (and before notes) still loads.
    old = to_json_dict(record)
    del old["data"]["notes"]
    for step in old["data"]["steps"]:
        del step["optimizer"]
    for fact in old["data"]["facts"]:
        fact.pop("optimizer", None)
    back = from_json_dict(old)
    assert [s.optimizer for s in back.steps] == [""] * 4
    assert back.notes == ()


# ---- gradlens run script.py on a hand-written loop ---------------------------------------------

HAND_WRITTEN = """\
import torch

torch.manual_seed(0)
x = torch.cat([torch.randn(20, 2) + 1.5, torch.randn(20, 2) - 1.5])
y = torch.cat([torch.zeros(20, 1), torch.ones(20, 1)])
w = torch.zeros(2, 1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
for epoch in range(5):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
    loss.backward()
    w.data -= 0.1 * w.grad
    b.data -= 0.1 * b.grad
    ZERO
"""


@pytest.mark.parametrize("zero", [True, False])
def test_gradlens_run_on_a_hand_written_loop(
    zero: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradlens.cli import main

    monkeypatch.chdir(tmp_path)
    text = HAND_WRITTEN.replace("ZERO", "w.grad.zero_(); b.grad.zero_()" if zero else "pass")
    (tmp_path / "train.py").write_text(text, encoding="utf-8")
    code = main(["run", "train.py", "--json", "out.json", "--plot", "out.png"])
    out = capsys.readouterr().out
    assert code == 0, out
    record = gradlens.load(tmp_path / "out.json").record
    assert [(s.optimizer, s.step) for s in record.steps] == [("manual", i) for i in range(5)]
    assert [p.name for p in record.params] == ["w", "b"]
    assert all(set(s.grads) == {"w", "b"} for s in record.steps)
    assert (tmp_path / "out.png").stat().st_size > 0
    found = [(d.kind, d.name, d.step, d.source) for d in record.diagnostics]
    if zero:
        assert found == []
        assert "no problems found" in out
    else:
        backward_line = text.splitlines().index("    loss.backward()") + 1
        assert found == [("grad-accumulation", "w", 1, f"train.py:{backward_line}")]
        assert "no problems found" not in out


def test_gradlens_run_with_nothing_to_watch_writes_no_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gradlens.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(
        "import torch\nw = torch.ones(2, requires_grad=True)\n(w * 2).sum().backward()\n",
        encoding="utf-8",
    )
    main(["run", "train.py", "--plot", "out.png"])
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing to watch: no optimizer stepped and no parameter was updated in place" in out
    assert "no problems found" not in out
    assert not (tmp_path / "out.png").exists()


# ---- sparse gradients ----------------------------------------------------------------------------


def sparse_embedding(watching: Watching, zero: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    emb, lin = nn.Embedding(10, 3, sparse=True), nn.Linear(3, 1)
    opt = torch.optim.SGD([*emb.parameters(), *lin.parameters()], lr=0.1)
    idx = torch.tensor([1, 2, 3, 2])
    with watching({}):
        for _ in range(3):
            if zero != "never":
                opt.zero_grad(set_to_none=zero == "none")
            lin(emb(idx)).pow(2).sum().backward()
            opt.step()
    return state(emb, lin)


@pytest.mark.parametrize("zero", ["none", "zeros"])
def test_sparse_embedding_gradients_are_watched(zero: str) -> None:
    base = sparse_embedding(plain, zero)
    run, enter = watched()
    assert same(base, sparse_embedding(enter, zero))
    lens = run.lens
    assert lens.diagnostics == [] and lens.record.notes == ()
    assert all(set(s.grads) == {"emb.weight", "lin.weight", "lin.bias"} for s in lens.steps)


def test_sparse_embedding_without_zeroing_is_caught() -> None:
    run, enter = watched()
    sparse_embedding(enter, "never")
    assert [(d.kind, d.step) for d in run.lens.diagnostics] == [("grad-accumulation", 1)]


def test_watch_model_alone_finds_the_optimizer_that_steps_it() -> None:
    def loop(watching: Watching) -> list[torch.Tensor]:
        torch.manual_seed(0)
        net, other = nn.Linear(3, 1), nn.Linear(3, 1)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        opt_other = torch.optim.SGD(other.parameters(), lr=0.1)
        x = torch.randn(8, 3)
        with watching({"net": net}):
            for _ in range(3):
                opt.zero_grad()
                opt_other.zero_grad()
                (net(x) + other(x)).pow(2).mean().backward()
                opt.step()
                opt_other.step()
        return state(net, other)

    base = loop(plain)
    run, enter = watched(lambda o: gradlens.watch(o["net"], live=False))
    assert same(base, loop(enter))
    lens = run.lens
    assert lens.diagnostics == []
    assert [(s.optimizer, s.step) for s in lens.steps] == [("Adam", 0), ("Adam", 1), ("Adam", 2)]
    assert [p.name for p in lens.record.params] == ["weight", "bias"]


# ---- pytorch/examples word_language_model: clipping, then an update by hand -------------------


class RNNModel(nn.Module):
    def __init__(self, ntoken: int = 12, ninp: int = 6, nhid: int = 6) -> None:
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, 1)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(
        self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        output, hidden = self.rnn(self.encoder(x), hidden)
        return self.decoder(output).view(-1, 12), hidden


def word_language_model(watching: Watching) -> dict[str, Any]:
    torch.manual_seed(0)
    model = RNNModel()
    criterion = nn.NLLLoss()
    data = torch.randint(0, 12, (4 * 5 + 1, 2))  # (tokens, batch)
    lr, clip = 5.0, 0.25
    hidden = (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))
    losses = []
    with watching({"model": model}):
        for i in range(0, 4 * 5, 5):
            source, targets = data[i : i + 5], data[i + 1 : i + 6].reshape(-1)
            hidden = tuple(h.detach() for h in hidden)  # repackage_hidden
            model.zero_grad()
            output, hidden = model(source, hidden)
            loss = criterion(nn.functional.log_softmax(output, dim=-1), targets)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
    return {"state": state(model), "losses": losses}


@pytest.mark.parametrize("how", ["everything", "model"])
def test_word_language_model_updates_by_hand(how: str) -> None:
    base = word_language_model(plain)
    run, enter = watched(
        (lambda o: gradlens.watch(o["model"], live=False))
        if how == "model"
        else (lambda _: gradlens.watch(live=False))
    )
    out = word_language_model(enter)
    assert same(base["state"], out["state"])
    lens = run.lens
    assert lens.diagnostics == []
    assert [(s.optimizer, s.step) for s in lens.steps] == [("manual", i) for i in range(4)]
    assert [s.loss for s in lens.steps] == pytest.approx(base["losses"], rel=1e-6)
    prefix = "" if how == "model" else "model."
    assert set(lens.steps[0].grads) == {
        f"{prefix}{name}" for name, _ in RNNModel().named_parameters()
    }


# ---- gradients set by hand (autograd.grad, then p.grad = g), two steps on one gradient ------


def grads_by_hand(watching: Watching, *, reset: bool = True) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(8, 3)
    with watching({}):
        for _ in range(3):
            if reset:
                opt.zero_grad()
            loss = net(x).pow(2).mean()
            grads = torch.autograd.grad(loss, list(net.parameters()))
            for p, g in zip(net.parameters(), grads, strict=True):
                p.grad = g.clone() if reset or p.grad is None else p.grad + g
            opt.step()
            opt.step()  # a second step on the same gradient: no new one, but not "no gradient"
    return state(net)


@pytest.mark.parametrize("reset", [True, False])
def test_gradients_set_by_hand_are_new_gradients(reset: bool) -> None:
    base = grads_by_hand(plain, reset=reset)
    run, enter = watched()
    assert same(base, grads_by_hand(enter, reset=reset))
    lens = run.lens
    assert lens.diagnostics == []
    steps = [(s.step, sorted(s.grads)) for s in lens.steps if s.grads]
    assert steps == [(i, ["net.bias", "net.weight"]) for i in (0, 2, 4)]


def test_an_error_in_the_loss_input_check_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradlens.capture import watch as watch_module

    def broken(x: Any) -> str:
        raise ValueError("no producer")

    base = dcgan(plain, iters=2)
    monkeypatch.setattr(watch_module, "producer", broken)
    run, enter = watched()
    with no_hooks_left():
        out = dcgan(enter, iters=2)
    assert same(base["state"], out["state"])
    note = "gradlens stopped watching loss inputs: ValueError: no producer"
    assert run.lens.record.notes == (note,)
    assert run.lens.diagnostics == [] and len(run.lens.steps) == 4


def test_a_finished_hand_written_watch_keeps_no_tensor_alive() -> None:
    import gc
    import weakref

    def loop() -> tuple[gradlens.Lens, list[weakref.ref[torch.Tensor]]]:
        w = torch.zeros(2, 1, requires_grad=True)
        x = torch.randn(8, 2)
        with gradlens.watch(live=False) as lens:
            for _ in range(3):
                (x @ w).pow(2).mean().backward()
                w.data.add_(w.grad, alpha=-0.1)  # no zeroing: a finding, with its line
        return lens, [weakref.ref(w), weakref.ref(x)]

    lens, refs = loop()
    gc.collect()
    assert all(r() is None for r in refs)
    assert [d.kind for d in lens.diagnostics] == ["grad-accumulation"]


def test_a_loss_input_finding_counts_iterations_not_both_optimizers_steps() -> None:
    torch.manual_seed(0)
    netG, netD = nn.Linear(2, 2), nn.Linear(2, 1)
    optG = torch.optim.SGD(netG.parameters(), lr=0.1)
    optD = torch.optim.SGD(netD.parameters(), lr=0.1)
    criterion = nn.BCEWithLogitsLoss()
    with gradlens.watch(live=False) as lens:
        for i in range(3):
            out = netD(netG(torch.randn(4, 2)).detach())
            optD.zero_grad()
            criterion(torch.sigmoid(out) if i == 2 else out, torch.ones(4, 1)).backward()
            optD.step()
            optG.zero_grad()
            criterion(netD(netG(torch.randn(4, 2))), torch.zeros(4, 1)).backward()
            optG.step()
    assert [(d.kind, d.step) for d in lens.diagnostics] == [("loss-input", 2)]


# ---- pytorch/examples mnist: Adadelta, StepLR, log_softmax + nll_loss ---------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.dropout = nn.Dropout(0.25)
        self.fc1 = nn.Linear(4 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(nn.functional.relu(self.conv1(x)), 2)
        x = torch.flatten(self.dropout(x), 1)
        return nn.functional.log_softmax(self.fc1(x), dim=1)


def mnist(watching: Watching) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    batches = [(torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))) for _ in range(2)]
    lrs = []
    with watching({"model": model, "opt": optimizer}):
        for _epoch in range(2):
            model.train()
            for data, target in batches:
                optimizer.zero_grad()
                loss = nn.functional.nll_loss(model(data), target)
                loss.backward()
                lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
            scheduler.step()
    return {"state": state(model), "lrs": lrs}


def test_mnist_example_loop() -> None:
    base = mnist(plain)
    run, enter = watched(lambda o: gradlens.watch(o["model"], o["opt"], live=False))
    out = mnist(enter)
    assert same(base["state"], out["state"])
    lens = run.lens
    assert lens.diagnostics == []
    assert [s.lr for s in lens.steps] == pytest.approx(out["lrs"])
    assert [s.step for s in lens.steps] == [0, 1, 2, 3]


def test_weight_decay_by_hand_before_backward_is_not_a_step() -> None:
    def loop(watching: Watching) -> list[torch.Tensor]:
        torch.manual_seed(0)
        w = torch.randn(3, 1, requires_grad=True)
        x = torch.randn(8, 3)
        with watching({}):
            for _ in range(3):
                w.data.mul_(0.99)  # decay first: w.grad still holds the last, used, gradient
                (x @ w).pow(2).mean().backward()
                w.data.add_(w.grad, alpha=-0.1)
                w.grad.zero_()
        return [w.detach().clone()]

    base = loop(plain)
    run, enter = watched()
    assert same(base, loop(enter))
    assert run.lens.diagnostics == []
    assert [s.step for s in run.lens.steps] == [0, 1, 2] and run.lens.record.total_steps == 3


# ---- detail steps one after another: the weight copies' memory reused ---------------------
def test_detail_every_step_with_two_optimizers_of_one_shape_measures_each_update() -> None:
    # Each detail step copies the weights before the step into memory kept from the last one;
    # two optimizers over models of the same shapes have their copies in flight together.
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1)) for _ in range(2)]
    opts = [
        torch.optim.SGD(nets[0].parameters(), lr=0.3, momentum=0.9),
        torch.optim.Adam(nets[1].parameters(), lr=0.05),
    ]
    logs = [GradLog(), GradLog()]
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    with (
        gradlens.watch(nets[0], live=False, detail_every=1) as lens0,
        gradlens.watch(nets[1], live=False, detail_every=1) as lens1,
    ):
        for _ in range(5):
            for net, opt in zip(nets, opts, strict=True):
                opt.zero_grad()
                nn.functional.mse_loss(net(x), y).backward()
            for net, log in zip(nets, logs, strict=True):
                log.take(net)
            for opt in opts:
                opt.step()
            for net, log in zip(nets, logs, strict=True):
                log.stepped(net)
    for lens, log in ((lens0, logs[0]), (lens1, logs[1])):
        assert all(s.detail for s in lens.steps)
        assert all(s.update_ratio is not None for s in lens.steps for s in s.grads.values())
        assert_steps_match(lens, log)


def test_a_detail_step_under_inference_mode_leaves_later_steps_measured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The work buffer and the weight copies made during a step under inference mode are kept
    # for later detail steps: made as inference tensors, every later step would fail to write
    # them ("Inplace update to inference tensor outside InferenceMode").
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    log = GradLog()
    with gradlens.watch(net, live=False, detail_every=1) as lens:
        for i in range(3):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            log.take(net)
            with torch.inference_mode() if i == 0 else contextlib.nullcontext():
                opt.step()
            log.stepped(net)
    lens.report()
    assert "stopped watching" not in capsys.readouterr().out
    assert [s.detail for s in lens.steps] == [True, True, True]
    assert_steps_match(lens, log)
