"""In-place violations explained: what was overwritten, which op needed it, both lines, the fix."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..records import Diagnostic, EdgeKind, Graph, InplaceViolation, NodeKind, Severity

__all__ = ["explain_violation", "explain_violations", "mark_violations"]

_FIX_SAVED = (
    "write to a copy instead (y = y.clone() before the in-place op), use the out-of-place op "
    "(y = y * 2 rather than y.mul_(2), inplace=False for nn.ReLU), or, for an optimizer step "
    "between forward and backward, run backward first or recompute the forward after the step"
)
_FIX_SILENT = (
    "never write through .data or a NumPy view of a tensor autograd saved: write to a clone, "
    "or do the write under torch.no_grad() on the tensor itself so PyTorch can check it"
)
_FIX_LEAF = (
    "wrap the update in `with torch.no_grad():` (as optimizers do), or use the out-of-place op "
    "(w = w + 1 makes a new, non-leaf tensor)"
)


def _where(source: str | None) -> str:
    return f" at {source}" if source else ""


def explain_violation(v: InplaceViolation) -> Diagnostic:
    """Returns the finding for one violation: message with both lines, and the fix."""
    saved = f"{v.saved_op or v.saved_by}{_where(v.saved_source)}"
    if v.kind == "inplace-saved":
        message = (
            f"{v.tensor} was overwritten by {v.write_op}{_where(v.write_source)}, but "
            f"{saved} saved it for backward (as {v.saved_as}, at version {v.saved_version}; now "
            f"{v.version}): backward through {v.saved_by} will fail with PyTorch's \"modified by "
            'an inplace operation" error'
        )
        fix = _FIX_SAVED
    elif v.kind == "silent-write":
        how = (
            "a write gradlens did not see (NumPy, or another alias), found by checksum before "
            f"the backward{_where(v.write_source)}"
            if v.write_op == "(unseen write)"
            else f"an assignment to .data{_where(v.write_source)} (the saved tensor now reads "
            "the new values)"
            if v.write_op == ".data ="
            else f"{v.write_op}{_where(v.write_source)}, a fused optimizer step that does not "
            "move the version counter"
            if v.write_op.startswith("_fused_")
            else f"{v.write_op}{_where(v.write_source)} through an alias with its own version "
            "counter (such as .data)"
        )
        message = (
            f"{v.tensor} was changed by {how}, after {saved} saved it for backward (as "
            f"{v.saved_as}): PyTorch cannot see this write, so backward will run and compute "
            "wrong gradients"
        )
        fix = _FIX_SILENT
    else:
        message = (
            f"{v.write_op}{_where(v.write_source)} writes in place to {v.tensor}, a leaf that "
            "requires grad: PyTorch refuses, because autograd needs the leaf's value as it was"
        )
        fix = _FIX_LEAF
    return Diagnostic(
        kind=v.kind,
        message=message,
        severity=Severity.ERROR,
        name=v.tensor,
        source=v.write_source,
        fix=fix,
    )


def explain_violations(violations: Iterable[InplaceViolation]) -> list[Diagnostic]:
    """Returns one finding per violation, in order."""
    return [explain_violation(v) for v in violations]


def mark_violations(graph: Graph, violations: Iterable[InplaceViolation]) -> Graph:
    """Returns ``graph`` with a ``problem`` on each node that saved an overwritten tensor and on
    the saved tensor itself (matched by node name, source line and saved slot)."""
    problems: dict[str, str] = {}
    for v in violations:
        if v.saved_by is None:
            continue
        text = f"{v.kind}: {v.tensor} overwritten by {v.write_op}{_where(v.write_source)}"
        for node in graph.nodes:
            if node.kind is not NodeKind.OP or node.name != v.saved_by:
                continue
            if v.saved_node is not None and node.id != v.saved_node:
                continue
            if v.saved_source is not None and node.source != v.saved_source:
                continue
            # Several nodes on one line (two Linear layers): the saved tensor's shape decides.
            saved = graph.parents(node.id, kind=EdgeKind.SAVED)
            match = [
                s for s in saved if s.name == v.saved_as and (s.shape is None or s.shape == v.shape)
            ]
            if not match:
                continue
            problems.setdefault(node.id, text)
            for s in match:
                problems.setdefault(s.id, text)
    if not problems:
        return graph
    # A saved tensor PyTorch refused to unpack was overwritten, not freed.
    nodes = tuple(
        replace(n, problem=problems[n.id], freed=False if n.kind is NodeKind.SAVED else n.freed)
        if n.id in problems
        else n
        for n in graph.nodes
    )
    return replace(graph, nodes=nodes)
