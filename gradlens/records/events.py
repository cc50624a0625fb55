"""What happened while a trace was recording, in order: forward ops, backward calls, gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from .tensors import TensorRef
from .values import ValueSummary

__all__ = ["BackwardEvent", "ErrorEvent", "Event", "GradEvent", "OpEvent"]


@dataclass(frozen=True)
class OpEvent:
    """A tensor op the forward pass ran (``torch.mul``, ``Tensor.add_``, ``F.linear``, ...).

    ``inputs`` carry each tensor's version before the op, ``outputs`` after it, so an in-place
    op shows the same name on both sides with the version bumped. Reads that leave autograd are
    ops too: host reads (``item``, ``tolist``, ``numpy``, ``__float__``, ``__int__``,
    ``__bool__``, ``__index__``) have no outputs, and attribute reads are named after the
    attribute (``data``, ``T``).
    """

    index: int
    op: str
    inputs: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]
    inplace: bool = False
    source: str | None = None
    module: str | None = None
    node: str | None = None  # graph node id of the output's grad_fn
    grad_enabled: bool = True  # torch.is_grad_enabled() when the op ran (False under no_grad)
    inference_mode: bool = False  # torch.is_inference_mode_enabled() when the op ran
    #: A number argument was NaN or infinite (masked_fill(mask, float("-inf"))): the op's
    #: non-finite output is the user's own constant, not a computation gone wrong.
    nonfinite_constant: bool = False
    kind: Literal["op"] = "op"


@dataclass(frozen=True)
class BackwardEvent:
    """A call of ``backward()`` / ``torch.autograd.backward`` / ``torch.autograd.grad``.

    ``gradient`` holds the ``grad_tensors`` / ``gradient=`` / ``grad_outputs`` weights given
    (None where the default of ones was used). ``error`` is PyTorch's message if the call raised.
    """

    index: int
    call: str  # "backward" or "grad"
    pass_index: int  # 0 for the first backward-type call of the trace, then 1, 2, ...
    roots: tuple[str, ...]  # names of the tensors differentiated
    gradient: tuple[ValueSummary | None, ...] = ()
    inputs: tuple[str, ...] = ()  # for autograd.grad: the tensors differentiated against
    results: tuple[ValueSummary | None, ...] = ()  # for autograd.grad: what it returned
    retain_graph: bool = False
    create_graph: bool = False
    source: str | None = None
    error: str | None = None
    kind: Literal["backward"] = "backward"
    # The root is ``GradScaler.scale(loss)`` (AMP): gradients that overflow are the scaler
    # at work (it skips the step and lowers the scale), not a bug.
    grad_scaler: bool = False


@dataclass(frozen=True)
class GradEvent:
    """A gradient arriving at an autograd node during a backward pass, in engine order.

    For a leaf (``AccumulateGrad``), ``leaf`` names the tensor and ``accumulated`` is its
    ``.grad`` right after this gradient was added to it.
    """

    index: int
    pass_index: int
    node: str  # graph node id
    node_name: str  # "MulBackward0", "AccumulateGrad"
    grads: tuple[ValueSummary | None, ...]
    leaf: str | None = None
    accumulated: ValueSummary | None = None
    kind: Literal["grad"] = "grad"


@dataclass(frozen=True)
class ErrorEvent:
    """An op that raised inside the trace (for example an in-place op on a leaf)."""

    index: int
    op: str
    error: str
    inputs: tuple[TensorRef, ...] = ()
    source: str | None = None
    module: str | None = None
    kind: Literal["error"] = "error"


Event = Union[OpEvent, BackwardEvent, GradEvent, ErrorEvent]
