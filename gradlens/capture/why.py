"""The live half of ``gradlens.explain``: the loss's graph, and one gradient pass through it.

The pass is ``torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)``: it
never touches ``.grad`` and leaves the graph for the user's own ``backward()``. A hook on each
autograd node sees the gradient arriving and the gradients sent on; every hook is removed in
``finally``, and the walk's marks are wiped from the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from ..records import GradFlow, Graph, NodeKind
from .builder import GraphBuilder
from .names import TensorNames

__all__ = ["LossGraph", "gradient_pass", "walk_loss"]


@dataclass
class LossGraph:
    """The graph behind a loss (node ids of its own), the loss's node id and each leaf's id."""

    graph: Graph
    root: str | None  # the node id of loss.grad_fn (None: the loss has no graph)
    leaves: dict[str, str] = field(default_factory=dict)  # param name -> LEAF node id


def walk_loss(loss: torch.Tensor, params: Mapping[str, torch.Tensor]) -> LossGraph:
    """Returns the graph behind ``loss``, leaves named after ``params``."""
    names = TensorNames(dict(params))
    builder = GraphBuilder(names)
    fn = loss.grad_fn
    if fn is None:
        return LossGraph(Graph(nodes=(), edges=()), None)
    try:
        names.set_name(names.key(loss), "loss")
        builder.add_output(loss)
        root = builder.node_for(fn)
        graph = builder.build()
    finally:
        builder.forget_marks([fn])
    by_node = {n.name: n.id for n in graph.nodes if n.kind is NodeKind.LEAF}
    leaves = {name: by_node[name] for name in params if name in by_node}
    return LossGraph(graph, root, leaves)


def _nonzero(g: Any) -> bool:
    if not isinstance(g, torch.Tensor):
        return False
    with torch.no_grad():
        return bool(g.detach().ne(0).any())


def gradient_pass(
    loss: torch.Tensor, params: Mapping[str, torch.Tensor]
) -> tuple[dict[str, GradFlow], dict[str, bool]] | None:
    """Runs one gradient pass from ``loss`` to ``params``; returns what each node received and
    sent (by the node ids :func:`walk_loss` gives, on the same graph) and, per parameter,
    whether its gradient had a non-zero element. Returns None when the graph was already
    freed by a backward without ``retain_graph``.
    """
    fn0 = loss.grad_fn
    if fn0 is None or not params:
        return {}, {}
    names = TensorNames(dict(params))
    builder = GraphBuilder(names)
    builder.saved_shape = None
    flows: dict[str, GradFlow] = {}
    hooks: list[RemovableHandle] = []
    names.set_name(names.key(loss), "loss")
    try:
        builder.add_output(loss)
        reached = builder.walk([fn0])
        for fn, nid in reached:
            if builder.draft(nid).kind is not NodeKind.OP:
                continue
            children = [
                None if child is None else builder.node_for(child) for child, _ in fn.next_functions
            ]
            hooks.append(fn.register_hook(_flow_hook(nid, children, flows)))
        wanted = list(params.items())
        with torch._C.DisableTorchFunction():  # a trace recording now must not see this pass
            try:
                grads = torch.autograd.grad(
                    loss,
                    [t for _, t in wanted],
                    grad_outputs=torch.ones_like(loss),
                    retain_graph=True,
                    allow_unused=True,
                )
            except RuntimeError:
                return None
        leaf = {name: _nonzero(g) for (name, _), g in zip(wanted, grads, strict=True)}
        return flows, leaf
    finally:
        for h in hooks:
            h.remove()
        builder.forget_marks([fn0])


def _flow_hook(nid: str, children: list[str | None], flows: dict[str, GradFlow]) -> Any:
    def hook(grad_inputs: tuple[Any, ...], grad_outputs: tuple[Any, ...]) -> None:
        out: dict[str, bool] = {}
        for child, g in zip(children, grad_inputs, strict=False):
            if child is not None:
                out[child] = out.get(child, False) or _nonzero(g)
        incoming = any(_nonzero(g) for g in grad_outputs)
        old = flows.get(nid)
        if old is not None:  # a node the engine ran twice: keep what any run sent
            incoming = incoming or old.incoming
            out = {k: v or old.outgoing.get(k, False) for k, v in out.items()}
        flows[nid] = GradFlow(incoming=incoming, outgoing=out)

    return hook
