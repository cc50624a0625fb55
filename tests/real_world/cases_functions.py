"""Custom autograd Functions (ctx.save_for_backward) and the foreach ops optimizers use."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F

from ._harness import Case, Outcome, Rec, count_alive, local_hooks, planted
from ._models import data, mlp


class ScaledExp(torch.autograd.Function):
    """exp(x) * s: saves its output and the scale, as PyTorch's custom-function docs do."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        out = x.exp() * scale
        ctx.save_for_backward(out, scale)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, scale = ctx.saved_tensors
        return grad * out, (grad * out / scale).sum_to_size(scale.shape)


class Cube(torch.autograd.Function):
    """x**3, saving its input: an in-place write to the input after forward breaks it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * 3 * x**2


def custom_function_correct(rec: Rec) -> Outcome:
    model = mlp(4, 4)
    scale = torch.nn.Parameter(torch.full((4,), 0.5))
    opt = torch.optim.SGD([*model.parameters(), scale], lr=0.05)
    x = data(3, 4)
    refs: list[weakref.ref[Any]] = []

    def step() -> None:
        opt.zero_grad()
        h = ScaledExp.apply(model(x) * 0.1, scale)
        loss = Cube.apply(h).mean()
        loss.backward()
        opt.step()
        refs.extend(weakref.ref(t) for t in (h, loss))

    out = Outcome()
    with out.catch(), rec(model, opt):
        step()
        step()
    out.keep_model("model", model)
    out.keep(scale=scale, scale_grad=scale.grad)
    out.counters.update(alive=count_alive(refs), **local_hooks(model, opt))
    return out


def custom_function_input_written(rec: Rec) -> Outcome:
    w = data(5).requires_grad_()
    out = Outcome()
    with out.catch(), rec():
        x = w * 2
        y = Cube.apply(x)
        x.add_(1)  # WRITE: custom function input
        y.sum().backward()
    out.keep(w=w, w_grad=w.grad)
    return out


def foreach_ops(rec: Rec) -> Outcome:
    """The out-of-place foreach ops in a forward (as a multi-tensor loss does), then an SGD step
    with foreach=True (its own _foreach_add_ on parameters, under no_grad)."""
    model = mlp(3, 4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    x = data(2, 3)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            ps = list(model.parameters())
            sq = torch._foreach_mul(ps, ps)
            shifted = torch._foreach_add(sq, [p * 0.5 for p in ps])
            reg = torch.stack([t.sum() for t in shifted]).sum()
            loss = model(x).pow(2).mean() + 1e-3 * reg
            loss.backward()
            opt.step()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model, opt))
    return out


def foreach_inplace_on_saved(rec: Rec) -> Outcome:
    """exp saves its output; _foreach_add_ writes those outputs: PyTorch refuses at backward."""
    xs = [data(3, seed=i).requires_grad_() for i in range(3)]
    out = Outcome()
    with out.catch(), rec():
        ys = [x.exp() for x in xs]
        torch._foreach_add_(ys, 1.0)  # WRITE: foreach add_
        torch.stack(ys).sum().backward()
    out.keep(grads=[x.grad for x in xs])
    return out


def adam_foreach_and_fused(rec: Rec) -> Outcome:
    """Adam (foreach) and AdamW (fused) steps on two halves of a model, with weight decay."""
    model = mlp(4, 6, 3)
    first, last = list(model[0].parameters()), list(model[2].parameters())
    opt_a = torch.optim.Adam(first, lr=0.01, foreach=True, weight_decay=0.01)
    opt_b = torch.optim.AdamW(last, lr=0.01, fused=True)
    x, target = data(5, 4), data(5, 3, seed=8)
    out = Outcome()
    with out.catch(), rec():
        for _ in range(2):
            opt_a.zero_grad()
            opt_b.zero_grad()
            F.smooth_l1_loss(model(x), target).backward()
            opt_a.step()
            opt_b.step()
    out.keep_model("model", model)
    out.keep(state=[opt_a.state[p]["exp_avg_sq"] for p in first])
    out.counters.update(local_hooks(model, opt_a, opt_b))
    return out


@torch.library.custom_op("gradlens_real_world::scaled_tanh", mutates_args=())
def scaled_tanh(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A custom operator (torch.library.custom_op) with its autograd formula registered."""
    return torch.tanh(x) * scale


@scaled_tanh.register_fake
def _(x: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x)


def _scaled_tanh_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, scale = inputs
    ctx.scale = scale
    ctx.save_for_backward(output)


def _scaled_tanh_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    (out,) = ctx.saved_tensors
    return grad * (ctx.scale - out * out / ctx.scale), None


scaled_tanh.register_autograd(_scaled_tanh_backward, setup_context=_scaled_tanh_setup)


def library_custom_op(rec: Rec) -> Outcome:
    """A model using a torch.library custom op, trained two steps."""
    model = mlp(3, 4, seed=13)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = data(2, 3)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            scaled_tanh(model(x), 2.0).pow(2).mean().backward()
            opt.step()
    out.keep_model("model", model)
    return out


def library_custom_op_output_written(rec: Rec) -> Outcome:
    """The custom op's output, saved by its backward, scaled in place before backward."""
    w = data(4).requires_grad_()
    out = Outcome()
    with out.catch(), rec():
        y = scaled_tanh(w * 1.5, 2.0)
        loss = y.sum()
        y.mul_(0.5)  # WRITE: custom op output
        loss.backward()
    out.keep(w_grad=w.grad)
    return out


CASES = [
    Case("custom_function_correct", custom_function_correct),
    Case(
        "custom_function_input_written",
        custom_function_input_written,
        **planted("WRITE: custom function input"),
    ),
    Case("foreach_ops", foreach_ops),
    Case(
        "foreach_inplace_on_saved",
        foreach_inplace_on_saved,
        **planted("WRITE: foreach add_", count=3),
    ),
    Case("adam_foreach_and_fused", adam_foreach_and_fused),
    Case("library_custom_op", library_custom_op),
    Case(
        "library_custom_op_output_written",
        library_custom_op_output_written,
        **planted("WRITE: custom op output"),
    ),
]
