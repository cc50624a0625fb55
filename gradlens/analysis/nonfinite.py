"""Where the first NaN or infinity came from, in a trace: the op that made one from finite
inputs, and the first gradient that arrived non-finite."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import BackwardEvent, Diagnostic, Event, GradEvent, OpEvent, Severity, ValueSummary

__all__ = ["explain_nonfinite"]

_FIX = (
    "look at that op's inputs: log or sqrt of 0 or a negative number, a division by zero, exp "
    "of a large value, or a sigmoid followed by log (use the logits versions of the losses)"
)


def _nonfinite(g: ValueSummary | None) -> bool:
    """Returns whether summary ``g`` counts a NaN or an infinity (``g.nonfinite``, without
    flattening values for the statistics-only summaries most gradients have)."""
    if g is None:
        return False
    if g.values is None:
        return bool(g.nan or g.inf)
    return any(g.nonfinite)


def explain_nonfinite(events: Sequence[Event]) -> list[Diagnostic]:
    """Returns up to two findings: the first op whose output was NaN/Inf although its inputs
    were finite (``non-finite``), and the first non-finite gradient (``nan-grad``/``inf-grad``),
    which names that op as the likely origin."""
    first_op = next(
        (
            e
            for e in events
            if isinstance(e, OpEvent)
            and any(r.nonfinite for r in e.outputs)
            and not any(r.nonfinite for r in e.inputs)
            and not e.nonfinite_constant
        ),
        None,
    )
    out: list[Diagnostic] = []
    origin = ""
    if first_op is not None:
        made = ", ".join(r.name for r in first_op.outputs if r.nonfinite)
        where = f" at {first_op.source}" if first_op.source else ""
        origin = f"; the first non-finite value was made by {first_op.op}{where}"
        out.append(
            Diagnostic(
                kind="non-finite",
                message=f"{first_op.op} produced NaN/Inf in {made} from finite inputs",
                severity=Severity.ERROR,
                name=made,
                source=first_op.source,
                fix=_FIX,
            )
        )
    scaled = {e.pass_index for e in events if isinstance(e, BackwardEvent) and e.grad_scaler}
    for e in events:
        if not isinstance(e, GradEvent):
            continue
        if not any(_nonfinite(g) for g in e.grads) and not _nonfinite(e.accumulated):
            continue
        counts = [g.nonfinite for g in (*e.grads, e.accumulated) if g is not None]
        kind = "nan-grad" if any(nans for nans, _ in counts) else "inf-grad"
        what = e.leaf or e.node_name
        if e.pass_index in scaled:  # the scaler at work: said once, then unscaled passes
            if not any(d.kind == "amp-overflow" for d in out):
                out.append(_scaled_overflow(e, what))
            continue
        out.append(
            Diagnostic(
                kind=kind,
                message=f"backward pass {e.pass_index}: the first non-finite gradient reached "
                f"{what}{origin}",
                severity=Severity.ERROR,
                name=what,
                source=first_op.source if first_op is not None else None,
                fix=_FIX,
            )
        )
        break
    return out


def _scaled_overflow(e: GradEvent, what: str) -> Diagnostic:
    return Diagnostic(
        kind="amp-overflow",
        message=(
            f"backward pass {e.pass_index}: the gradients of the loss scaled by GradScaler "
            f"overflowed (the first non-finite one reached {what}). That is how AMP starts: "
            "scaler.step() skips this optimizer step and scaler.update() lowers the scale "
            "until the scaled gradients fit"
        ),
        severity=Severity.INFO,
        name=what,
        fix="nothing, while it stops after a few steps; if every step overflows, the "
        "unscaled gradients are not finite either: trace a step without autocast",
    )
