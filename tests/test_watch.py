"""gradlens.watch on real training loops: statistics, findings, hooks, memory and host syncs."""

from __future__ import annotations

import gc
import inspect
import math
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gradlens
from gradlens import GradlensError
from gradlens._lens import FLUSH_EVERY
from gradlens.analysis.training import EXPLODING_NORM, PATIENCE, VANISHING_NORM

HERE = Path(__file__).name


def line_of(fn: Callable[..., Any], needle: str) -> str:
    """Returns "tests/test_watch.py:N" for the line of ``fn`` that contains ``needle``."""
    lines, start = inspect.getsourcelines(fn)
    hits = [start + i for i, line in enumerate(lines) if needle in line and "line_of(" not in line]
    assert len(hits) == 1, (needle, hits)
    return f"tests/{HERE}:{hits[0]}"


def data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return x, (x.sum(1, keepdim=True) > 0).float()


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


def kinds(lens: gradlens.Lens) -> list[str]:
    return [d.kind for d in lens.diagnostics]


# ---- statistics -------------------------------------------------------------------------------


def test_stats_equal_a_direct_computation() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    expected: list[dict[str, tuple[float, ...]]] = []
    losses: list[float] = []

    def snapshot(o: Any, args: Any, kwargs: Any) -> None:
        row = {}
        for name, p in net.named_parameters():
            g = p.grad.double()
            row[name] = (
                g.norm().item(),
                g.mean().item(),
                g.std(unbiased=False).item(),
                g.abs().max().item(),
                (g == 0).double().mean().item(),
                p.detach().double().norm().item(),
                p.detach().clone(),
            )
        expected.append(row)

    handle = opt.register_step_pre_hook(snapshot)
    with gradlens.watch(net, opt, live=False, detail_every=2) as lens:
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    handle.remove()

    steps = lens.steps
    assert [s.step for s in steps] == [0, 1, 2, 3, 4]
    assert [s.detail for s in steps] == [True, False, True, False, True]
    assert [s.loss for s in steps] == pytest.approx(losses, rel=1e-6)
    assert all(s.lr == 0.1 and s.missing == () and s.backward_calls == 1 for s in steps)
    params = dict(net.named_parameters())
    for s, row in zip(steps, expected, strict=True):
        assert set(s.grads) == set(row) == {"0.weight", "0.bias", "2.weight", "2.bias"}
        for name, (norm, mean, std, gmax, zeros, wnorm, _) in row.items():
            st = s.grads[name]
            assert st.grad_norm == pytest.approx(norm, rel=1e-5)
            assert st.grad_mean == pytest.approx(mean, rel=1e-4, abs=1e-7)
            assert st.grad_std == pytest.approx(std, rel=1e-3, abs=1e-6)
            assert st.grad_max == pytest.approx(gmax, rel=1e-6)
            assert st.nonfinite is False
            if s.detail:
                assert st.zero_frac == pytest.approx(zeros)
                assert (st.nan, st.inf) == (0, 0)
                assert st.weight_norm == pytest.approx(wnorm, rel=1e-5)
            else:
                assert st.zero_frac is st.nan is st.weight_norm is st.update_ratio is None
    # The update ratio of the last (detail) step: |w_after - w_before| / |w_before|.
    for name, row in expected[-1].items():
        before = row[6]
        after = params[name].detach()
        ratio = (after - before).double().norm().item() / before.double().norm().item()
        assert steps[-1].grads[name].update_ratio == pytest.approx(ratio, rel=1e-4)


def test_sgd_update_ratio_is_lr_times_grad_over_weight() -> None:
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    with gradlens.watch(optimizer=opt, live=False, detail_every=1) as lens:
        (w * torch.tensor([1.0, 0.0])).sum().backward()  # grad (1, 0), |w| = 5
        opt.step()
    (step,) = lens.steps
    stats = step.grads["w"]  # named after the variable that holds it
    assert stats.grad_norm == 1.0 and stats.grad_max == 1.0 and stats.grad_mean == 0.5
    assert stats.zero_frac == 0.5 and stats.weight_norm == 5.0
    assert stats.update_ratio == pytest.approx(0.5 * 1.0 / 5.0)
    assert w.tolist() == [2.5, 4.0]  # watching never changes the numbers


def test_logged_scalars_and_tensor_loss_stay_on_device_until_read() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gradlens.watch(net, opt, live=False) as lens:
        for epoch in range(3):
            loss = nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            lens.log(epoch=epoch, mse=loss * 2)
            opt.step()
    assert [s.scalars["epoch"] for s in lens.steps] == [0.0, 1.0, 2.0]
    assert [s.scalars["mse"] for s in lens.steps] == pytest.approx(
        [2 * s.loss for s in lens.steps if s.loss is not None]
    )


# ---- missed zero_grad ---------------------------------------------------------------------------


def loop(net: nn.Module, opt: torch.optim.Optimizer, steps: int, *, zero: str | None) -> None:
    x, y = data()
    for _ in range(steps):
        loss = nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        if zero == "none":
            opt.zero_grad()
        elif zero == "zeros":
            opt.zero_grad(set_to_none=False)
        elif zero == "model":
            net.zero_grad()


def test_missed_zero_grad_is_flagged_at_step_1_with_the_backward_line() -> None:
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, live=False) as lens:
        loop(net, opt, 6, zero=None)
    (found,) = lens.diagnostics
    assert found.kind == "grad-accumulation" and found.step == 1
    assert found.source == line_of(loop, "loss.backward()")
    assert found.name == "0.weight"
    assert "0.weight, 0.bias, 2.weight, 2.bias" in found.message
    assert "zero_grad" in (found.fix or "")


@pytest.mark.parametrize("zero", ["none", "zeros", "model"])
def test_every_way_of_zeroing_is_recognised(zero: str) -> None:
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, live=False) as lens:
        loop(net, opt, 6, zero=zero)
    assert lens.diagnostics == []
    assert len(lens.steps) == 6


def test_intentional_accumulation_is_not_flagged() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, live=False) as lens:
        for _ in range(4):
            for xb, yb in ((x[:16], y[:16]), (x[16:], y[16:])):
                (nn.functional.mse_loss(net(xb), yb) / 2).backward()
            opt.step()
            opt.zero_grad()
    assert lens.diagnostics == []
    assert [s.backward_calls for s in lens.steps] == [2, 2, 2, 2]
    full = nn.functional.mse_loss(model()(x[:16]), y[:16]) / 2
    full = full + nn.functional.mse_loss(model()(x[16:]), y[16:]) / 2
    assert lens.steps[0].loss == pytest.approx(full.item(), rel=1e-6)  # the sum of the roots


def test_without_an_optimizer_backward_alone_is_not_a_step() -> None:
    # The seeds' loop: w.grad becomes 5, 10, 15, 20, but nothing updates w: no training step.
    w = nn.Parameter(torch.tensor([1.0]))
    x = torch.tensor([2.0])
    holder = nn.ParameterDict({"w": w})
    with gradlens.watch(holder, live=False) as lens:
        for _ in range(4):
            y = torch.mul(torch.add(w, x), torch.add(w, 1))
            y.backward()
    assert w.grad.tolist() == [20.0]
    assert lens.steps == [] and lens.diagnostics == []


def test_without_an_optimizer_each_hand_written_update_is_a_step() -> None:
    # The same loop with an update by hand and no zeroing: the gradient the update applies is
    # 5, then 10 (5 stale + 5 new): the missed zeroing is found at the second update.
    w = nn.Parameter(torch.tensor([1.0]))
    x = torch.tensor([2.0])
    holder = nn.ParameterDict({"w": w})
    with gradlens.watch(holder, live=False) as lens:
        for _ in range(3):
            y = torch.mul(torch.add(w, x), torch.add(w, 1))
            y.backward()
            w.data.sub_(0.0 * w.grad)  # an update that keeps w (and so the gradients) exact
    assert [s.step for s in lens.steps] == [0, 1, 2]
    assert [s.grads["w"].grad_norm for s in lens.steps] == [5.0, 10.0, 15.0]
    assert [s.loss for s in lens.steps] == [6.0, 6.0, 6.0]
    (found,) = lens.diagnostics
    assert (found.kind, found.step, found.name) == ("grad-accumulation", 1, "w")
    here = test_without_an_optimizer_each_hand_written_update_is_a_step
    assert found.source == line_of(here, "y.backward()")


def test_every_k_records_every_kth_step_but_checks_all() -> None:
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, every=3, live=False) as lens:
        loop(net, opt, 10, zero=None)
    assert [s.step for s in lens.steps] == [0, 3, 6, 9]
    assert [(d.kind, d.step) for d in lens.diagnostics] == [("grad-accumulation", 1)]
    assert lens.record.total_steps == 10


# ---- no gradient, frozen, non-finite, vanishing, exploding ------------------------------------


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(3, 1)
        self.unused = nn.Linear(3, 1)
        self.cut = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x) + self.cut(x).detach()


def test_unused_and_detached_parameters_get_no_grad_findings() -> None:
    net, (x, y) = TwoHeads(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, live=False) as lens:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    found = {(d.kind, d.name, d.step) for d in lens.diagnostics}
    assert found == {
        ("no-grad", name, 0) for name in ("unused.weight", "unused.bias", "cut.weight", "cut.bias")
    }
    assert lens.steps[0].missing == ("unused.weight", "unused.bias", "cut.weight", "cut.bias")
    assert set(lens.steps[0].grads) == {"used.weight", "used.bias"}


def test_a_frozen_parameter_in_the_optimizer_is_reported() -> None:
    net, (x, y) = model(), data()
    net[0].bias.requires_grad_(False)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, live=False) as lens:
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    assert [(d.kind, d.name) for d in lens.diagnostics] == [("frozen", "0.bias")]
    assert lens.steps[0].missing == ()


@pytest.mark.parametrize(("poison", "kind"), [(math.nan, "nan-grad"), (math.inf, "inf-grad")])
def test_the_first_non_finite_gradient_is_reported_once(poison: float, kind: str) -> None:
    w, v = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w, v], lr=0.0)  # lr 0: the weights stay finite
    with gradlens.watch(
        nn.ParameterDict({"w": w, "v": v}), opt, live=False, detail_every=1
    ) as lens:
        for step in range(6):
            opt.zero_grad()
            c = torch.tensor([1.0, poison if step >= 3 else 2.0, 3.0])
            ((w * c).sum() + v.sum()).backward()  # w.grad is c
            opt.step()
    (found,) = lens.diagnostics  # one finding: the first non-finite gradient
    assert (found.kind, found.step, found.name) == (kind, 3, "w")
    assert "step 3: the first" in found.message
    bad, before = lens.steps[3].grads["w"], lens.steps[2].grads["w"]
    assert bad.nonfinite and not before.nonfinite and before.grad_max == 3.0
    assert not lens.steps[5].grads["v"].nonfinite
    if kind == "nan-grad":
        assert math.isnan(bad.grad_max) and (bad.nan, bad.inf) == (1, 0)
    else:
        assert bad.grad_max == math.inf and (bad.nan, bad.inf) == (0, 1)


@pytest.mark.parametrize(
    ("scale", "kind"), [(VANISHING_NORM * 1e-3, "vanishing"), (EXPLODING_NORM * 1e3, "exploding")]
)
def test_vanishing_and_exploding_need_patience(scale: float, kind: str) -> None:
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.0)
    holder = nn.ParameterDict({"w": w})
    with gradlens.watch(holder, opt, live=False) as lens:
        for step in range(PATIENCE + 3):
            opt.zero_grad()
            factor = scale if step >= 2 else 1.0  # normal for two steps, then past the threshold
            (w.sum() * factor).backward()
            opt.step()
    (found,) = lens.diagnostics
    assert (found.kind, found.name, found.step) == (kind, "w", 2 + PATIENCE - 1)


# ---- loss inputs ------------------------------------------------------------------------------


def test_bce_with_logits_fed_a_sigmoid_is_flagged_at_its_line() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    criterion = nn.BCEWithLogitsLoss()
    with gradlens.watch(net, opt, live=False) as lens:
        for _ in range(3):
            opt.zero_grad()
            prob = torch.sigmoid(net(x))
            loss = criterion(prob.squeeze(1), y.squeeze(1))  # double sigmoid
            loss.backward()
            opt.step()
    (found,) = lens.diagnostics
    assert found.kind == "loss-input" and found.step == 0
    assert "double sigmoid" in found.message
    expected = line_of(test_bce_with_logits_fed_a_sigmoid_is_flagged_at_its_line, "# double sig")
    assert found.source == expected


@pytest.mark.parametrize(
    ("scores", "says"),
    [
        (lambda out: out, "BCELoss got raw scores (made by AddmmBackward0), not probabilities"),
        (lambda out: out * 10, "BCELoss got values outside [0, 1]"),
    ],
)
def test_bce_fed_scores_keeps_pytorchs_error_and_explains_it(
    scores: Callable[[torch.Tensor], torch.Tensor], says: str
) -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    lens = gradlens.watch(net, opt, live=False)
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"), lens:
        nn.BCELoss()(scores(net(x)), y)  # scores, not probabilities
    (found,) = lens.diagnostics
    assert (found.kind, found.message) == ("loss-input", f"step 0: {says}")
    assert "apply torch.sigmoid first" in (found.fix or "")


def test_correct_bce_and_bce_with_logits_are_silent() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gradlens.watch(net, opt, live=False) as lens:
        for use_logits in (True, False):
            opt.zero_grad()
            logits = net(x)
            if use_logits:
                loss = nn.BCEWithLogitsLoss()(logits, y)
            else:
                loss = nn.BCELoss()(torch.sigmoid(logits).view(-1, 1), y)
            loss.backward()
            opt.step()
    assert lens.diagnostics == []


# ---- hooks, memory, syncs ---------------------------------------------------------------------


def hook_counts(net: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, ...]:
    from torch.nn.modules import module as module_mod
    from torch.optim import optimizer as optimizer_mod

    return (
        sum(len(p._backward_hooks or {}) for p in net.parameters()),
        len(opt._optimizer_step_pre_hooks),
        len(opt._optimizer_step_post_hooks),
        len(optimizer_mod._global_optimizer_pre_hooks),
        len(module_mod._global_forward_pre_hooks),
        torch._C._len_torch_function_stack(),
    )


@pytest.mark.parametrize("how", ["model", "global"])
def test_hooks_are_removed_even_when_the_loop_raises(how: str) -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = hook_counts(net, opt)
    lens = gradlens.watch(net, opt, live=False) if how == "model" else gradlens.watch(live=False)
    with pytest.raises(KeyError, match="boom"), lens:
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        if how == "model":
            assert hook_counts(net, opt) != before
        raise KeyError("boom")
    assert hook_counts(net, opt) == before
    assert len(lens.steps) == 1  # what was recorded before the error is kept


def test_a_finished_lens_keeps_no_tensor_alive() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gradlens.watch(net, opt, live=False, detail_every=1) as lens:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
    refs = [weakref.ref(net), weakref.ref(opt), *(weakref.ref(p) for p in net.parameters())]
    del net, opt
    gc.collect()
    assert all(r() is None for r in refs)
    assert len(lens.steps) == 3


SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__", "__index__")


@pytest.fixture
def host_copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Returns a list that records every call copying a tensor's values to the host.

    The methods are wrapped on ``torch.Tensor`` itself, so calls from inside hooks and from
    code that skips torch-function modes are counted too.
    """
    calls: list[str] = []
    depth = [0]  # a torch-function mode may route the original back through the wrapper
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: Any, _o: Any = original, _n: str = name) -> Any:
            if depth[0] == 0:
                calls.append(_n)
            depth[0] += 1
            try:
                return _o(self, *args)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_the_host_copy_counter_sees_copies_inside_hooks(host_copies: list[str]) -> None:
    w = nn.Parameter(torch.ones(2))
    w.register_hook(lambda g: print(g.sum().item()))
    w.sum().backward()
    assert host_copies == ["item"]


def test_no_host_copy_per_step_only_one_batch_at_the_end(host_copies: list[str]) -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gradlens.watch(net, opt, live=False, detail_every=2) as lens:
        for _ in range(20):  # fewer than FLUSH_EVERY steps: nothing is copied while training
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()
            lens.log(loss=loss, acc=(loss < 1).float())
            opt.step()
        assert host_copies == []
    assert host_copies == ["cpu", "tolist"]  # the whole run, in one transfer
    assert len(lens.steps) == 20
    assert lens.steps[5].scalars["acc"] in (0.0, 1.0)


def test_flushes_come_in_batches_of_flush_every_steps(host_copies: list[str]) -> None:
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=1e-3)
    with gradlens.watch(nn.ParameterDict({"w": w}), opt, live=False):
        for block in range(3):
            for i in range(FLUSH_EVERY):
                opt.zero_grad()
                w.sum().backward()
                opt.step()
                flushes = host_copies.count("tolist")
                assert flushes == (block + 1 if i == FLUSH_EVERY - 1 else block), (block, i)
    assert host_copies == ["cpu", "tolist"] * 3


def test_long_runs_keep_a_bounded_thinned_history() -> None:
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=1e-3)
    with gradlens.watch(nn.ParameterDict({"w": w}), opt, live=False, history=16) as lens:
        for _ in range(100):
            opt.zero_grad()
            w.sum().backward()
            opt.step()
    record = lens.record
    assert record.total_steps == 100
    assert record.stride == 8
    assert [s.step for s in record.steps] == list(range(0, 100, 8))
    assert len(record.steps) <= 16


# ---- global mode, API errors, files -----------------------------------------------------------


def test_watching_everything_adopts_optimizers_created_inside() -> None:
    x, y = data()
    with gradlens.watch(live=False) as lens:
        net = model()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(3):
            loss = nn.functional.mse_loss(net(x), y)
            loss.backward()  # no zero_grad: caught from the second step on
            opt.step()
    assert [s.step for s in lens.steps] == [0, 1, 2]
    assert set(lens.steps[0].grads) == {  # named under the variable that holds the model
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
    }
    assert [(d.kind, d.step) for d in lens.diagnostics] == [("grad-accumulation", 1)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "net"}, "watch() takes an nn.Module as its model, got str"),
        ({"optimizer": 3}, "watch() takes a torch.optim.Optimizer as optimizer, got int"),
        ({"every": 0}, "watch(every=...) takes an integer >= 1, got 0"),
        ({"detail_every": -1}, "watch(detail_every=...) takes an integer >= 0, got -1"),
        ({"history": 4}, "watch(history=...) takes an integer >= 16, got 4"),
        ({"live": "yes"}, "watch(live=...) takes True, False or None, got 'yes'"),
    ],
)
def test_bad_arguments_say_what_to_pass(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(GradlensError) as info:
        gradlens.watch(**kwargs)
    assert str(info.value).startswith(message)


def test_log_outside_the_block_and_bad_values_are_clear_errors() -> None:
    net = model()
    lens = gradlens.watch(net, live=False)
    with pytest.raises(GradlensError, match=r"inside the `with gradlens\.watch"):
        lens.log(loss=1.0)
    with lens:
        with pytest.raises(GradlensError, match=r"got a tensor of shape \(2,\)"):
            lens.log(loss=torch.ones(2))
        with pytest.raises(GradlensError, match="got str"):
            lens.log(loss="low")
    with pytest.raises(GradlensError, match="already watched"):
        lens.__enter__()


def test_save_and_load_a_lens(tmp_path: Path) -> None:
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with gradlens.watch(net, opt, live=False) as lens:
        loop(net, opt, 3, zero=None)
    path = gradlens.save(lens, tmp_path / "run.json")
    loaded = gradlens.load(path)
    assert isinstance(loaded, gradlens.Lens)
    assert [s.step for s in loaded.steps] == [0, 1, 2]
    assert loaded.diagnostics == lens.diagnostics
    assert loaded.steps[2].grads["0.weight"] == lens.steps[2].grads["0.weight"]
    png = loaded.plot(tmp_path / "run.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_amp_scaler_and_clipping_give_no_false_findings() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    with gradlens.watch(net, opt, live=False) as lens:
        for _ in range(10):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.mse_loss(net(x).float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
            lens.log(loss=loss)
            scaler.step(opt)
            scaler.update()
    assert lens.diagnostics == []
    assert len(lens.steps) == 10
    last = lens.steps[-1]
    assert last.loss == pytest.approx(loss.item())  # the logged loss, not the scaled root
    total = math.sqrt(sum(s.grad_norm**2 for s in last.grads.values()))
    assert total == pytest.approx(0.1, rel=1e-3)  # seen after unscale_ and clipping


def test_probabilities_built_by_arithmetic_are_not_taken_for_scores() -> None:
    net, (x, y) = model(), data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gradlens.watch(net, opt, live=False) as lens:
        opt.zero_grad()
        prob = 0.5 * (torch.tanh(net(x)) + 1)  # in (0, 1), made by an add
        nn.BCELoss()(prob * 0.98 + 0.01, y).backward()  # smoothed, made by an add too
        opt.step()
    assert lens.diagnostics == []
