"""Autograd features real code uses: WGAN-GP's gradient penalty (create_graph), per-sample
gradients with torch.func (vmap of grad), tensor and module backward hooks, anomaly mode,
retain_graph with a second backward, an in-place custom Function (mark_dirty), forward-mode AD,
and PyTorch's own autograd-test shapes (a saved-tensor hook pair that changes values)."""

from __future__ import annotations

from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from ._harness import Case, Outcome, Rec, local_hooks
from ._models import data, mlp


def wgan_gradient_penalty(rec: Rec) -> Outcome:
    """WGAN-GP critic step: the penalty on the gradient of the critic at interpolates, with
    torch.autograd.grad(create_graph=True), then backward through it."""
    critic = mlp(4, 8, 1, seed=5)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    real, fake = data(6, 4), data(6, 4, seed=13)
    out = Outcome()
    with out.catch(), rec(critic, opt):
        for _ in range(2):
            opt.zero_grad()
            alpha = torch.linspace(0, 1, 6).unsqueeze(1)
            inter = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            scores = critic(inter)
            (grad,) = torch.autograd.grad(
                scores, inter, grad_outputs=torch.ones_like(scores), create_graph=True
            )
            penalty = ((grad.norm(2, dim=1) - 1) ** 2).mean() * 10
            loss = critic(fake).mean() - critic(real).mean() + penalty
            loss.backward()
            opt.step()
    out.keep_model("critic", critic)
    out.keep(penalty=penalty)
    out.counters.update(local_hooks(critic, opt))
    return out


def per_sample_grads(rec: Rec) -> Outcome:
    """torch.func: functional_call + vmap(grad(...)) per sample (the Opacus/DP-SGD idiom),
    then an ordinary batch backward."""
    model = mlp(3, 4, 2, seed=6)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = data(5, 3), torch.tensor([0, 1, 1, 0, 1])

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> Any:
        logits = torch.func.functional_call(model, p, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    out = Outcome()
    with out.catch(), rec(model):
        per = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
        F.cross_entropy(model(x), y).backward()
    out.keep(per_sample=per)
    out.keep_model("model", model)
    return out


def backward_hooks(rec: Rec) -> Outcome:
    """The user's own hooks: a gradient-clamping tensor hook on every parameter, a full
    backward hook on a module and a post-accumulate-grad hook; each call counted."""
    model = mlp(3, 5, 2, seed=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"tensor": 0, "module": 0, "accumulate": 0}
    handles = []

    def clamp(g: torch.Tensor) -> torch.Tensor:
        calls["tensor"] += 1
        return g.clamp(-0.1, 0.1)

    def module_hook(m: nn.Module, gin: Any, gout: Any) -> None:
        calls["module"] += 1

    def accumulated(p: torch.Tensor) -> None:
        calls["accumulate"] += 1

    for p in model.parameters():
        handles.append(p.register_hook(clamp))
        handles.append(p.register_post_accumulate_grad_hook(accumulated))
    handles.append(model[2].register_full_backward_hook(module_hook))
    x, y = data(4, 3), data(4, 2, seed=3)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    out.keep_model("model", model)
    out.counters.update(calls, **local_hooks(model, opt))
    for h in handles:
        h.remove()
    out.counters["after_remove"] = local_hooks(model)
    return out


def anomaly_mode_nan(rec: Rec) -> Outcome:
    """detect_anomaly around a backward whose gradient is NaN (sqrt at 0 times 0): PyTorch
    raises naming SqrtBackward0; the message must be PyTorch's."""
    w = torch.tensor([0.0, 1.0, 4.0], requires_grad=True)
    out = Outcome()
    with out.catch(), rec(), torch.autograd.detect_anomaly(check_nan=True):
        y = (torch.sqrt(w) * torch.tensor([0.0, 1.0, 1.0])).sum()
        z = torch.sqrt(w - w.detach())  # sqrt(0): infinite slope
        (y + z.sum()).backward()
    out.keep(w=w, w_grad=w.grad)
    return out


def retain_graph_twice(rec: Rec) -> Outcome:
    """Two losses on one graph: backward(retain_graph=True), then the second backward;
    gradients accumulate exactly (values checked against the closed form)."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    out = Outcome()
    with out.catch(), rec():
        h = w * w
        a = h.sum()
        b = (h * 3).sum()
        a.backward(retain_graph=True)
        first = w.grad.clone()
        b.backward()
    out.keep(first=first, total=w.grad)
    out.counters["claim_exact"] = bool(
        torch.equal(first, 2 * w.detach()) and torch.equal(w.grad, 8 * w.detach())
    )
    return out


class InplaceScale(torch.autograd.Function):
    """An in-place custom Function done right: writes its input and says so (mark_dirty)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, s: float) -> torch.Tensor:
        ctx.s = s
        x.mul_(s)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.s, None


def mark_dirty_function(rec: Rec) -> Outcome:
    w = data(4).requires_grad_()
    out = Outcome()
    with out.catch(), rec():
        x = w.exp()  # exp saves its output; InplaceScale writes a clone, not x
        y = InplaceScale.apply(x.clone(), 3.0)
        z = InplaceScale.apply(w * 1, 0.5)  # the mul saved nothing that is written
        (y.sum() + (z * z).sum()).backward()
    out.keep(w=w, w_grad=w.grad, y=y)
    return out


def forward_mode_ad(rec: Rec) -> Outcome:
    """forward_ad dual numbers through a small MLP (a Jacobian-vector product), and
    torch.func.jvp on the same function."""
    model = mlp(3, 4, 2, seed=8)
    x, v = data(2, 3), data(2, 3, seed=4)
    out = Outcome()
    with out.catch(), rec(model):
        with fwAD.dual_level():
            dual = fwAD.make_dual(x, v)
            y = model(dual)
            primal, tangent = fwAD.unpack_dual(y)
        _, jvp = torch.func.jvp(lambda t: model(t), (x,), (v,))
    out.keep(primal=primal, tangent=tangent, jvp=jvp)
    return out


def hooks_change_values(rec: Rec) -> Outcome:
    """From PyTorch's autograd tests: a pack hook that stores 2*t and an unpack hook that
    returns it: backward uses the changed value (gradient doubled), so counts and values
    must match plainly."""
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    calls = {"pack": 0, "unpack": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        calls["pack"] += 1
        return t * 2

    def unpack(t: torch.Tensor) -> torch.Tensor:
        calls["unpack"] += 1
        return t

    out = Outcome()
    with out.catch(), rec():
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            y = a * a
        y.sum().backward()
    out.keep(grad=a.grad)
    out.counters.update(calls)
    out.counters["claim_doubled"] = bool(torch.equal(a.grad, 4 * a.detach()))
    return out


def batched_grads(rec: Rec) -> Outcome:
    """A Jacobian by autograd.grad(is_grads_batched=True) (vmap inside the engine), the same
    by functional.jacobian(vectorize=True), and grad(allow_unused, materialize_grads)."""
    model = mlp(3, 4, 2, seed=9)
    x = data(3).requires_grad_()
    unused = torch.zeros(2, requires_grad=True)
    jac = jac2 = g_x = g_unused = None
    out = Outcome()
    with out.catch(), rec(model):
        y = model(x)
        (jac,) = torch.autograd.grad(y, x, torch.eye(2), is_grads_batched=True, retain_graph=True)
        jac2 = torch.autograd.functional.jacobian(model, x.detach(), vectorize=True)
        g_x, g_unused = torch.autograd.grad(
            y.sum(), [x, unused], allow_unused=True, materialize_grads=True
        )
    out.keep(jac=jac, jac2=jac2, g_x=g_x, g_unused=g_unused)
    return out


def eval_under_inference_mode(rec: Rec) -> Outcome:
    """An evaluation script: the whole loop under inference_mode (BatchNorm and dropout in
    eval), softmax probabilities, top-1 accuracy."""
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.eval()
    batches = [data(5, 4, seed=s) for s in range(3)]
    labels = torch.tensor([0, 1, 2, 1, 0])
    out = Outcome()
    with out.catch(), torch.inference_mode(), rec(model):
        probs = [F.softmax(model(b), dim=1) for b in batches]
        acc = [(p.argmax(1) == labels).float().mean() for p in probs]
    out.keep(probs=probs, acc=acc)
    return out


CASES = [
    Case("wgan_gradient_penalty", wgan_gradient_penalty),
    Case("per_sample_grads_vmap", per_sample_grads),
    Case("user_backward_hooks", backward_hooks),
    Case(
        "anomaly_mode_nan",
        anomaly_mode_nan,
        raises="returned nan values",
        # true: sqrt(0)'s infinite gradient reaches SubBackward0 before the NaN is raised
        expect={"trace": [("inf-grad", None)]},
    ),
    Case("retain_graph_twice", retain_graph_twice),
    Case("mark_dirty_function", mark_dirty_function),
    Case("forward_mode_ad", forward_mode_ad),
    Case("saved_hooks_change_values", hooks_change_values),
    Case("batched_grads", batched_grads),
    Case("eval_under_inference_mode", eval_under_inference_mode),
]
