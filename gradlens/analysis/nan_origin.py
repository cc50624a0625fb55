"""Where a step's first nan or inf came from, from the module calls ``nan_origin`` probed.

The first call, in the order calls returned (a submodule before the module that called it), that
saw a nan or inf decides: if its inputs and own parameters were finite, it made the value; if its
parameters were not, an earlier update broke them; if it was given the value, the module whose
own code made it is the innermost enclosing call that got only finite values, and with none,
the value came from outside every module (the data): that is said, and no module is blamed.
"""

from __future__ import annotations

import math

from ..records import Diagnostic, ModuleCall, Severity, StepRecord

__all__ = ["nonfinite_step", "origin_finding"]

_ORDINAL = {0: "", 1: " (its 2nd call in the step)", 2: " (its 3rd call in the step)"}


def nonfinite_step(step: StepRecord) -> bool:
    """Whether the step's loss or any of its gradients held a nan or inf."""
    loss = step.loss is not None and not math.isfinite(step.loss)
    return loss or any(s.nonfinite for s in step.grads.values())


def origin_finding(step: StepRecord) -> Diagnostic | None:
    """Returns the finding that names where ``step``'s first non-finite value was made, or
    None when the step's forward was not probed (``nan_origin`` off, or a compiled model)."""
    if step.forward_calls == 0:
        return None
    calls = step.forward_nonfinite
    if not calls:
        return None if not step.forward_complete else _after_modules(step)
    first = calls[0]
    if first.inputs_finite and first.params_finite:
        return _made_by(first, None, step)
    if not first.params_finite:
        return _broken_params(first, step)
    # Given a nan: made by an enclosing module's own code (between its submodules), if one
    # got only finite values; else it came from outside every module.
    for c in calls[1:]:
        inside = not c.module or first.module.startswith(f"{c.module}.")
        if inside and c.inputs_finite and c.params_finite:
            return _made_by(c, first, step)
    return _given(first, step)


def _name(c: ModuleCall) -> str:
    who = f"`{c.module}` ({c.kind})" if c.module else f"the model itself ({c.kind})"
    return who + _ORDINAL.get(c.call, f" (its call #{c.call + 1} in the step)")


def _at(c: ModuleCall) -> str:
    return f", called at {c.source}" if c.source else ""


def _made_by(c: ModuleCall, given: ModuleCall | None, step: StepRecord) -> Diagnostic:
    what = "the first nan/inf of the forward was made by"
    also = ""
    if given is not None:  # between its submodules
        what = "the first nan/inf of the forward was made in the forward code of"
        also = f" (its submodule {_name(given)} was then given it)"
    return Diagnostic(
        kind="nan-origin",
        message=(
            f"step {step.step}: {what} {_name(c)}{_at(c)}: its inputs and its own parameters "
            f"were finite, its output was not{also}"
        ),
        severity=Severity.ERROR,
        name=c.module or c.kind,
        step=step.step,
        source=c.source,
        fix=f"look at what {c.kind}.forward computes: log or sqrt of values <= 0, division by "
        "zero, exp() overflow, a mask of -inf over a whole row; run that step inside "
        "gradlens.trace(model) to see the exact op",
    )


def _given(c: ModuleCall, step: StepRecord) -> Diagnostic:
    return Diagnostic(
        kind="nan-input",
        message=(
            f"step {step.step}: the first module call that saw a nan/inf, {_name(c)}{_at(c)}, "
            "was given it in its inputs, and no module made one from finite values: it came "
            "from the data, or from code outside every module, not from a module"
        ),
        severity=Severity.ERROR,
        name=c.module or c.kind,
        step=step.step,
        source=c.source,
        fix="check the batch (torch.isfinite(x).all()) and the code that prepares it before "
        "the model (normalisation by a zero std, log of raw values, missing values as nan)",
    )


def _broken_params(c: ModuleCall, step: StepRecord) -> Diagnostic:
    return Diagnostic(
        kind="nan-input",
        message=(
            f"step {step.step}: the parameters or buffers of {_name(c)} already held a nan/inf "
            "before this step's forward: an earlier update (or a running statistic) made them so"
        ),
        severity=Severity.ERROR,
        name=c.module or c.kind,
        step=step.step,
        source=c.source,
        fix="look at the steps before this one: a learning rate too high, Adam's eps=0, a "
        "hand-written update dividing by zero",
    )


def _after_modules(step: StepRecord) -> Diagnostic:
    return Diagnostic(
        kind="nan-origin",
        message=(
            f"step {step.step}: every watched module's inputs and outputs were finite "
            f"({step.forward_calls} calls probed): the nan/inf was made after them, in the loss "
            "computation or in backward"
        ),
        severity=Severity.ERROR,
        step=step.step,
        fix="look at the loss (log of 0, division by a zero count) and at ops whose gradient is "
        "not finite where their value is (sqrt or norm at 0, pow with a fractional exponent at "
        "0); gradlens.trace() on that step shows the first non-finite gradient",
    )
