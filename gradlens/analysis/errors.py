"""Explain the errors PyTorch raised during a trace: what happened, where, and the fix."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import BackwardEvent, Diagnostic, ErrorEvent, Event, GradEvent, OpEvent, Severity

__all__ = ["explain_errors"]

_TWICE = "backward through the graph a second time"
_LEAF_INPLACE = "leaf Variable that requires grad is being used in an in-place operation"
_NO_GRAD_FN = "does not require grad and does not have a grad_fn"


def explain_errors(events: Sequence[Event]) -> list[Diagnostic]:
    """Returns one Diagnostic per PyTorch error recorded in ``events`` that gradlens can explain."""
    out: list[Diagnostic] = []
    for i, event in enumerate(events):
        if isinstance(event, BackwardEvent) and event.error:
            if _TWICE in event.error:
                out.append(_backward_twice(event, events[:i], events[i + 1 :]))
            elif _NO_GRAD_FN in event.error:
                out.append(_no_grad_fn(event, events[:i]))
        elif isinstance(event, ErrorEvent) and _LEAF_INPLACE in event.error:
            out.append(_inplace_leaf(event))
    return out


def _backward_twice(
    event: BackwardEvent, before: Sequence[Event], after: Sequence[Event]
) -> Diagnostic:
    freeing = [
        e
        for e in before
        if isinstance(e, BackwardEvent)
        and not e.error
        and not e.retain_graph
        and set(e.roots) & set(event.roots)
    ]
    failed_at = [e for e in after if isinstance(e, GradEvent) and e.pass_index == event.pass_index]
    node = failed_at[-1].node_name if failed_at else "a node"
    roots = ", ".join(event.roots) or "the output"
    if freeing:
        first = freeing[-1]
        where = f"the {first.call}() at {first.source or 'an earlier line'}"
        msg = (
            f"{event.call}() on {roots} needs the tensors {node} saved for backward, but {where} "
            "already freed them: it ran without retain_graph=True, and autograd frees saved "
            "tensors as soon as a backward pass has used them."
        )
    else:
        msg = (
            f"{event.call}() on {roots} needs the tensors {node} saved for backward, but an "
            "earlier backward pass freed them (it ran without retain_graph=True)."
        )
    return Diagnostic(
        kind="backward-twice",
        message=msg,
        severity=Severity.ERROR,
        name=roots,
        source=event.source,
        fix=(
            "pass retain_graph=True to every backward() but the last over the same graph, "
            "or recompute the forward pass before backward() again"
        ),
    )


def _no_grad_fn(event: BackwardEvent, before: Sequence[Event]) -> Diagnostic:
    roots = ", ".join(event.roots) or "the output"
    cause = _why_no_history(event.roots[0], before) if event.roots else None
    return Diagnostic(
        kind="no-grad-fn",
        message=(
            f"{event.call}() was called on {roots}, which does not require grad: "
            + (
                cause
                or "nothing it was computed from requires grad, or it was computed under "
                "torch.no_grad(), or detached"
            )
            + ". There is no graph to differentiate."
        ),
        severity=Severity.ERROR,
        name=roots,
        source=event.source,
        fix=(
            "create the parameters with requires_grad=True (or as nn.Parameter) and compute "
            "the loss from them outside torch.no_grad(), without .detach()"
        ),
    )


def _why_no_history(root: str, before: Sequence[Event]) -> str | None:
    """Returns why tensor ``root`` has no autograd history, from the ops that made it: the
    no_grad region or detach that dropped it, else the leaves that never required grad."""
    made_by: dict[str, OpEvent] = {}
    for e in before:
        if isinstance(e, OpEvent):
            for r in e.outputs:
                made_by[r.name] = e
    queue, seen, leaves = [root], set(), []
    while queue:
        name = queue.pop(0)
        op = made_by.get(name)
        if name in seen or op is None:
            continue
        seen.add(name)
        where = f" at {op.source}" if op.source else ""
        if not op.grad_enabled or op.inference_mode:
            region = "torch.inference_mode()" if op.inference_mode else "torch.no_grad()"
            return f"{name} was computed by {op.op}{where} inside {region}"
        if op.op in ("detach", "detach_"):
            return f"{name} was made by .detach(){where}"
        if not op.inputs and name not in leaves:  # a factory: torch.tensor(...), torch.ones(...)
            leaves.append(name)
        for r in op.inputs:
            if r.name in made_by:
                queue.append(r.name)
            elif r.is_leaf and not r.requires_grad and r.name not in leaves:
                leaves.append(r.name)
    if leaves:
        return (
            f"it was computed only from tensors that do not require grad ({', '.join(leaves)}); "
            "create the ones to train with requires_grad=True"
        )
    return None


def _inplace_leaf(event: ErrorEvent) -> Diagnostic:
    leaves = [r.name for r in event.inputs if r.is_leaf and r.requires_grad]
    name = leaves[0] if leaves else "a leaf tensor"
    return Diagnostic(
        kind="inplace-leaf",
        message=(
            f"{event.op}() writes in place into {name}, a leaf that requires grad. Autograd "
            f"refuses: {name}'s value is what backward needs and what its .grad is measured "
            "against, so changing it under autograd's eyes is an error."
        ),
        severity=Severity.ERROR,
        name=name,
        source=event.source,
        fix=(
            f"to update {name} (as an optimizer does), do it under `with torch.no_grad():`; "
            f"to compute a new value, use the out-of-place op (`{name}2 = {name} + 1`)"
        ),
    )
