"""The training-loop watcher: optimizer step hooks, one gradient hook per parameter, and a small
torch-function mode that sees ``backward()`` roots and loss-function inputs.

It turns a training loop into ``StepRecord``s and ``WatchFact``s without a host-device sync per
parameter per step: statistics are computed on the device (``gradstats``) and kept there as
small tensors until ``flush()`` copies every pending step to the host in one transfer per device.

How a missed ``zero_grad()`` is caught at its first step: after each optimizer step the watcher
notes, per parameter, the ``.grad`` tensor the step used (a weak reference) and its version. A
gradient hook on the parameter fires *before* backward adds to ``.grad``; if ``.grad`` is still
that same tensor at that same version, nothing zeroed it (``zero_grad(set_to_none=False)`` bumps
the version, ``set_to_none=True`` replaces it) and the new gradient is about to be added to the
old one. Several backward calls between two steps (intentional accumulation) are not flagged,
because the step between them is what makes a gradient "used".
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim import Optimizer
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from ..records import ParamInfo, StepRecord, WatchFact
from . import gradstats
from .calls import parse_backward
from .pending import Group, Pending, to_records
from .source import user_source

__all__ = ["DETAIL_EVERY", "Watcher"]

#: By default, detail statistics (zeros, NaN/Inf counts, weight norm, update ratio) are measured
#: on every 25th recorded step: they cost four more passes over every gradient and a copy of
#: the weights, which would be ~20% of an MLP step on CPU if done every step.
DETAIL_EVERY = 25

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
# Ops whose output is a raw score (a logit), never a probability.
_SCORE_NODES = ("Addmm", "Mm", "Bmm", "Matmul", "Linear", "Convolution", "Mv", "Dot")
_BCE_RANGE_ERROR = "all elements of input should be between 0 and 1"


@dataclass
class _Param:
    name: str
    tensor: torch.Tensor
    info: ParamInfo
    got_grad: bool = False  # a gradient arrived since the last step
    used: tuple[weakref.ref[torch.Tensor], int] | None = None  # .grad the last step consumed


class _Mode(TorchFunctionMode):
    """Passes every call through; only backward and the BCE losses reach the watcher."""

    def __init__(self, handlers: dict[Any, Callable[..., Any]]) -> None:
        super().__init__()
        self._handlers = handlers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        handler = self._handlers.get(func)
        if handler is None:
            return func(*args, **(kwargs or {}))
        return handler(func, args, kwargs or {})


class Watcher:
    """Hooks a training loop (``start``/``stop``); ``flush`` returns new records.

    ``named`` maps names to the parameters to watch; ``optimizers`` are hooked directly. With
    ``global_hooks`` every optimizer that steps is adopted at its first step and named through
    the modules seen in forward (``gradlens run script.py``). Without any optimizer, each
    backward call is a step.
    """

    def __init__(
        self,
        named: Mapping[str, torch.Tensor],
        optimizers: Iterable[Optimizer] = (),
        *,
        global_hooks: bool = False,
        every: int = 1,
        detail_every: int = DETAIL_EVERY,
    ) -> None:
        self._params: dict[int, _Param] = {}
        self._order: list[_Param] = []
        self._names = dict(named)
        self._optimizers: list[Optimizer] = list(optimizers)
        self._adopted: set[int] = set()
        self._global = global_hooks
        self._every = every
        self._detail_every = detail_every
        self._handles: list[RemovableHandle] = []
        self._modules: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
        self._mode: _Mode | None = None
        self.steps_seen = 0
        self._recorded = 0
        self._backward_calls = 0
        self._losses: list[torch.Tensor] = []
        self._scalars: dict[str, torch.Tensor | float] = {}
        self._pending: list[Pending] = []
        self._accumulated: list[_Param] = []  # .grad not zeroed, seen in the current backward
        self._open: Pending | None = None  # the step between its pre- and post-hook
        self._stepping = False
        #: Called after every step with the number of recorded steps waiting on the device.
        self.on_step: Callable[[int], None] | None = None
        self._param_infos: list[ParamInfo] = []
        self.facts: list[WatchFact] = []
        self._seen_facts: set[tuple[str, str | None, str | None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Installs the hooks and the mode. ``stop`` removes them."""
        try:
            for name, tensor in self._names.items():
                self._watch_param(name, tensor, in_optimizer=not self._optimizers)
            for opt in self._optimizers:
                self._adopt(opt)
            if self._global:
                self._handles.append(register_optimizer_step_pre_hook(self._on_global_step))
                self._handles.append(
                    torch.nn.modules.module.register_module_forward_pre_hook(self._on_forward)
                )
            handlers: dict[Any, Callable[..., Any]] = {
                torch.Tensor.backward: self._on_backward,
                torch.autograd.backward: self._on_backward,
                F.binary_cross_entropy: self._on_bce,
                F.binary_cross_entropy_with_logits: self._on_bce_logits,
            }
            self._mode = _Mode(handlers)
            self._mode.__enter__()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Removes every hook and the mode, and lets go of the model's tensors."""
        try:
            if self._mode is not None:
                mode, self._mode = self._mode, None
                mode.__exit__(None, None, None)
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._open = None  # a step that raised between its hooks: drop its weight copy
            for p in self._order:
                p.used = None
            self._param_infos = [p.info for p in self._order]
            self._params.clear()
            self._order.clear()
            self._optimizers.clear()
            self._names.clear()

    @property
    def params(self) -> list[ParamInfo]:
        """Returns the watched parameters, in the order they were adopted."""
        if self._order:
            return [p.info for p in self._order]
        return list(self._param_infos)

    def log(self, **scalars: Any) -> None:
        """Keeps scalars (numbers or 0-d tensors, left on their device) for the current step."""
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(
                        f"lens.log({name}=...) takes a number or a one-element tensor, "
                        f"got a tensor of shape {tuple(value.shape)}; log e.g. {name}.mean()"
                    )
                self._scalars[name] = value.detach().reshape(())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self._scalars[name] = float(value)
            else:
                raise ValueError(
                    f"lens.log({name}=...) takes a number or a one-element tensor, "
                    f"got {type(value).__name__}"
                )

    # -- parameters --------------------------------------------------------------------------
    def _watch_param(self, name: str, t: torch.Tensor, *, in_optimizer: bool) -> _Param:
        known = self._params.get(id(t))
        if known is not None:
            return known
        info = ParamInfo(name, tuple(t.shape), t.numel(), t.requires_grad, in_optimizer)
        p = _Param(name, t, info)
        self._params[id(t)] = p
        self._order.append(p)
        if t.requires_grad:
            self._handles.append(t.register_hook(self._grad_hook(p)))
        return p

    def _adopt(self, opt: Optimizer) -> None:
        if id(opt) in self._adopted:
            return
        self._adopted.add(id(opt))
        names = self._names_by_id()
        for g, group in enumerate(opt.param_groups):
            for i, t in enumerate(group["params"]):
                name = names.get(id(t), f"param_groups[{g}][{i}]")
                p = self._watch_param(name, t, in_optimizer=True)
                if not p.info.in_optimizer:
                    p.info = ParamInfo(p.name, p.info.shape, p.info.numel, t.requires_grad, True)
                if not t.requires_grad:
                    self._fact("frozen", self.steps_seen, name, None, "")
        self._handles.append(opt.register_step_pre_hook(self._on_step_pre))
        self._handles.append(opt.register_step_post_hook(self._on_step_post))

    def _names_by_id(self) -> dict[int, str]:
        """Returns names for tensors: the given ones, then those of the modules seen in forward.

        A parameter shared by nested modules is named from the module holding the most
        parameters (the outermost model), rooted at its class name.
        """
        out = {id(t): name for name, t in self._names.items()}
        given = set(out)
        best: dict[int, int] = {}
        for module in list(self._modules):
            named = list(module.named_parameters())
            for pname, t in named:
                if id(t) in given:
                    continue
                if len(named) > best.get(id(t), -1):
                    best[id(t)] = len(named)
                    out[id(t)] = f"{type(module).__name__}.{pname}"
        return out

    def _grad_hook(self, p: _Param) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            old = p.tensor.grad
            if old is None:
                p.used = None  # fresh .grad: what a step used earlier is gone
            elif p.used is not None and p.used[0]() is old and old._version == p.used[1]:
                self._accumulated.append(p)  # reported when this backward returns
            p.got_grad = True

        return hook

    # -- backward and losses (the mode) ------------------------------------------------------
    def _on_backward(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        roots_l = parse_backward(func, args, kwargs).roots
        out = func(*args, **kwargs)
        self._backward_calls += 1
        for r in roots_l:
            if r.numel() == 1:
                self._losses.append(r.detach().reshape(()))
        accumulated, self._accumulated = self._accumulated, []
        if accumulated:  # rare: name the parameters in their model order, not engine order
            position = {id(p): i for i, p in enumerate(self._order)}
            accumulated.sort(key=lambda p: position[id(p)])
            self._fact(
                "grad-accumulation",
                self.steps_seen,
                accumulated[0].name,
                user_source(),  # still the caller's frame: the backward() line
                ", ".join(p.name for p in accumulated),
            )
        if not self._optimizers and not self._global:  # no optimizer: each backward is a step
            self._begin_step(self._order, lr=None)
            self._end_step(self._order)
        return out

    def _on_bce(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0] if args else kwargs.get("input")
        producer = _producer(x)
        if producer is not None and producer.startswith(_SCORE_NODES):
            self._fact(
                "loss-input",
                self.steps_seen,
                None,
                user_source(),
                f"BCELoss got raw scores (made by {producer}), not probabilities",
            )
        try:
            return func(*args, **kwargs)
        except RuntimeError as e:
            if _BCE_RANGE_ERROR in str(e):
                self._fact(
                    "loss-input",
                    self.steps_seen,
                    None,
                    user_source(),
                    "BCELoss got values outside [0, 1]",
                )
            raise  # PyTorch's own error, unchanged

    def _on_bce_logits(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0] if args else kwargs.get("input")
        producer = _producer(x)
        if producer is not None and producer.startswith("Sigmoid"):
            self._fact(
                "loss-input",
                self.steps_seen,
                None,
                user_source(),
                "BCEWithLogitsLoss got sigmoid outputs (a double sigmoid)",
            )
        return func(*args, **kwargs)

    def _on_forward(self, module: torch.nn.Module, args: Any) -> None:
        self._modules.add(module)

    def _fact(
        self, kind: Any, step: int, param: str | None, source: str | None, detail: str
    ) -> None:
        key = (kind, param if kind != "loss-input" else detail, source)
        if key in self._seen_facts:
            return
        self._seen_facts.add(key)
        self.facts.append(WatchFact(kind, step, param, source, detail))

    # -- optimizer steps ---------------------------------------------------------------------
    def _on_global_step(self, opt: Optimizer, args: Any, kwargs: Any) -> None:
        if id(opt) not in self._adopted:
            self._optimizers.append(opt)
            self._adopt(opt)
            # Adopted now, after this step's backward ran: read who has a gradient directly.
            for group in opt.param_groups:
                for t in group["params"]:
                    p = self._params[id(t)]
                    p.got_grad = p.got_grad or t.grad is not None
            self._on_step_pre(opt, args, kwargs)

    def _on_step_pre(self, opt: Optimizer, args: Any, kwargs: Any) -> None:
        if self._stepping:  # already begun by the global hook this step
            return
        members = [self._params[id(t)] for g in opt.param_groups for t in g["params"]]
        self._begin_step(members, lr=opt.param_groups[0].get("lr") if opt.param_groups else None)

    def _on_step_post(self, opt: Optimizer, args: Any, kwargs: Any) -> None:
        members = [self._params[id(t)] for g in opt.param_groups for t in g["params"]]
        self._end_step(members)

    def _begin_step(self, members: list[_Param], lr: Any) -> None:
        with _own_ops():
            self._begin(members, lr)

    def _end_step(self, members: list[_Param]) -> None:
        with _own_ops():
            self._end(members)
        if self.on_step is not None:
            self.on_step(len(self._pending))

    def _begin(self, members: list[_Param], lr: Any) -> None:
        self._stepping = True
        step = self.steps_seen
        missing = tuple(p.name for p in members if p.info.requires_grad and not p.got_grad)
        pending: Pending | None = None
        if step % self._every == 0:
            detail = self._detail_every > 0 and self._recorded % self._detail_every == 0
            pending = Pending(step, missing, detail=detail, backward_calls=self._backward_calls)
            with_grad = [p for p in members if p.got_grad and p.tensor.grad is not None]
            by_device: dict[torch.device, list[_Param]] = {}
            for p in with_grad:
                by_device.setdefault(p.tensor.device, []).append(p)
            with torch.no_grad():
                for group in by_device.values():
                    pending.groups.append(self._group_stats(group, detail))
            if isinstance(lr, torch.Tensor):
                pending.lr = lr.detach().reshape(())
            elif isinstance(lr, (int, float)):
                pending.lr = float(lr)
            scalars = dict(self._scalars)
            logged = scalars.pop("loss", None)  # lens.log(loss=...) wins over the roots
            pending.loss = logged if logged is not None else _sum(self._losses)
            pending.scalars = scalars
            self._recorded += 1
        elif missing:  # not recorded, but a parameter without a gradient is still news
            self._pending.append(Pending(step, missing))
        self._open = pending
        self._losses = []
        self._scalars = {}
        self._backward_calls = 0

    def _group_stats(self, group: list[_Param], detail: bool) -> Group:
        grads = [p.tensor.grad for p in group]
        weights = [p.tensor for p in group]
        out = Group([p.name for p in group], [p.info.numel for p in group], torch.zeros(0))
        out.light = gradstats.light_stats(grads)  # type: ignore[arg-type]
        if detail:
            out.detail = gradstats.detail_stats(grads, weights)  # type: ignore[arg-type]
            if self._optimizers:
                out.snapshot = gradstats.clone_weights(weights)
        return out

    def _end(self, members: list[_Param]) -> None:
        pending, self._open = self._open, None
        if pending is not None:
            by_name = {p.name: p.tensor for p in members}
            for group in pending.groups:
                if group.snapshot is not None:
                    with torch.no_grad():
                        after = [by_name[n] for n in group.names]
                        group.update = gradstats.update_sumsq(group.snapshot, after)
                    group.snapshot = None
            self._pending.append(pending)
        for p in members:
            grad = p.tensor.grad
            p.used = None if grad is None else (weakref.ref(grad), grad._version)
            p.got_grad = False
        self.steps_seen += 1
        self._stepping = False

    # -- to the host -------------------------------------------------------------------------
    def flush(self) -> list[StepRecord]:
        """Copies every pending step to the host (one transfer per device) as StepRecords."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        return to_records(pending)


def _own_ops() -> Any:
    """Returns a context in which gradlens's own tensor ops skip every torch-function mode
    (its own and the user's): they are bookkeeping, not the user's computation."""
    return torch._C.DisableTorchFunction()


def _sum(losses: list[torch.Tensor]) -> torch.Tensor | None:
    if not losses:
        return None
    return losses[0] if len(losses) == 1 else torch.stack(losses).sum()


def _producer(x: Any) -> str | None:
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
