"""More shapes of real code: jit.trace, a Tensor subclass with __torch_function__, weight_norm
parametrizations, sparse embedding gradients with SparseAdam, tied weights, GradScaler,
mixture-of-experts routing, several losses in one backward, zero_grad(set_to_none=False),
a MAML inner loop (create_graph through parameters), and a Hessian."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from ._harness import Case, Outcome, Rec, local_hooks, record_truth
from ._models import data, mlp


def jit_traced_model(rec: Rec) -> Outcome:
    """torch.jit.trace inside the block (as export scripts do), then train the traced module."""
    model = mlp(3, 5, 2, seed=12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data(4, 3), data(4, 2, seed=1)
    out = Outcome()
    with out.catch(), rec(model, opt):
        traced = torch.jit.trace(model, x)
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(traced(x), y).backward()
            opt.step()
        graph_ops = sorted({n.kind() for n in traced.graph.nodes()})
    out.keep_model("model", model)
    out.counters["graph_ops"] = graph_ops
    out.counters.update(local_hooks(model, opt))
    return out


class Tagged(torch.Tensor):
    """A Tensor subclass that counts the torch functions called on it (its own hook)."""

    calls: ClassVar[list[str]] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        cls.calls.append(getattr(func, "__name__", repr(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def tensor_subclass(rec: Rec) -> Outcome:
    Tagged.calls = []
    w = data(3, 3).requires_grad_()
    x = data(2, 3, seed=2).as_subclass(Tagged)
    out = Outcome()
    with out.catch(), rec():
        y = torch.tanh(x @ w) * 2.0
        loss = y.sum()
        loss.backward()
    out.keep(w_grad=w.grad, y=y.as_subclass(torch.Tensor))
    out.counters.update(calls=list(Tagged.calls), y_type=type(y).__name__)
    return out


def weight_norm_parametrized(rec: Rec) -> Outcome:
    """parametrizations.weight_norm and spectral_norm: the weight recomputed each forward
    (spectral_norm also runs a power iteration in place on its buffers)."""
    torch.manual_seed(13)
    model = nn.Sequential(
        parametrizations.weight_norm(nn.Linear(4, 6)),
        nn.ReLU(),
        parametrizations.spectral_norm(nn.Linear(6, 2)),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data(5, 4), data(5, 2, seed=3)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    out.keep_model("model", model)
    out.keep(weight=model[2].weight)
    out.counters.update(local_hooks(model, opt))
    return out


def sparse_embedding(rec: Rec) -> Outcome:
    """nn.Embedding(sparse=True): sparse COO gradients; SparseAdam for it, Adam for the rest."""
    torch.manual_seed(14)
    emb = nn.Embedding(10, 4, sparse=True)
    head = nn.Linear(4, 1)
    model = nn.ModuleDict({"emb": emb, "head": head})
    sparse_opt = torch.optim.SparseAdam(list(emb.parameters()), lr=0.01)
    dense_opt = torch.optim.Adam(head.parameters(), lr=0.01)
    idx, target = torch.tensor([[1, 2, 4], [4, 3, 9]]), data(2, 1, seed=5)
    out = Outcome()
    with out.catch(), rec():
        for _ in range(2):
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            F.mse_loss(head(emb(idx).mean(1)), target).backward()
            sparse_opt.step()
            dense_opt.step()
    out.keep_model("model", model)
    out.counters["grad_sparse"] = emb.weight.grad is not None and emb.weight.grad.is_sparse
    out.counters.update(local_hooks(model, sparse_opt, dense_opt))
    return out


def tied_weights(rec: Rec) -> Outcome:
    """word_language_model --tied: the decoder's weight is the encoder's (one Parameter)."""
    torch.manual_seed(15)
    encoder, decoder = nn.Embedding(9, 5), nn.Linear(5, 9)
    decoder.weight = encoder.weight
    model = nn.ModuleDict({"encoder": encoder, "decoder": decoder})
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tokens = torch.tensor([1, 4, 2, 8, 0])
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            logits = decoder(torch.tanh(encoder(tokens[:-1])))
            F.cross_entropy(logits, tokens[1:]).backward()
            record_truth(out, model)
            opt.step()
    out.keep_model("model", model)
    out.counters["params"] = len(list(model.parameters()))
    out.counters.update(local_hooks(model, opt))
    return out


def grad_scaler_fp16(rec: Rec) -> Outcome:
    """torch.amp.GradScaler on CPU with float16 autocast: scale, unscale_, clip, step, update."""
    model = mlp(4, 6, 3, seed=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = data(5, 4), torch.tensor([0, 2, 1, 1, 0])
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            record_truth(out, model)
            scaler.step(opt)
            scaler.update()
    out.keep_model("model", model)
    out.counters["scale"] = scaler.get_scale()
    out.counters.update(local_hooks(model, opt))
    return out


def grad_scaler_overflow(rec: Rec) -> Outcome:
    """GradScaler's normal start: the first scale overflows float16, the gradients are inf,
    scaler.step skips optimizer.step and halves the scale, until it fits: no bug."""
    model = mlp(4, 6, 3, seed=20)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30, growth_interval=1)
    x, y = data(5, 4) * 100, torch.tensor([0, 2, 1, 1, 0])
    scales = []
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(4):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
    out.keep_model("model", model)
    out.counters["scales"] = scales
    return out


def mixture_of_experts(rec: Rec) -> Outcome:
    """Top-1 routing of three tokens over four experts: an expert no token picks gets no
    gradient that step (normal in MoE: its .grad is None after zero_grad and Adam skips it);
    here expert 3 is picked from step 1 on, experts 0 and 1 never."""
    torch.manual_seed(17)
    gate = nn.Linear(4, 4)
    experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(4))
    model = nn.ModuleDict({"gate": gate, "experts": experts})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = data(3, 4)
    picks: list[list[int]] = []
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(3):
            opt.zero_grad()
            weights = F.softmax(gate(x), dim=-1)
            choice = weights.argmax(-1)
            picks.append(choice.tolist())
            y = torch.zeros_like(x)
            for e, expert in enumerate(experts):
                mask = choice == e
                if mask.any():
                    y[mask] = expert(x[mask]) * weights[mask, e : e + 1]
            y.pow(2).mean().backward()
            opt.step()
    out.keep_model("model", model)
    out.counters["picks"] = picks
    out.counters.update(local_hooks(model, opt))
    return out


def several_losses_no_set_to_none(rec: Rec) -> Outcome:
    """torch.autograd.backward on two losses at once; zero_grad(set_to_none=False)."""
    model = mlp(3, 4, 2, seed=18)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, nesterov=True, momentum=0.9)
    x, y = data(5, 3), data(5, 2, seed=2)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            h = model(x)
            torch.autograd.backward([F.mse_loss(h, y), h.abs().mean() * 0.1])
            opt.step()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model, opt))
    return out


def maml_inner_loop(rec: Rec) -> Outcome:
    """MAML: an inner SGD step taken functionally with create_graph=True, the outer loss
    backpropagated through it into the meta-parameters."""
    model = mlp(2, 8, 1, seed=19)
    meta_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = data(4, 2), data(4, 1, seed=3)
    xq, yq = data(4, 2, seed=4), data(4, 1, seed=5)
    out = Outcome()
    with out.catch(), rec(model, meta_opt):
        for _ in range(2):
            meta_opt.zero_grad()
            params = dict(model.named_parameters())
            inner = F.mse_loss(torch.func.functional_call(model, params, (xs,)), ys)
            grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
            fast = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads, strict=True)}
            outer = F.mse_loss(torch.func.functional_call(model, fast, (xq,)), yq)
            outer.backward()
            meta_opt.step()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model, meta_opt))
    return out


def hessian_of_energy(rec: Rec) -> Outcome:
    """torch.autograd.functional.hessian and jacobian of a small energy function."""

    def energy(p: torch.Tensor) -> torch.Tensor:
        return (p.sin() * p.roll(1)).sum() + 0.5 * (p**2).sum()

    p = data(4)
    out = Outcome()
    with out.catch(), rec():
        hess = torch.autograd.functional.hessian(energy, p)
        jac = torch.autograd.functional.jacobian(lambda q: q.tanh() * 3.0, p, create_graph=False)
    out.keep(hess=hess, jac=jac)
    out.counters["claim_symmetric"] = bool(torch.allclose(hess, hess.t()))
    return out


CASES = [
    Case(
        "jit_traced_model",
        jit_traced_model,
        unrecorded="torch.jit.trace",
    ),
    Case("tensor_subclass", tensor_subclass),
    Case("weight_and_spectral_norm", weight_norm_parametrized),
    Case("sparse_embedding_sparseadam", sparse_embedding),
    Case("tied_weights", tied_weights),
    Case("grad_scaler_fp16", grad_scaler_fp16),
    # trace: the scaler's overflow told as what it is (INFO), not as a non-finite gradient
    Case("grad_scaler_overflow", grad_scaler_overflow, expect={"trace": [("amp-overflow", None)]}),
    # Experts 0 and 1 are never picked: told at the end (true: no gradient on any step). Expert
    # 3, not picked at step 0 but from step 1 on, is routing and told nothing.
    Case("mixture_of_experts", mixture_of_experts, expect={"watch": [("no-grad", None)] * 4}),
    Case("several_losses_zero_not_none", several_losses_no_set_to_none),
    Case("maml_inner_loop", maml_inner_loop),
    Case("hessian_of_energy", hessian_of_energy),
]
