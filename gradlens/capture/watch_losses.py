"""What the watcher needs to judge a loss function's input: the op that made a tensor.

``producer`` looks through views and copies to the op that made a tensor, so that the watcher
can tell raw scores (a linear or conv output) from probabilities when they reach a BCE loss.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["BCE_RANGE_ERROR", "SCORE_NODES", "producer"]

# Nodes that only reshape or select: looked through to find the op that made a loss input.
_VIEW_NODES = (
    "View",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Permute",
    "Transpose",
    "T",
    "Expand",
    "Select",
    "Slice",
    "Clone",
    "ToCopy",
    "Alias",
    "Flatten",
)
#: Ops whose output is a raw score (a logit), never a probability.
SCORE_NODES = ("Addmm", "Mm", "Bmm", "Matmul", "Linear", "Convolution", "Mv", "Dot")
#: PyTorch's own message when BCELoss gets a value outside [0, 1].
BCE_RANGE_ERROR = "all elements of input should be between 0 and 1"


def producer(x: Any) -> str | None:
    """Returns the grad_fn name of the op that made ``x``, looking through views and copies."""
    if not isinstance(x, torch.Tensor):
        return None
    fn = x.grad_fn
    for _ in range(16):
        if fn is None:
            return None
        name = fn.name()
        if not name.startswith(_VIEW_NODES):
            return name
        nxt = [f for f, _ in fn.next_functions if f is not None]
        fn = nxt[0] if len(nxt) == 1 else None
    return None
