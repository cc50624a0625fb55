"""Tensor kinds beyond dense float: nested (jagged and strided), inference, sparse COO, complex
(with conj views, one written in place), meta; forward and backward where PyTorch has one."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F

from ._harness import Case, Outcome, Rec, count_alive, local_hooks, planted, record_truth
from ._models import data, mlp


def nested_jagged(rec: Rec) -> Outcome:
    lin = mlp(4, 3)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    a, b = data(2, 4).requires_grad_(), data(3, 4, seed=7).requires_grad_()
    refs: list[weakref.ref[Any]] = []

    def step() -> None:
        opt.zero_grad()
        nt = torch.nested.as_nested_tensor([a, b], layout=torch.jagged)
        y = torch.relu(lin(nt)) * 2.0
        loss = (y.values() ** 2).sum()
        loss.backward()
        opt.step()
        refs.extend(weakref.ref(t) for t in (nt, y, loss))

    out = Outcome()
    with out.catch(), rec(lin, opt):
        step()
        step()
    out.keep_model("lin", lin)
    out.keep(a_grad=a.grad, b_grad=b.grad)
    out.counters.update(alive=count_alive(refs), **local_hooks(lin, opt))
    return out


def nested_strided(rec: Rec) -> Outcome:
    lin = mlp(4, 3)
    nt = torch.nested.nested_tensor([data(2, 4), data(3, 4, seed=7)], requires_grad=True)
    padded = None
    out = Outcome()
    with out.catch(), rec(lin):
        y = lin(nt).sin() * 2.0
        padded = torch.nested.to_padded_tensor(y, 0.0)
        padded.sum().backward()
    out.keep_model("lin", lin)
    out.keep(nt_grad=nt.grad, padded=padded)
    return out


def inference_tensor_cloned(rec: Rec) -> Outcome:
    """Data made under inference_mode (a dataloader's transform), cloned before training on it,
    as PyTorch's error message advises; an inference-mode evaluation after each step."""
    model = mlp(4, 5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.inference_mode():
        batch = data(6, 4) * 0.5
        target = data(6, 2, seed=5).tanh()
    evals = []
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            loss = F.mse_loss(model(batch.clone()), target.clone())
            loss.backward()
            opt.step()
            with torch.inference_mode():
                evals.append(model(batch))
    out.keep_model("model", model)
    out.keep(evals=evals)
    out.counters["is_inference"] = [e.is_inference() for e in evals]
    return out


def inference_tensor_saved(rec: Rec) -> Outcome:
    """The mistake: an inference tensor fed to a layer whose weight needs its gradient.
    PyTorch refuses at the forward; the message must be PyTorch's, unchanged."""
    model = mlp(4, 2)
    with torch.inference_mode():
        batch = data(3, 4)
    out = Outcome()
    with out.catch(), rec(model):
        model(batch).sum().backward()
    out.keep_model("model", model)
    return out


def sparse_coo(rec: Rec) -> Outcome:
    """A graph-convolution step: sparse adjacency (a leaf with grad) times dense features."""
    torch.manual_seed(1)
    weight = torch.nn.Parameter(torch.randn(4, 3) * 0.3)
    dense = data(5, 4).relu()
    adj = dense[:, :5].t().matmul(dense[:, :5].new_ones(5, 5)).relu()
    adj = (adj > 1.0).float().to_sparse().requires_grad_()
    feats = data(5, 4, seed=9)
    opt = torch.optim.SGD([weight], lr=0.1)
    out = Outcome()
    with out.catch(), rec(None, opt):
        for _ in range(2):
            opt.zero_grad()
            h = torch.sparse.mm(adj, feats @ weight)
            loss = torch.tanh(h).pow(2).mean()
            loss.backward()
            opt.step()
    out.keep(weight=weight, weight_grad=weight.grad, adj_grad=adj.grad)
    out.counters["nnz"] = int(adj._nnz())
    return out


def complex_ops(rec: Rec) -> Outcome:
    """conj(), abs(), angle, and a conj view written in place before anything saved it."""
    z = torch.complex(data(4), data(4, seed=3)).requires_grad_()
    out = Outcome()
    with out.catch(), rec():
        u = z * (1 + 2j)
        v = u.conj()
        v.add_(0.5j)  # writes u through its conj view; nothing saved u yet
        loss = (u * u.conj()).real.sum() + z.abs().sum() + u.angle().sum() * 0.1
        loss.backward()
    out.keep(z=z, z_grad=z.grad, u=u, v_is_conj=v.is_conj())
    return out


def complex_conj_view_written(rec: Rec) -> Outcome:
    """abs() saves u; then u is written through its conj view: PyTorch refuses at backward."""
    z = torch.complex(data(4), data(4, seed=3)).requires_grad_()
    out = Outcome()
    with out.catch(), rec():
        u = z * 2
        y = u.abs().sum()
        v = u.conj()
        v.mul_(2)  # WRITE: conj view
        y.backward()
    out.keep(z=z, z_grad=z.grad)
    return out


def complex_parameters(rec: Rec) -> Outcome:
    """A complex-valued layer (nn.Linear(dtype=cfloat)) trained with Adam for 26 steps (past
    watch's detail step 25), the loss |y|^2."""
    torch.manual_seed(71)
    lin = torch.nn.Linear(3, 2, dtype=torch.cfloat)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01)
    x = torch.complex(data(4, 3), data(4, 3, seed=6))
    out = Outcome()
    with out.catch(), rec(lin, opt):
        for _ in range(26):
            opt.zero_grad()
            lin(x).abs().pow(2).mean().backward()
            record_truth(out, lin)
            opt.step()
    out.keep_model("lin", lin)
    return out


def meta_forward(rec: Rec) -> Outcome:
    """Shape inference on the meta device (no data), forward and loss, as model sizing does."""
    with torch.device("meta"):
        model = mlp(8, 16, 4)
        x = torch.empty(3, 8)
    out = Outcome()
    with out.catch(), rec(model):
        y = model(x * 2.0)
        loss = F.cross_entropy(y, torch.zeros(3, dtype=torch.long, device="meta"))
        y2 = torch.relu(y).add_(1)  # an in-place op on a meta tensor
    out.keep(y=y, loss=loss, y2=y2)
    out.counters["grad_fn"] = type(loss.grad_fn).__name__
    return out


CASES = [
    Case("nested_jagged", nested_jagged),
    Case("nested_strided", nested_strided),
    Case("inference_tensor_cloned", inference_tensor_cloned),
    Case(
        "inference_tensor_saved",
        inference_tensor_saved,
        raises="Inference tensors cannot be saved for backward",
    ),
    Case("sparse_coo", sparse_coo),
    Case("complex_ops", complex_ops),
    Case(
        "complex_conj_view_written",
        complex_conj_view_written,
        **planted("WRITE: conj view"),
    ),
    Case("complex_parameters", complex_parameters),
    Case("meta_forward", meta_forward),
]
