"""Where a watch keeps its per-step numbers on the device until the batched host copy.

Each step's statistics are small tensors (a few dozen numbers). Kept as tensors of their own
until a flush, every step would leave a few small allocations alive between the large,
short-lived ones of the training step (activations, gradients). On the CPU, glibc's allocator
then cannot reuse or merge the freed large blocks: the heap grows and is trimmed again every
step, and the step pays ~1,000 fresh page faults (measured on the MLP 4x1024 of
``benchmarks/watch_overhead.py``: ~3 % of its step). So ``Stash.put`` copies a step's numbers
into one preallocated float64 buffer per device (a device-side copy: no host sync) and the
step keeps only a ``Slot``; ``Stash.take`` copies each device's used prefix to the host in one
transfer and reuses the buffers from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Slot", "Stash", "Taken"]

_FIRST = 4096  # elements in a device's first buffer (32 KiB); doubled when full


@dataclass(frozen=True, slots=True)
class Slot:
    """Where ``Stash.put`` left a tensor's values: ``numel`` numbers from ``start`` on
    ``device``, in the stash's ``generation`` (the take that will read them)."""

    device: torch.device
    start: int
    numel: int
    scalar: bool  # a 0-d tensor: read back as one float, not a list
    generation: int


@dataclass(frozen=True)
class Taken:
    """One take's host copies: each device's numbers, for the slots of ``generation``."""

    generation: int
    values: dict[torch.device, list[float]]

    def read(self, slot: Slot) -> float | list[float]:
        """Returns the slot's numbers (one float for a 0-d tensor)."""
        if slot.generation != self.generation:
            raise RuntimeError("gradlens internal error: a stash slot read after its take")
        values = self.values[slot.device]
        if slot.scalar:
            return values[slot.start]
        return values[slot.start : slot.start + slot.numel]

    def value(self, part: Any) -> Any:
        """Returns ``part`` read if it is a slot, else ``part`` itself (a number kept as is)."""
        return self.read(part) if isinstance(part, Slot) else part


class Stash:
    """Per-device float64 buffers, filled by ``put`` and emptied by ``take``."""

    def __init__(self) -> None:
        self._buffers: dict[torch.device, torch.Tensor] = {}
        self._used: dict[torch.device, int] = {}
        self.generation = 0

    def put(self, t: torch.Tensor) -> Slot:
        """Copies ``t``'s values (as float64) into its device's buffer; returns where."""
        flat = t.detach().reshape(-1)
        device, n = flat.device, flat.numel()
        start = self._used.get(device, 0)
        buffer = self._buffers.get(device)
        if buffer is None or start + n > buffer.numel():
            buffer = self._grow(device, start + n)
        buffer[start : start + n].copy_(flat)
        self._used[device] = start + n
        return Slot(device, start, n, t.dim() == 0, self.generation)

    def _grow(self, device: torch.device, needed: int) -> torch.Tensor:
        old = self._buffers.get(device)
        size = max(_FIRST, old.numel() if old is not None else 0)
        while size < needed:
            size *= 2
        with torch.inference_mode(False):  # a normal tensor: written in and out of that mode
            buffer = torch.empty(size, dtype=torch.float64, device=device)
        used = self._used.get(device, 0)
        if old is not None and used:
            buffer[:used].copy_(old[:used])
        self._buffers[device] = buffer
        return buffer

    def take(self) -> Taken:
        """Returns every number put since the last take (one host copy per device) and
        starts the buffers over; slots from before are no longer readable."""
        values = {
            device: self._buffers[device][:used].cpu().tolist()
            for device, used in self._used.items()
            if used
        }
        taken = Taken(self.generation, values)
        self._used = {}
        self.generation += 1
        return taken

    def clear(self) -> None:
        """Lets go of the buffers."""
        self._buffers.clear()
        self._used.clear()
        self.generation += 1
