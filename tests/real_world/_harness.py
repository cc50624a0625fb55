"""The "do no harm" harness: one real-world program, run plainly and under every recorder.

A case is a function ``run(rec: Rec) -> Outcome``. It builds everything it uses itself (models
from a fixed seed), opens ``rec(model, opt)`` around the code a user would wrap, and puts in the
``Outcome`` what the program produced: tensors (compared with ``torch.equal``, dtype, shape and
layout), the exception it raised (type and message) and counters it measured (forward re-runs,
hook calls, FLOPs, op logs, hooks left on its modules and optimizers, weakrefs still alive).

``Rec`` is one of five ways to run it: ``plain`` (a null context), ``watch``
(``gradlens.watch(model, opt)``, or ``gradlens.watch()`` when the case passes neither),
``guard_verify`` (``gradlens.guard(verify=True)``), ``guard_strict``
(``gradlens.guard(mode="strict")``) and ``trace`` (``gradlens.trace(model)``). After the run,
``Rec.findings`` are what the recorder reported, as ``(kind, source)`` pairs.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.modules.module as _module_mod
import torch.optim.optimizer as _optim_mod
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

import gradlens

RECORDERS = ("plain", "watch", "guard_verify", "guard_strict", "trace", "watch_and_guard_verify")
Finding = tuple[str, str | None]  # (kind, "file.py:line")


@dataclass
class Outcome:
    """What one run of a case produced; two runs are compared field by field."""

    tensors: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (qualified type name, message)
    error_frames: list[str] = field(default_factory=list)  # "file.py:line", outermost first
    error_obj: BaseException | None = None
    counters: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def catch(self) -> Iterator[None]:
        """Records (and swallows) an exception raised inside, with the case's line."""
        try:
            yield
        except (Exception, KeyboardInterrupt) as e:  # a Ctrl-C the case raises itself
            self.error = (f"{type(e).__module__}.{type(e).__qualname__}", str(e))
            self.error_obj = e
            self.error_frames = [
                f"{os.path.basename(f.filename)}:{f.lineno}"
                for f in traceback.extract_tb(e.__traceback__)
            ]

    def keep(self, **tensors: Any) -> None:
        """Stores tensors (or lists / dicts of them, or None) to compare."""
        for name, value in tensors.items():
            self.tensors[name] = _snapshot(value)

    def keep_model(self, prefix: str, model: nn.Module) -> None:
        """Stores every parameter and its gradient, and every buffer."""
        for name, p in model.named_parameters():
            self.tensors[f"{prefix}.{name}"] = _snapshot(p)
            self.tensors[f"{prefix}.{name}.grad"] = _snapshot(p.grad)
        for name, b in model.named_buffers():
            self.tensors[f"{prefix}.{name}(buffer)"] = _snapshot(b)


def record_truth(out: Outcome, model: nn.Module) -> None:
    """Records this step's true gradient norm and max |g| per parameter that has a gradient
    (call it just before ``optimizer.step()``, once per step) in ``out.counters["truth"]``:
    ``{param: {field: {step: value}}}``; the test compares watch's records with it."""
    truth = out.counters.setdefault("truth", {})
    step = out.counters.get("truth_steps", 0)
    out.counters["truth_steps"] = step + 1
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad.detach()
            wide = g.to(torch.complex128 if g.is_complex() else torch.float64)
            row = truth.setdefault(name, {"grad_norm": {}, "grad_max": {}})
            row["grad_norm"][step] = float(torch.linalg.vector_norm(wide))
            row["grad_max"][step] = float(g.abs().max())


def _snapshot(value: Any) -> Any:
    """A detached copy (so later writes do not change what was stored), kept structure."""
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    if isinstance(value, torch.Tensor):
        with torch.no_grad():
            if value.is_nested:
                return ("nested", str(value.layout), [_snapshot(t) for t in value.unbind()])
            if value.is_sparse:
                c = value.detach().coalesce()
                return ("sparse", _snapshot(c.indices()), _snapshot(c.values()), tuple(c.shape))
            if value.device.type == "meta":
                return ("meta", str(value.dtype), tuple(value.shape), tuple(value.stride()))
            if value.is_inference():
                return value.clone()
            return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    raise TypeError(f"cannot snapshot {type(value).__name__}")


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Every place two snapshots differ: type, dtype, shape, layout or any bit."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{where}: {type(a).__name__} vs {type(b).__name__}"]
        if (a.dtype, a.shape, a.layout) != (b.dtype, b.shape, b.layout):
            return [f"{where}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"]
        if a.is_complex():
            a, b = torch.view_as_real(a), torch.view_as_real(b)
        # bitwise: NaNs with the same bits are equal, -0.0 differs from 0.0
        if a.dtype.is_floating_point and a.numel():
            bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
            same = torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
        else:
            same = torch.equal(a, b)
        return [] if same else [f"{where}: values differ"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}: keys {sorted(a)} vs {sorted(b)}"] if a.keys() != b.keys() else []
        for k in a.keys() & b.keys():
            out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if differences(x, y)),
                min(len(a), len(b)),
            )
            return [
                f"{where}: length {len(a)} vs {len(b)}, first difference at [{first}]: "
                f"{list(a[first : first + 3])!r} vs {list(b[first : first + 3])!r}"
            ]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += differences(x, y, f"{where}[{i}]")
        return out
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


class Rec:
    """One way to run a case: ``with rec(model, opt):`` opens the recorder (or nothing).

    ``watch_guard`` opens ``watch`` with ``guard(verify=True)`` inside it, as a user running
    ``gradlens run script.py`` on a script that guards its own step does."""

    def __init__(self, kind: str) -> None:
        if kind not in RECORDERS:
            raise ValueError(kind)
        self.kind = kind
        self.objs: list[tuple[str, Any]] = []  # (kind, recorder) of every block opened
        self.opened = 0

    def __call__(
        self,
        model: nn.Module | None = None,
        opt: torch.optim.Optimizer | None = None,
    ) -> contextlib.AbstractContextManager[Any]:
        self.opened += 1
        if self.kind == "plain":
            return contextlib.nullcontext()
        made = []
        for kind in self.kind.split("_and_"):
            if kind == "watch":
                obj = gradlens.watch(model, opt, live=False)
            elif kind == "guard_verify":
                obj = gradlens.guard(verify=True)
            elif kind == "guard_strict":
                obj = gradlens.guard(mode="strict")
            else:
                obj = gradlens.trace(model) if model is not None else gradlens.trace()
            made.append((kind, obj))
        self.objs += made
        return _entered_in_order([obj for _, obj in made])

    @property
    def findings(self) -> list[Finding]:
        """What the recorders reported: diagnostics (watch, trace) or violations (guard)."""
        out: list[Finding] = []
        for kind, obj in self.objs:
            if kind.startswith("guard"):
                out += [(v.kind, v.write_source) for v in obj.violations]
            else:
                out += [(d.kind, d.source) for d in obj.diagnostics]
        return out

    @property
    def notes(self) -> list[str]:
        """What the recorders say they could not do (compiled code, values they skipped, their
        own failures)."""
        out: list[str] = []
        for kind, obj in self.objs:
            out += obj.notes if kind.startswith("guard") else obj.record.notes
        return out


@contextlib.contextmanager
def _entered_in_order(managers: list[Any]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


# -- what a run leaves behind --------------------------------------------------------------


def global_state() -> dict[str, Any]:
    """Process-wide hooks and modes: must be the same before and after every run."""
    names = [n for n in dir(_module_mod) if n.startswith("_global_") and n.endswith("hooks")]
    state: dict[str, Any] = {n: len(getattr(_module_mod, n)) for n in names}
    state["optimizer_pre_hooks"] = len(_optim_mod._global_optimizer_pre_hooks)
    state["optimizer_post_hooks"] = len(_optim_mod._global_optimizer_post_hooks)
    state["torch_function_modes"] = torch._C._len_torch_function_stack()
    state["dispatch_modes"] = len(_get_current_dispatch_mode_stack())
    state["saved_tensors_hooks"] = torch._C._autograd._top_saved_tensors_default_hooks(True)
    state["grad_enabled"] = torch.is_grad_enabled()
    state["inference_mode"] = torch.is_inference_mode_enabled()
    state["anomaly"] = torch.is_anomaly_enabled()
    state["autocast_cpu"] = torch.is_autocast_enabled("cpu")
    state["default_dtype"] = torch.get_default_dtype()
    return state


def local_hooks(*objs: Any) -> dict[str, int]:
    """Hooks left on modules, parameters and optimizers (a counter every case stores)."""
    out: dict[str, int] = {}
    for i, obj in enumerate(objs):
        if isinstance(obj, nn.Module):
            n = 0
            for m in obj.modules():
                for attr in (
                    "_forward_hooks",
                    "_forward_pre_hooks",
                    "_backward_hooks",
                    "_backward_pre_hooks",
                    "_state_dict_hooks",
                    "_load_state_dict_pre_hooks",
                ):
                    n += len(getattr(m, attr, {}))
            for p in obj.parameters():
                n += len(p._backward_hooks or {})
                n += len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
            out[f"hooks[{i}]"] = n
        elif isinstance(obj, torch.optim.Optimizer):
            out[f"hooks[{i}]"] = (
                len(obj._optimizer_step_pre_hooks)
                + len(obj._optimizer_step_post_hooks)
                + len(getattr(obj, "_optimizer_state_dict_pre_hooks", {}))
                + len(getattr(obj, "_optimizer_load_state_dict_pre_hooks", {}))
            )
        elif isinstance(obj, torch.Tensor):
            out[f"hooks[{i}]"] = len(obj._backward_hooks or {})
    return out


def count_alive(refs: list[weakref.ref[Any]]) -> int:
    """How many weakly referenced objects survive a gc pass (the case dropped its own)."""
    gc.collect()
    return sum(r() is not None for r in refs)


def line_of(obj: Any, marker: str) -> int:
    """The number of the one line of ``obj``'s source that ends in ``# marker``."""
    lines, start = inspect.getsourcelines(obj)
    start = max(start, 1)  # a module starts at 0
    hits = [start + i for i, text in enumerate(lines) if text.rstrip().endswith("# " + marker)]
    if len(hits) != 1:
        raise AssertionError(f"{marker!r} found {len(hits)} times in {obj.__name__}")
    return hits[0]


def source_of(obj: Any, marker: str) -> str:
    """``"file.py:line"`` (the file's base name) of the line of ``obj`` ending in ``# marker``."""
    return f"{os.path.basename(inspect.getsourcefile(obj) or '?')}:{line_of(obj, marker)}"


@dataclass(frozen=True)
class Case:
    """One program.

    ``expect[recorder]``: the findings ``(kind, marker)`` it must report, the marker naming the
    line that ends in ``# marker`` (None: any line); every other recorder must find nothing.
    ``write``: the marker of a planted write that breaks backward: ``guard(mode="strict")``
    must raise ``InplaceError`` naming that line, from the line PyTorch raises from (None:
    strict mode must behave exactly as plain). ``unrecorded``: the run has regions gradlens
    cannot see ("torch.compile", "torch.jit.trace"): trace and guard must say so once, in a
    note. ``raises``: a part of the message PyTorch raises when the program runs plainly
    (None: it runs without error).
    """

    name: str
    run: Callable[[Rec], Outcome]
    expect: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)
    write: str | None = None
    unrecorded: str | None = None
    raises: str | None = None


def planted(marker: str, kind: str = "inplace-saved", count: int = 1) -> dict[str, Any]:
    """A planted write at ``# marker`` (of ``count`` saved tensors): guard (both modes) and
    trace report each there, PyTorch raises its saved-tensor error at backward, strict mode
    raises InplaceError instead."""
    found = [(kind, marker)] * count
    return {
        "expect": {"guard_verify": found, "guard_strict": found, "trace": found},
        "write": marker,
        "raises": "modified by an inplace operation",
    }
