"""Gradient statistics computed on the tensors' own device, with no host synchronisation.

Every function returns device tensors; nothing here calls ``.item()``, ``float()`` or
``.cpu()``. The watcher stacks the results per step and copies them to the host in batches.

Costs (measured on CPU, MLP 4 x 1024, see benchmarks/watch_overhead.py): the light set is three
reductions per gradient (``_foreach_norm``, ``sum``, ``aminmax``); the detail set adds a count
of zeros, of NaNs and of infinities, and a copy of the weights for the update norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["DETAIL", "LIGHT", "clone_weights", "detail_stats", "light_stats", "update_norms"]

#: Rows of ``light_stats``: per gradient.
LIGHT = ("norm", "sum", "min", "max")
#: Rows of ``detail_stats``: per gradient (counts as floats) and the weight norm.
DETAIL = ("nonzero", "nan", "inf", "weight_norm")


def _real(t: torch.Tensor) -> torch.Tensor:
    """Returns ``t`` as a real tensor (complex numbers as pairs of reals)."""
    return torch.view_as_real(t) if t.is_complex() else t


def light_stats(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns a float32 ``(4, len(grads))`` tensor: norm, sum, min and max of each gradient.

    All on the gradients' device (they must share one). Empty gradients give zeros. ``min``
    and ``max`` are nan when an element is nan, so non-finite values are never lost.
    """
    if not grads:
        return torch.zeros(len(LIGHT), 0)
    real = [_real(g.detach()) for g in grads]
    norms = torch._foreach_norm(real)
    sums, lows, highs = [], [], []
    for g in real:
        if g.numel() == 0:
            zero = g.new_zeros((), dtype=torch.float32)
            sums.append(zero)
            lows.append(zero)
            highs.append(zero)
            continue
        lo, hi = torch.aminmax(g)
        sums.append(g.sum(dtype=torch.float32))
        lows.append(lo if lo.dtype == torch.float32 else lo.float())
        highs.append(hi if hi.dtype == torch.float32 else hi.float())
    norm32 = [n if n.dtype == torch.float32 else n.float() for n in norms]
    return torch.stack([*norm32, *sums, *lows, *highs]).view(len(LIGHT), len(real))


def detail_stats(grads: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns a float32 ``(4, len(grads))`` tensor: nonzero, nan and inf counts, weight norm."""
    if not grads:
        return torch.zeros(len(DETAIL), 0)
    real = [_real(g.detach()) for g in grads]
    wnorms = torch._foreach_norm([_real(w.detach()) for w in weights])
    nonzero = [torch.count_nonzero(g) for g in real]
    nans = [torch.isnan(g).sum() for g in real]
    infs = [torch.isinf(g).sum() for g in real]
    counts = torch.stack([*nonzero, *nans, *infs]).view(3, len(real)).float()
    return torch.cat([counts, torch.stack([w.float() for w in wnorms]).view(1, -1)])


def clone_weights(weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Returns detached copies of ``weights`` (the state before an optimizer step)."""
    return [w.detach().clone() for w in weights]


def update_norms(before: list[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns a float32 ``(len(before),)`` tensor of ``|after - before|``; reuses ``before``."""
    if not before:
        return torch.zeros(0)
    torch._foreach_sub_(before, [w.detach() for w in after])
    return torch.stack([n.float() for n in torch._foreach_norm([_real(b) for b in before])])
