"""Training-loop findings: from the watcher's facts and step records to ``Diagnostic``s.

``TrainingChecks`` is fed steps and facts as they reach the host and returns only the findings
that are new, so a live view can show them as they appear. Each finding is reported once per
parameter (once per line for loss inputs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..records import Diagnostic, Severity, StepRecord, WatchFact
from .distributed import RANK_FACTS, rank_finding
from .nan_origin import nonfinite_step, origin_finding

__all__ = ["EXPLODING_NORM", "NO_GRAD_STEPS", "PATIENCE", "VANISHING_NORM", "TrainingChecks"]

#: A parameter's gradient norm below this on ``PATIENCE`` recorded steps in a row is vanishing.
VANISHING_NORM = 1e-7
#: A parameter's gradient norm above this on ``PATIENCE`` recorded steps in a row is exploding.
EXPLODING_NORM = 1e3
#: How many recorded steps in a row a norm must stay past a threshold.
PATIENCE = 5
#: How many of an optimizer's steps in a row a parameter must miss its gradient for a finding
#: while watching (a parameter used on some steps only, such as a mixture-of-experts expert no
#: token picked, misses one now and then); at the end, one that never had any is reported.
NO_GRAD_STEPS = 3

_ZERO_GRAD_FIX = (
    "call optimizer.zero_grad() (or model.zero_grad()) once per step, before loss.backward(); "
    "to accumulate on purpose, call backward() several times between two optimizer steps"
)


class TrainingChecks:
    """Turns facts and steps into findings, incrementally (``feed_*`` return the new ones)."""

    def __init__(self) -> None:
        self._reported: set[tuple[str, str | None]] = set()
        self._runs: dict[tuple[str, str], int] = {}  # (kind, param) -> steps in a row
        # (optimizer, param) -> (first, last, count) of the steps in a row it got no gradient
        # (steps in a row by number: every step a parameter misses its gradient arrives as a
        # record, recorded or not, so a gap in the numbers is a step it had one)
        self._missed: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._had: set[str] = set()  # parameters that had a gradient on a recorded step
        self._first: dict[str, int] = {}  # optimizer -> its first step seen
        self._last: dict[str, int] = {}  # optimizer -> its last step seen

    def feed_facts(self, facts: Iterable[WatchFact]) -> list[Diagnostic]:
        """Returns the findings that ``facts`` (seen while training) add."""
        out: list[Diagnostic] = []
        for fact in facts:
            diagnostic = _from_fact(fact)
            key = (fact.kind, fact.param if fact.kind != "loss-input" else fact.source)
            if key not in self._reported:
                self._reported.add(key)
                out.append(diagnostic)
        return out

    def feed_steps(self, steps: Iterable[StepRecord]) -> list[Diagnostic]:
        """Returns the findings that ``steps`` (in order) add."""
        out: list[Diagnostic] = []
        for step in steps:
            out.extend(self._step(step))
        return out

    def _once(self, kind: str, param: str | None) -> bool:
        if (kind, param) in self._reported:
            return False
        self._reported.add((kind, param))
        return True

    def finish(self) -> list[Diagnostic]:
        """Returns the findings only the end can tell: parameters that got no gradient on any
        step their optimizer took (fewer than ``NO_GRAD_STEPS``)."""
        out: list[Diagnostic] = []
        for (opt, name), (first, last, count) in self._missed.items():
            whole = first == self._first.get(opt) and last == self._last.get(opt)
            if whole and name not in self._had and self._once("no-grad", name):
                out.append(_no_grad(name, first, count, had=False, since_first=True))
        return out

    def _step(self, step: StepRecord) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        opt = step.optimizer
        self._first.setdefault(opt, step.step)
        self._last[opt] = max(self._last.get(opt, step.step), step.step)
        self._had.update(step.grads)
        for name in step.grads:
            self._missed.pop((opt, name), None)
        for name in step.missing:
            first, last, count = self._missed.get((opt, name), (step.step, step.step - 1, 0))
            if last != step.step - 1:  # it had a gradient in between: a new run
                first, count = step.step, 0
            self._missed[(opt, name)] = (first, step.step, count + 1)
            if count + 1 >= NO_GRAD_STEPS and self._once("no-grad", name):
                had, since_first = name in self._had, first == self._first[opt]
                out.append(_no_grad(name, first, count + 1, had=had, since_first=since_first))
        if step.forward_calls and nonfinite_step(step) and self._once("nan-origin", None):
            origin = origin_finding(step)  # watch(nan_origin=True): the first one only
            out += [origin] if origin is not None else []
        for name, stats in step.grads.items():
            if stats.nonfinite:
                kind = "nan-grad" if math.isnan(stats.grad_max) else "inf-grad"
                if self._once("non-finite", None):  # the first one is the one to chase
                    out.append(_nonfinite(kind, name, step))
                continue
            for kind, past in (
                ("vanishing", stats.grad_norm < VANISHING_NORM),
                ("exploding", stats.grad_norm > EXPLODING_NORM),
            ):
                run = self._runs.get((kind, name), 0) + 1 if past else 0
                self._runs[(kind, name)] = run
                if run == PATIENCE and self._once(kind, name):
                    out.append(_norm_finding(kind, name, step.step, stats.grad_norm))
        return out


def _from_fact(fact: WatchFact) -> Diagnostic:
    if fact.kind in RANK_FACTS:  # torch.distributed: analysis/distributed.py
        return rank_finding(fact)
    if fact.kind == "grad-accumulation":
        names = fact.detail or fact.param or "a parameter"
        who = _who(fact.optimizer)
        return Diagnostic(
            kind="grad-accumulation",
            message=(
                f"{who}step {fact.step} was about to use the .grad of {names}, which still "
                f"held the gradient its step {fact.step - 1} used, with backward's new one "
                "added on top: zero_grad() was not called between the two steps, so gradients "
                "pile up and every update is too large"
            ),
            severity=Severity.ERROR,
            name=fact.param,
            step=fact.step,
            source=fact.source,
            fix=_ZERO_GRAD_FIX,
        )
    if fact.kind == "frozen":
        return Diagnostic(
            kind="frozen",
            message=(
                f"{fact.param} is in the optimizer but has requires_grad=False"
                + (f" from step {fact.step} on" if fact.step > 0 else "")
                + ": it gets no gradient, so the optimizer does not change it"
            ),
            severity=Severity.INFO,
            name=fact.param,
            step=fact.step,
            source=fact.source,
            fix="leave it out of the optimizer if it is frozen on purpose, or set "
            "requires_grad_(True) to train it",
        )
    if fact.kind == "loss-input":
        double = "sigmoid" in fact.detail
        return Diagnostic(
            kind="loss-input",
            message=f"step {fact.step}: {fact.detail}",
            severity=Severity.ERROR,
            step=fact.step,
            source=fact.source,
            fix=(
                "BCEWithLogitsLoss applies the sigmoid itself: pass it the raw scores (drop the "
                "sigmoid), or keep the sigmoid and use BCELoss"
                if double
                else "BCELoss needs probabilities in [0, 1]: apply torch.sigmoid first, or "
                "pass the raw scores to BCEWithLogitsLoss (more stable)"
            ),
        )
    return _no_grad(fact.param or "a parameter", fact.step, 1, had=False, since_first=False)


def _who(optimizer: str) -> str:
    """Names the optimizer in a message, for steps that belong to one (``"Adam: "``)."""
    if not optimizer:
        return ""
    return "the hand-written update's " if optimizer == "manual" else f"{optimizer}'s "


def _no_grad(name: str, step: int, steps: int, *, had: bool, since_first: bool) -> Diagnostic:
    """``name`` got no gradient on ``steps`` steps in a row from ``step``; ``had``: it had one
    on an earlier recorded step; ``since_first``: ``step`` is its optimizer's first."""
    span = f"at step {step}" if steps == 1 else f"on {steps} steps in a row from step {step}"
    if had:
        message = (
            f"{name} requires grad and had a gradient before, but got none {span}: its path "
            "to the loss was cut from then on (detach(), .data, no_grad, an integer op), or it "
            "is used on some steps only (an expert no token picked, a branch not taken)"
        )
    else:
        message = (
            f"{name} requires grad but got no gradient {span}"
            + (" (every step so far)" if steps > 1 and since_first else "")
            + ": it is not used in the loss, or its path to the loss was cut (detach(), .data, "
            "no_grad, an integer op), or it is used on some steps only (an expert no token "
            "picked, a branch not taken)"
        )
    return Diagnostic(
        kind="no-grad",
        message=message,
        severity=Severity.WARNING,
        name=name,
        step=step,
        fix="run one step inside `with gradlens.trace(model):` and call "
        "gradlens.explain(loss, params=model): it names the line where the path was cut; or "
        "freeze it with requires_grad_(False) if that is intended",
    )


def _nonfinite(kind: str, name: str, step: StepRecord) -> Diagnostic:
    what = "NaN" if kind == "nan-grad" else "infinite"
    loss = "" if step.loss is None else f" (the loss was {step.loss:.4g})"
    return Diagnostic(
        kind=kind,
        message=(
            f"step {step.step}: the first {what} gradient, in {name}{loss}; every update "
            "after this spreads it into the weights"
        ),
        severity=Severity.ERROR,
        name=name,
        step=step.step,
        fix="run that step inside gradlens.trace() to see the first op whose output was not "
        "finite; common causes are log(0), division by zero, and a learning rate too high",
    )


def _norm_finding(kind: str, name: str, step: int, norm: float) -> Diagnostic:
    if kind == "vanishing":
        message = (
            f"{name}: gradient norm below {VANISHING_NORM:g} for {PATIENCE} recorded steps in "
            f"a row (now {norm:.3g}, at step {step}): it has almost stopped learning"
        )
        fix = "check for saturated activations (sigmoid/tanh), dead ReLUs, or a tiny loss scale"
    else:
        message = (
            f"{name}: gradient norm above {EXPLODING_NORM:g} for {PATIENCE} recorded steps in "
            f"a row (now {norm:.3g}, at step {step})"
        )
        fix = "lower the learning rate, clip gradients (torch.nn.utils.clip_grad_norm_), or "
        fix += "check that zero_grad() is called every step"
    return Diagnostic(
        kind=kind, message=message, severity=Severity.WARNING, name=name, step=step, fix=fix
    )
