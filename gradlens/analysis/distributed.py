"""Rank-aware training findings: the facts the watcher's exchange across ranks found, explained.

Pure: ``rank_finding`` turns a ``nonfinite-rank``, ``replica-divergence`` or
``unused-on-some-ranks`` fact (``capture/distributed.py``) into a ``Diagnostic``.
"""

from __future__ import annotations

from ..records import Diagnostic, Severity, WatchFact

__all__ = ["RANK_FACTS", "rank_finding"]

#: The fact kinds only a run under torch.distributed makes.
RANK_FACTS = ("nonfinite-rank", "replica-divergence", "unused-on-some-ranks")


def rank_finding(fact: WatchFact) -> Diagnostic:
    """Returns the finding a rank-aware fact makes."""
    how, _, numbers = fact.detail.partition("|")
    if fact.kind == "nonfinite-rank":
        return _nonfinite(fact, how, numbers)
    if fact.kind == "replica-divergence":
        return _divergence(fact, how, numbers)
    return _unused(fact, how, numbers)


def _ranks(ranks: tuple[int, ...]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return "ranks " + ", ".join(str(r) for r in ranks[:-1]) + f" and {ranks[-1]}"


def _nonfinite(fact: WatchFact, how: str, losses: str) -> Diagnostic:
    who, param = _ranks(fact.ranks), fact.param or "a parameter"
    losses_text = f" (losses: {losses})" if losses else ""
    if how == "own-gradient":
        message = (
            f"step {fact.step}: the first non-finite gradient came from {who}: its own backward "
            f"made a non-finite gradient of {param} before the gradient all-reduce, which then "
            f"spreads it to every rank{losses_text}"
        )
    elif how == "loss":
        message = (
            f"step {fact.step}: the first non-finite gradient came from {who}, whose loss was "
            f"not finite{losses_text}; the gradient all-reduce spreads it to every rank"
        )
    elif how == "shard":
        message = (
            f"step {fact.step}: the first non-finite gradient ({param}) lies in the shard of "
            f"{who}; every rank's loss was finite{losses_text}, and the reduce-scatter adds "
            "all ranks' gradients into each shard, so the rank whose batch made it is not known"
        )
    else:
        message = (
            f"step {fact.step}: the first non-finite gradient ({param}) was on {who} after the "
            f"all-reduce{losses_text}; no rank's loss or own gradient was seen non-finite "
            "before it (each rank's own gradients are checked from its second step on)"
        )
    first = fact.ranks[0] if fact.ranks else 0
    return Diagnostic(
        kind="nonfinite-rank",
        message=message,
        severity=Severity.ERROR,
        name=fact.param,
        step=fact.step,
        fix=f"run step {fact.step} of rank {first} inside gradlens.trace() (for example under "
        f"`if step == {fact.step} and dist.get_rank() == {first}:`) to see the first op whose "
        "output was not finite; common causes are a bad sample in that rank's batch, log(0), "
        "division by zero, and a learning rate too high",
    )


def _divergence(fact: WatchFact, names: str, norms: str) -> Diagnostic:
    return Diagnostic(
        kind="replica-divergence",
        message=(
            f"step {fact.step}: the gradients of {names} differ between "
            f"{_ranks(fact.ranks)} after the gradient all-reduce (norms of {fact.param}: "
            f"{norms}): these replicas are meant to be equal, and their weights now drift apart"
        ),
        severity=Severity.ERROR,
        name=fact.param,
        step=fact.step,
        fix="wrap the model in DistributedDataParallel before creating the optimizer (without "
        "it every rank trains its own copy), and run the same code on every rank between "
        "backward() and step(): no rank-dependent clipping, scaling or editing of .grad, no "
        "parameter left out of DDP",
    )


def _unused(fact: WatchFact, how: str, used: str) -> Diagnostic:
    skipped = len(fact.ranks)
    n_used = int(used) if used.isdigit() else 0
    verb = "its" if skipped == 1 else "their"
    message = (
        f"step {fact.step}: {fact.param} got no gradient from the backward of "
        f"{_ranks(fact.ranks)} ({verb} forward did not use it: a data-dependent branch), while "
        f"the backward of {n_used} other rank{'s' if n_used != 1 else ''} did"
    )
    if how == "filled":
        message += (
            ". DistributedDataParallel(find_unused_parameters=True) filled it in: it averages "
            "zeros in for the ranks that skipped it, so the update of this parameter is scaled "
            f"by the share of ranks that used it ({n_used} of {n_used + skipped})"
        )
    else:
        message += (
            ", so its .grad differs between ranks. Under DistributedDataParallel this needs "
            "find_unused_parameters=True: without it DDP waits for the missing gradient, and "
            "fails at the next iteration ('Expected to have finished reduction in the prior "
            "iteration') or hangs"
        )
    return Diagnostic(
        kind="unused-on-some-ranks",
        message=message,
        severity=Severity.WARNING,
        name=fact.param,
        step=fact.step,
        fix="if the branch is meant, construct DistributedDataParallel(model, "
        "find_unused_parameters=True), or let every rank use the parameter (add 0 * the "
        "branch's output to the loss where it is skipped) so that every rank sends a gradient; "
        "if not, find why those ranks skip it",
    )
