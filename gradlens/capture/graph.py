"""``gradlens.graph``: the autograd graph behind tensors, read after the fact."""

from __future__ import annotations

from typing import Any

import torch

from .._errors import GradlensError, NoGraphError
from .._gc import gc_paused
from ..records import Graph
from .builder import GraphBuilder
from .module_paths import infer_modules
from .names import TensorNames, named_params
from .summary import Summaries

__all__ = ["build_graph", "no_grad_fn_reason"]


def build_graph(*outputs: torch.Tensor, params: Any = None) -> Graph:
    """Returns the autograd graph behind ``outputs``: one node per autograd Node, one per leaf.

    ``params`` names the leaves: an ``nn.Module`` (its ``named_parameters()``) or a dict of
    name -> tensor; unnamed leaves are named by shape (``leaf[3]``). After a backward pass,
    leaves show their ``.grad``.
    """
    with gc_paused():  # thousands of drafts and records: no collector pass over the process
        return _build_graph(outputs, params)


def _build_graph(outputs: tuple[torch.Tensor, ...], params: Any) -> Graph:
    if not outputs:
        raise GradlensError("graph() needs at least one output tensor, e.g. graph(loss)")
    for i, t in enumerate(outputs):
        if not isinstance(t, torch.Tensor):
            raise GradlensError(
                f"output {i} is a {type(t).__name__}, not a tensor: pass the tensors whose "
                "graph you want, e.g. graph(loss)"
            )
        if t.grad_fn is None:
            raise NoGraphError(f"output {i} has no autograd graph: {no_grad_fn_reason(t)}")
    pairs: list[tuple[str, torch.Tensor]] | None = (  # every name (tied ones too), read once
        list(params.named_parameters(remove_duplicate=False))
        if isinstance(params, torch.nn.Module)
        else None
    )
    named = dict(pairs) if pairs is not None else named_params(params)
    names = TensorNames(named)
    builder = GraphBuilder(names, marks=False)  # one walk: nothing written into the graph
    roots = [t.grad_fn for t in outputs]
    done = False
    try:
        reached: list[tuple[Any, str]] = []
        for i, t in enumerate(outputs):
            names.set_name(names.key(t), "output" if len(outputs) == 1 else f"output {i}")
            builder.add_output(t, reached)
        if len(outputs) > 1:  # leaves in breadth-first order from all the outputs at once
            reached = builder.walk(roots)
        values = Summaries()  # read on the device, one copy to the host
        leaf_grads: dict[int, Any] = {}
        for fn, nid in reached:
            key = builder.draft(nid).tensor_key
            if key is None:  # an op
                continue
            leaf = getattr(fn, "variable", None)
            if not isinstance(leaf, torch.Tensor):
                continue
            if not names.has_name(key):
                names.set_name(key, _shape_name(leaf))
            if leaf.grad is not None:
                leaf_grads[key] = values.add(leaf.grad)
        # views: each node's module, inferred from the parameters it reaches (module_paths.py)
        infos = (
            infer_modules(reached, builder, params, pairs)
            if isinstance(params, torch.nn.Module)
            else ()
        )
        values.resolve()
        graph = builder.build(leaf_grads, values.get, modules=infos)
        builder.forget(fn for fn, _ in reached)  # every Node marked was reached
        done = True
        return graph
    finally:
        if not done:  # stopped half way: find the marks by walking again
            builder.forget_marks(roots)


def _shape_name(t: torch.Tensor) -> str:
    return "leaf[" + ("×".join(str(d) for d in t.shape) or "scalar") + "]"


def no_grad_fn_reason(t: torch.Tensor) -> str:
    """Returns why ``t`` has no ``grad_fn``, in words a user can act on."""
    if t.requires_grad and t.is_leaf:
        return (
            "it is a leaf tensor (created by you, not by an op), so it has no grad_fn; "
            "pass a tensor computed from it, such as the loss"
        )
    return (
        "it does not require grad. It was created with requires_grad=False (the default), "
        "computed under torch.no_grad() or torch.inference_mode(), returned by .detach() or "
        ".data, or computed only from tensors that do not require grad. Set requires_grad=True "
        "on the leaves (or use nn.Parameter) and compute it outside no_grad"
    )
