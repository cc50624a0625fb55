"""Training-loop records: one ``StepRecord`` per recorded optimizer step, and the facts the
watcher noticed on the way (``WatchFact``). ``WatchRecord`` is a finished run, ready to save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .diagnostics import Diagnostic

__all__ = [
    "FactKind",
    "ModuleCall",
    "ParamInfo",
    "ParamStats",
    "StepRecord",
    "WatchFact",
    "WatchRecord",
]


@dataclass(frozen=True)
class ParamInfo:
    """A watched parameter: its dotted name, shape, and whether it asks for a gradient."""

    name: str
    shape: tuple[int, ...]
    numel: int
    requires_grad: bool = True
    in_optimizer: bool = True


@dataclass(frozen=True, slots=True)
class ParamStats:
    """One parameter's gradient in one step, computed on its device and copied over in a batch.

    The first five fields are measured on every recorded step. The rest cost a pass over the
    tensor each (and ``update_ratio`` a copy of the weights), so they are measured on *detail*
    steps only (``watch(detail_every=...)``) and are ``None`` on the others.
    """

    grad_norm: float  # L2 norm of .grad
    grad_mean: float
    grad_std: float  # population std from the float32 sum and sum of squares (to ~1e-3 RMS)
    grad_max: float  # max |g|: nan if any element is nan, inf if any is infinite
    nonfinite: bool  # some element is nan or infinite
    zero_frac: float | None = None  # fraction of elements exactly 0
    nan: int | None = None  # number of nan elements
    inf: int | None = None  # number of infinite elements
    weight_norm: float | None = None  # L2 norm of the parameter before the step
    update_ratio: float | None = None  # |w_after - w_before| / |w_before|: the step size


@dataclass(frozen=True)
class ModuleCall:
    """A module call in a step's forward that saw a nan or inf (``watch(nan_origin=True)``).

    ``index`` is the call's place among the step's probed calls, in the order the calls
    returned (a submodule before the module that called it); ``call`` counts this module's
    calls in the step (0: its first). ``params_finite``: its own parameters and buffers.
    """

    module: str  # dotted name in the watched model; "" for the model itself
    kind: str  # the module's class ("Linear")
    index: int
    call: int
    source: str | None  # the user's "file.py:line" that called it
    inputs_finite: bool
    params_finite: bool
    output_finite: bool


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step saw (or one hand-written update, when there is no optimizer).

    ``step`` counts that optimizer's steps from 0 like a ``for step in range(n)`` loop: each
    optimizer has its own count, loss and learning rate. ``grads`` holds the parameters that
    received a gradient since that optimizer's previous step; ``missing`` those that require
    one and got none. ``loss`` sums the backward roots that reached the optimizer's parameters
    since its previous step (a closure optimizer such as LBFGS: the closure's last loss).
    """

    step: int
    grads: dict[str, ParamStats]
    missing: tuple[str, ...] = ()
    loss: float | None = None
    lr: float | None = None  # the first parameter group's learning rate
    backward_calls: int = 1  # backward passes since the previous step
    detail: bool = False  # whether the detail fields were measured
    scalars: dict[str, float] = field(default_factory=dict)  # lens.log(name=value)
    optimizer: str = ""  # which optimizer stepped ("Adam", "Adam#2"; "manual": hand-written)
    # watch(nan_origin=True): module calls probed in this step's forward, whether that was all
    # of them, and the calls that saw a nan or inf (in order).
    forward_calls: int = 0
    forward_complete: bool = True
    forward_nonfinite: tuple[ModuleCall, ...] = ()


FactKind = Literal[
    "grad-accumulation",
    "loss-input",
    "frozen",
    "no-grad",
    "nonfinite-rank",
    "replica-divergence",
    "unused-on-some-ranks",
]


@dataclass(frozen=True)
class WatchFact:
    """Something the watcher saw while it happened, before any numbers reached the host.

    ``grad-accumulation``: an optimizer step was about to use a ``.grad`` that still held the
    gradient its previous step used (nothing reset it in between), with backward's new one on
    top; ``source`` is the backward line that added on top. ``loss-input``: a loss function got
    the wrong kind of input (``detail`` says which).
    ``frozen``: the optimizer holds a parameter that does not require grad.
    Under torch.distributed (``ranks``: the ranks concerned; ``detail``: how, then ``|`` and
    numbers): ``nonfinite-rank``: the first non-finite gradient and the ranks it came from;
    ``replica-divergence``: replicated parameters whose gradients differ between ranks;
    ``unused-on-some-ranks``: a parameter that the backward of only some ranks reached.
    """

    kind: FactKind
    step: int
    param: str | None = None
    source: str | None = None  # the user's "file.py:line"
    detail: str = ""
    optimizer: str = ""  # the optimizer whose step it concerns, if any
    ranks: tuple[int, ...] = ()  # torch.distributed: the ranks it concerns


@dataclass(frozen=True)
class WatchRecord:
    """A finished (or paused) watch: parameters, kept steps, facts and findings.

    Steps are kept at ``stride`` (1, 2, 4, ...) once more than the history limit have been
    recorded, so memory stays bounded; ``total_steps`` counts every step seen.
    """

    params: tuple[ParamInfo, ...]
    steps: tuple[StepRecord, ...]
    facts: tuple[WatchFact, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    every: int = 1
    stride: int = 1
    total_steps: int = 0  # steps seen, all optimizers together
    notes: tuple[str, ...] = ()  # parts the watcher stopped watching after an error of its own
    world_size: int = 1  # ranks whose gradients the steps' statistics combine (torch.distributed)
    rank: int = 0  # the rank that wrote this record
