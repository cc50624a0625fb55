"""Run gradlens's own tensor ops where no user mode sees them.

Inside a torch-function mode's handler, the ops gradlens runs to read a value (``isfinite``,
``tolist``, ``detach``) would still reach the modes below it and every active dispatch mode: a
user's op logger, ``FlopCounterMode``, selective checkpointing. ``quiet()`` turns both off for
the duration, so what the user's modes see is exactly what the user's program did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import _disable_current_modes

__all__ = ["quiet"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Disables torch-function handling and any active dispatch modes inside the block."""
    with torch._C.DisableTorchFunction():
        if torch._C._len_torch_dispatch_stack():
            with _disable_current_modes():
                yield
        else:
            yield
