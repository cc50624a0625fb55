"""The training-loop watcher: optimizer step hooks, one gradient hook per parameter, and a small
torch-function mode that sees ``backward()`` roots, loss-function inputs, ``.grad`` zeroing and
hand-written parameter updates.

It turns a training loop into ``StepRecord``s and ``WatchFact``s without a host-device sync per
parameter per step: statistics are computed on the device (``gradstats``) and kept there as
small tensors until ``flush()`` copies every pending step to the host in one transfer per device.

Steps belong to an optimizer: each one has its own step count, loss and ``seen`` state, so a GAN's
two optimizers, optimizers that share parameters, and ``add_param_group`` are all told apart.
Without any optimizer, a *hand-written* step is the cycle backward → writes to the parameters
(under ``no_grad`` or through ``.data``) → zeroing, found from the writes.

How a missed ``zero_grad()`` is caught (``grad-accumulation``): each parameter has an *epoch*,
bumped whenever its ``.grad`` is found reset (set to None, replaced, or zeroed in place by
``zero_()``/``_foreach_zero_``/``fill_``/``[...] =``), and a count of the gradients backward
added to it. When an optimizer steps, it is about to use a stale ``.grad`` exactly when the epoch
is the one of its previous step *and* backward added to it since: the new gradient sits on top
of one that step already used. In-place scaling (clipping, AMP's unscale) changes neither, so it
neither hides nor fakes a finding. The backward line that added on top is remembered (as a file
and line number) by the gradient hook; it is formatted only when a finding is made.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim import Optimizer
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.hooks import RemovableHandle

from ..records import ParamInfo, StepRecord, WatchFact
from ..records.histograms import GradHistogram
from . import gradstats
from .calls import parse_backward
from .distributed import Ranks, active, grad_key, is_dtensor, local
from .nan_origin import ForwardChecks, ForwardPending
from .pending import Part, Pending, resolve, stash_part, to_records
from .source import format_location, user_source
from .stash import Stash, Taken
from .step_window import StepWindow, mode_on_top
from .watch_losses import BCE_RANGE_ERROR, SCORE_NODES, producer
from .watch_names import names_in_frames, user_frames
from .watch_state import (
    BackwardCall,
    OptState,
    ParamState,
    RoutingMode,
    group_name,
    group_stats,
    losses_of,
    lr_value,
    own_ops,
    sum_losses,
    user_line,
)

__all__ = ["DETAIL_EVERY", "MANUAL", "Watcher"]

#: By default, detail statistics (zeros, NaN/Inf counts, weight norm, update ratio) are measured
#: on every 25th recorded step: they cost four more passes over every gradient and a copy of
#: the weights, which would be ~20% of an MLP step on CPU if done every step.
DETAIL_EVERY = 25
#: The optimizer label of hand-written steps (no optimizer: writes to the parameters).
MANUAL = "manual"

_MAX_BACKWARDS = 512  # backward calls kept for the loss of an optimizer's next step
_DATA_GET = torch._C.TensorBase.data.__get__  # type: ignore[attr-defined]
_DATA_SET = torch._C.TensorBase.data.__set__  # type: ignore[attr-defined]
_WRITES: tuple[Any, ...] = (
    torch.Tensor.add_,
    torch.Tensor.sub_,
    torch.Tensor.mul_,
    torch.Tensor.div_,
    torch.Tensor.copy_,
    torch.Tensor.addcmul_,
    torch.Tensor.addcdiv_,
    torch.Tensor.lerp_,
    torch.Tensor.clamp_,
    torch.Tensor.__iadd__,
    torch.Tensor.__isub__,
    _DATA_SET,
)
_FOREACH_WRITES: tuple[Any, ...] = (torch._foreach_add_, torch._foreach_sub_, torch._foreach_mul_)
_OptimizedModule = torch._dynamo.eval_frame.OptimizedModule  # torch.compile(model)
_GLOBAL_HOOK_WARNING = r"Using `torch\.compile\(module\)` when there are global hooks"
_ZEROS: tuple[Any, ...] = (torch.Tensor.zero_, torch.Tensor.fill_, torch.Tensor.__setitem__)


class Watcher:
    """Hooks a training loop (``start``/``stop``); ``flush`` returns new records.

    ``named`` maps names to the parameters to watch; ``optimizers`` are hooked directly. With
    ``global_hooks`` every optimizer that steps is adopted at its first step, its parameters
    named after the user's variables (``gradlens run script.py``). Without any optimizer, writes to
    the parameters after a backward make the steps (hand-written updates).
    """

    def __init__(
        self,
        named: Mapping[str, torch.Tensor],
        optimizers: Iterable[Optimizer] = (),
        *,
        global_hooks: bool = False,
        every: int = 1,
        detail_every: int = DETAIL_EVERY,
        external: bool = False,
        model: torch.nn.Module | None = None,
        nan_origin: bool = False,
    ) -> None:
        self._model = model
        self.notes: list[str] = []
        # nan_origin: forward hooks on the model's modules (global ones without a model)
        self._forward = ForwardChecks(model, self.notes) if nan_origin else None
        self._popped: list[bool] = []  # a compiled model's calls: whether the mode was left
        self._hidden: list[tuple[dict[int, Any], int, Any]] = []  # global hooks taken out
        self._gaps: set[int] = set()  # compiled modules given the hook that returns the mode
        self._warning_filter: Any = None
        self._params: dict[int, ParamState] = {}  # id(tensor) -> ParamState
        self._order: list[ParamState] = []
        self._names = dict(named)
        self._used_names: set[str] = set()
        self._given: list[Optimizer] = list(optimizers)
        self._opts: dict[int, OptState] = {}  # id(optimizer) -> OptState, in adoption order
        self._manual: OptState | None = None
        self._global = global_hooks
        self._every = every
        self._detail_every = detail_every
        self._handles: list[RemovableHandle] = []
        self._mode: RoutingMode | None = None
        self._window: StepWindow | None = None
        self._handlers: dict[Any, Callable[..., Any]] = {}  # the mode's, by torch function
        self._started = False
        self.steps_seen = 0
        self._backward_index = 0
        self._backs: list[BackwardCall] = []
        self._current: BackwardCall | None = None
        self._backward_frame: FrameType | None = None
        self._in_grad_call = 0
        self._last_step_backward = 0  # backward count at the last step of any optimizer
        self._scalars: dict[str, Part] = {}  # lens.log's, for the next step (stashed)
        self._pending: list[Pending] = []
        self._stash = Stash()  # the pending steps' numbers, on their devices (capture/stash)
        self._scratch = gradstats.Scratch()  # the detail counts' work buffer, kept between steps
        self._grad_ptrs: dict[int, ParamState] = {}  # data_ptr of a .grad -> its parameter
        self._aliases: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self._off: set[str] = set()  # pieces switched off after an internal error
        #: Called after every step with the number of recorded steps waiting on the device.
        self.on_step: Callable[[int], None] | None = None
        self._param_infos: list[ParamInfo] = []
        self.facts: list[WatchFact] = []
        self._seen_facts: set[tuple[str, str | None, str | None]] = set()
        self._ranks = Ranks(self.facts, self.notes)  # torch.distributed (capture/distributed)
        self._ready: list[StepRecord] = []  # steps combined across ranks, not yet flushed
        self._ready_hists: list[GradHistogram] = []  # their histograms (replicated parameters)
        # Steps a framework announces (gradlens.integrations): no step pre-hook; ``before_step``
        # measures, the step post-hook finishes, ``step_skipped`` drops what never stepped.
        self._external = external
        self._external_open: set[int] = set()  # ids of optimizers measured, not yet stepped
        self._skipped = 0
        #: Sinks' on-device gradient histograms: (bins, range per parameter name); None: none.
        self.histograms: gradstats.HistogramSpec | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Installs the hooks and the mode. ``stop`` removes them."""
        try:
            for name, tensor in self._names.items():
                self._watch_param(tensor, name, in_optimizer=not self._given, late=False)
            for opt in self._given:
                o = self._adopt(opt, late=False)
                self._members(o)
                if not self._external:
                    self._handles.append(opt.register_step_pre_hook(self._on_step_pre))
                self._handles.append(opt.register_step_post_hook(self._on_step_post))
            if self._global or not self._given:  # watch(model) alone: its optimizer, found
                self._handles.append(register_optimizer_step_pre_hook(self._on_step_pre))
                self._handles.append(register_optimizer_step_post_hook(self._on_step_post))
            handlers: dict[Any, Callable[..., Any]] = {
                torch.Tensor.backward: self._on_backward,
                torch.autograd.backward: self._on_backward,
                torch.autograd.grad: self._on_grad,
                F.binary_cross_entropy: self._on_bce,
                F.binary_cross_entropy_with_logits: self._on_bce_logits,
                torch._foreach_zero_: self._on_zero,
            }
            handlers.update(dict.fromkeys(_ZEROS, self._on_zero))
            if not self._opts:  # hand-written updates matter only while no optimizer steps
                handlers[_DATA_GET] = self._on_data
                handlers.update(dict.fromkeys((*_WRITES, *_FOREACH_WRITES), self._on_write))
            self._handlers = handlers
            self._mode = RoutingMode(handlers)
            self._mode.__enter__()
            # An optimizer step without a closure needs none of the mode: leave it out of the
            # step (its every attribute read would be a trip into Python).
            self._window = StepWindow(self._mode)
            self._window.start()
            # Dynamo guards on the torch-function mode stack: leave the mode out of a compiled
            # model's forward (it needs none of it), so no graph is recompiled for it.
            if isinstance(self._model, _OptimizedModule):
                model = self._model
                self._handles.append(model.register_forward_pre_hook(self._leave_mode))
                self._handles.append(
                    model.register_forward_hook(self._return_mode, always_call=True)
                )
            elif self._model is None and self._global:  # gradlens run: any compiled module
                hooks = torch.nn.modules.module
                self._handles.append(hooks.register_module_forward_pre_hook(self._leave_mode))
                # OptimizedModule warns of any global module hook; gradlens's are taken out
                warnings.filterwarnings("ignore", message=_GLOBAL_HOOK_WARNING)
                self._warning_filter = warnings.filters[0]
            if self._forward is not None:
                self._forward.start()
            self._started = True
            if torch.distributed.is_available():  # the last exchange before the group goes
                self._ranks.watch_destroy(self.sync_ranks)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Removes every hook and the mode, and lets go of the model's tensors."""
        try:
            window, self._window = self._window, None
            off = window.stop() if window is not None else False  # a step raised: mode is off
            if self._mode is not None:
                mode, self._mode = self._mode, None
                if not off:
                    mode.__exit__(None, None, None)
        finally:
            self._ranks.stop()
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._popped.clear()
            self._hidden.clear()
            self._gaps.clear()
            if self._warning_filter is not None:
                with contextlib.suppress(ValueError):
                    warnings.filters.remove(self._warning_filter)  # type: ignore[attr-defined]
                warnings._filters_mutated()  # type: ignore[attr-defined]
                self._warning_filter = None
            if self._forward is not None:
                self._forward.stop()
            try:
                if self._manual is not None and self._manual.open is not None:
                    self._finish(self._manual)
            except Exception as e:
                self._broke("hand-written updates", e)
            self._param_infos = [p.info for p in self._order]
            if self._skipped:
                self.notes.append(
                    f"the loss scaler skipped {self._skipped} optimizer step(s) with non-finite "
                    "gradients (AMP lowers its scale and tries again): they count as steps but "
                    "are not recorded, since they never reached the weights"
                )
            for o in [*self._opts.values(), *([self._manual] if self._manual else [])]:
                o.open = None  # a step that raised between its hooks: drop its weight copy
                o.optimizer = None
                o.members = []
                o.stale = []
            self._params.clear()
            self._order.clear()
            self._given.clear()
            self._names.clear()
            self._backs.clear()
            self._current = None
            self._backward_frame = None
            self._grad_ptrs.clear()
            self._aliases.clear()
            self._scalars = {}
            self._scratch = gradstats.Scratch()  # its buffer let go

    @property
    def params(self) -> list[ParamInfo]:
        """Returns the watched parameters, in the order they were adopted."""
        if self._order:
            return [p.info for p in self._order]
        return list(self._param_infos)

    def log(self, **scalars: Any) -> None:
        """Keeps scalars (numbers or 0-d tensors, left on their device) for the next step."""
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    raise ValueError(
                        f"lens.log({name}=...) takes a number or a one-element tensor, "
                        f"got a tensor of shape {tuple(value.shape)}; log e.g. {name}.mean()"
                    )
                with own_ops():
                    self._scalars[name] = self._stash.put(value.detach().reshape(()))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self._scalars[name] = float(value)
            else:
                raise ValueError(
                    f"lens.log({name}=...) takes a number or a one-element tensor, "
                    f"got {type(value).__name__}"
                )

    # -- a torch.compile'd model -------------------------------------------------------------
    def _leave_mode(self, module: torch.nn.Module, args: Any) -> None:
        """Takes the mode off the stack for the compiled forward, if it is on top."""
        if type(module) is not _OptimizedModule:
            return
        top = mode_on_top(self._mode)
        if top:
            torch._C._pop_torch_function_stack()
        self._popped.append(top)
        if len(self._popped) == 1:  # dynamo guards on the number of global module hooks too
            self._hidden = _hide_global_hooks(self._global_handles())
        if self._model is None and id(module) not in self._gaps:  # found by the global hook
            self._gaps.add(id(module))
            self._handles.append(module.register_forward_hook(self._return_mode, always_call=True))

    def _return_mode(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if type(module) is not _OptimizedModule:
            return
        if not self._popped:
            return
        if self._popped.pop() and self._mode is not None:
            torch._C._push_on_torch_function_stack(self._mode)
        if not self._popped:
            hidden, self._hidden = self._hidden, []
            for hooks, key, hook in hidden:
                hooks[key] = hook

    def _global_handles(self) -> list[RemovableHandle]:
        extra = self._forward.handles if self._forward is not None else []
        return [*self._handles, *extra]

    # -- internal errors ---------------------------------------------------------------------
    def _broke(self, piece: str, error: BaseException) -> None:
        """Switches ``piece`` off after an error in gradlens's own code, with a note."""
        if piece not in self._off:
            self._off.add(piece)
            reason = (str(error).strip().splitlines() or [""])[0]
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            what = type(error).__name__
            self.notes.append(f"gradlens stopped watching {piece}: {what}: {reason}")

    # -- parameters --------------------------------------------------------------------------
    def _watch_param(
        self, t: torch.Tensor, name: str, *, in_optimizer: bool, late: bool
    ) -> ParamState:
        known = self._params.get(id(t))
        if known is not None and known.tensor is t:
            return known
        name = self._distinct(name)
        info = ParamInfo(name, tuple(t.shape), t.numel(), t.requires_grad, in_optimizer)
        p = ParamState(len(self._order), t, info)
        self._params[id(t)] = p
        self._order.append(p)
        self._hook(p, late=late)
        return p

    def _distinct(self, name: str) -> str:
        out, n = name, 1
        while out in self._used_names:
            n += 1
            out = f"{name}#{n}"
        self._used_names.add(out)
        return out

    def _hook(self, p: ParamState, *, late: bool) -> None:
        if p.hooked or not p.tensor.requires_grad:
            return
        self._handles.append(p.tensor.register_hook(self._grad_hook(p)))
        p.hooked = True
        p.late = late

    def _adopt(self, opt: Optimizer, *, late: bool) -> OptState:
        o = self._opts.get(id(opt))
        if o is not None and o.optimizer is opt:
            return o
        cls = type(opt).__name__
        same = sum(1 for x in self._opts.values() if x.label.split("#")[0] == cls)
        o = OptState(cls if same == 0 else f"{cls}#{same + 1}", opt, late=late)
        self._opts[id(opt)] = o
        for func in (_DATA_GET, *_WRITES, *_FOREACH_WRITES):  # an optimizer steps from now on:
            self._handlers.pop(func, None)  # writes to parameters are its own, not by hand
        return o

    def _members(self, o: OptState) -> list[ParamState]:
        """Returns the optimizer's parameters as watched ones, adopting any new ones (a group
        added by ``add_param_group``, or the whole optimizer at its first step)."""
        opt = o.optimizer
        assert opt is not None
        key = tuple((id(g["params"]), len(g["params"])) for g in opt.param_groups)
        if key == o.key:
            return o.members
        tensors = [t for g in opt.param_groups for t in g["params"]]
        if not self._global and o.late:  # watch(model) alone: only the model's parameters
            tensors = [t for t in tensors if self._is_watched(t)]
        new = [t for t in tensors if not self._is_watched(t)]
        names = self._new_names(new, opt) if new else {}
        late = o.late or o.steps > 0 or self._backward_index > 0
        members = []
        for t in tensors:
            p = self._params.get(id(t))
            if p is None or p.tensor is not t:
                p = self._watch_param(t, names[id(t)], in_optimizer=True, late=late)
            elif not p.info.in_optimizer:
                info = p.info
                p.info = ParamInfo(info.name, info.shape, info.numel, info.requires_grad, True)
            members.append(p)
        o.key, o.members, o.slots = key, members, {p.slot for p in members}
        return members

    def _is_watched(self, t: torch.Tensor) -> bool:
        p = self._params.get(id(t))
        return p is not None and p.tensor is t

    def _new_names(self, tensors: list[torch.Tensor], opt: Optimizer | None) -> dict[int, str]:
        """Names for tensors not watched yet: the given names, then the user's variables that
        hold them (``watch_names``), and last the optimizer's group and index."""
        given = {id(t): n for n, t in self._names.items()}
        out = {id(t): given[id(t)] for t in tensors if id(t) in given}
        wanted = {id(t): t for t in tensors if id(t) not in out}
        if wanted:
            out.update(names_in_frames(wanted, user_frames(sys._getframe(1))))
        for t in tensors:
            if id(t) not in out:
                out[id(t)] = group_name(t, opt)
        return out

    def _sync(self, p: ParamState, hook: bool = False) -> torch.Tensor | None:
        """Notes a reset ``.grad`` (None, or another tensor than last seen); returns ``.grad``.

        ``hook``: called by the gradient hook, just before backward adds to ``.grad``. A tensor
        that replaced ``.grad`` outside backward (``p.grad = g`` after ``autograd.grad``) is a
        reset *and* a new gradient, since no hook announced it.
        """
        g = p.tensor.grad
        ref = p.grad_ref
        in_backward = hook and self._current is not None
        if g is None:
            if ref is not None:
                p.epoch += 1
                p.reset_at = self._backward_index - in_backward
                p.grad_ref = None
            p.fresh = hook  # backward is about to make this epoch's .grad from None
        elif ref is None or ref() is not g:
            if not p.fresh:
                p.epoch += 1
                p.reset_at = self._backward_index - in_backward
                if not hook:
                    p.adds += 1  # set by hand: a gradient no backward announced
            p.fresh = False
            p.grad_ref = weakref.ref(g)
            if len(self._grad_ptrs) > 4 * len(self._order) + 64:
                self._grad_ptrs.clear()
            # A sparse gradient or a DTensor has no data_ptr: known by its id (by identity).
            self._grad_ptrs[grad_key(g)] = p
        return g

    def _grad_hook(self, p: ParamState) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            if p.broken or self._in_grad_call:
                return
            try:
                g, ref = p.tensor.grad, p.grad_ref
                if g is None or ref is None or ref() is not g:  # else: the .grad last seen
                    self._sync(p, hook=True)
                p.adds += 1
                current = self._current
                if current is not None:
                    current.touched.add(p.slot)
                # Adding on top of a .grad a step already used: remember where, cheaply.
                on_top = p.grad_ref is not None and p.stepped_epoch == p.epoch
                if on_top and (p.stale is None or p.stale[0] != p.epoch):
                    p.stale = (p.epoch, user_line(self._backward_frame))
            except Exception as e:
                p.broken = True
                self._broke(f"the gradient of {p.name}", e)

        return hook

    # -- the mode: backward, loss inputs, zeroing, hand-written updates ------------------------
    def _on_backward(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if "backward calls" not in self._off:
            try:
                if self._manual is not None and self._manual.open is not None:
                    self._finish(self._manual)  # a new backward ends a hand-written step
                with own_ops():  # unseen by a root's own __torch_function__ (a subclass)
                    roots = [r for r in parse_backward(func, args, kwargs).roots if r.numel() == 1]
                    # kept in the stash, not as a tensor (capture/stash)
                    loss = stash_part(
                        self._stash, sum_losses([r.detach().reshape(()) for r in roots])
                    )
                self._backward_index += 1
                self._current = BackwardCall(self._backward_index, loss)
                self._backs.append(self._current)
                if len(self._backs) > _MAX_BACKWARDS:
                    del self._backs[: len(self._backs) - _MAX_BACKWARDS]
                self._backward_frame = sys._getframe()
            except Exception as e:
                self._broke("backward calls", e)
        try:
            return func(*args, **kwargs)
        finally:
            self._current = None
            self._backward_frame = None

    def _on_grad(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``torch.autograd.grad`` fires the parameters' hooks but never touches ``.grad``."""
        self._in_grad_call += 1
        try:
            return func(*args, **kwargs)
        finally:
            self._in_grad_call -= 1

    def _on_zero(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._grad_ptrs and "zeroing" not in self._off:
            try:
                with own_ops():
                    targets = args[0] if func is torch._foreach_zero_ else args[:1]
                    for t in targets:
                        if isinstance(t, torch.Tensor):
                            self._zeroed(t)
            except Exception as e:
                self._broke("zeroing", e)
        return func(*args, **kwargs)

    def _zeroed(self, t: torch.Tensor) -> None:
        strided = t.layout == torch.strided and not is_dtensor(t)
        key = grad_key(t)
        p = self._grad_ptrs.get(key)
        if p is None:
            return
        g = p.tensor.grad
        if g is not None and (g.data_ptr() == key if strided else g is t):
            p.epoch += 1  # the gradient the last step used is gone
            p.reset_at = self._backward_index

    def _on_data(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        if not self._opts and "hand-written updates" not in self._off:
            base = args[0]
            try:
                if isinstance(base, torch.Tensor) and base.requires_grad and base.is_leaf:
                    if len(self._aliases) > 32:
                        self._aliases.clear()
                    self._aliases[id(out)] = (weakref.ref(out), base)
            except Exception as e:
                self._broke("hand-written updates", e)
        return out

    def _on_write(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._opts and args and "hand-written updates" not in self._off:
            try:
                with own_ops():
                    targets = args[0] if func in _FOREACH_WRITES else args[:1]
                    for t in targets if isinstance(targets, (list, tuple)) else ():
                        if isinstance(t, torch.Tensor):
                            self._written(t)
            except Exception as e:
                self._broke("hand-written updates", e)
        return func(*args, **kwargs)

    def _written(self, t: torch.Tensor) -> None:
        """A write to ``t`` (or to the ``.data`` of a parameter) outside any optimizer."""
        base = t
        alias = self._aliases.get(id(t))
        if alias is not None and alias[0]() is t:
            base = alias[1]
        elif torch.is_grad_enabled():
            return  # a direct in-place write to a leaf that requires grad: PyTorch refuses it
        if not base.is_leaf or not base.requires_grad or base.grad is None:
            return  # not a parameter that received a gradient
        p = self._params.get(id(base))
        if p is None or p.tensor is not base:
            if not self._global:
                return  # watch(model): only the model's parameters
            names = self._new_names([base], None)
            p = self._watch_param(base, names[id(base)], in_optimizer=False, late=True)
        self._manual_step(p)

    def _on_bce(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._loss_input(args, kwargs, SCORE_NODES, "BCELoss got raw scores (made by {}), not "
                         "probabilities")  # fmt: skip
        try:
            return func(*args, **kwargs)
        except RuntimeError as e:
            if BCE_RANGE_ERROR in str(e) and "loss inputs" not in self._off:
                self._fact(
                    "loss-input",
                    self._step_now(),
                    None,
                    user_source(),
                    "BCELoss got values outside [0, 1]",
                )
            raise  # PyTorch's own error, unchanged

    def _on_bce_logits(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._loss_input(
            args, kwargs, ("Sigmoid",), "BCEWithLogitsLoss got sigmoid outputs (a double sigmoid)"
        )
        return func(*args, **kwargs)

    def _loss_input(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], wrong: tuple[str, ...], detail: str
    ) -> None:
        """Notes a loss input made by one of the ``wrong`` ops (``detail`` names it at ``{}``)."""
        if "loss inputs" in self._off:
            return
        try:
            made_by = producer(args[0] if args else kwargs.get("input"))
            if made_by is not None and made_by.startswith(wrong):
                message = detail.format(made_by)
                self._fact("loss-input", self._step_now(), None, user_source(), message)
        except Exception as e:
            self._broke("loss inputs", e)

    def _step_now(self) -> int:
        """The step the loop is in: the furthest optimizer's own count (a GAN's D and G steps
        are one iteration, not two)."""
        opts = [*self._opts.values(), *([self._manual] if self._manual else [])]
        return max((o.steps for o in opts), default=0)

    def _fact(
        self,
        kind: Any,
        step: int,
        param: str | None,
        source: str | None,
        detail: str,
        optimizer: str = "",
    ) -> None:
        key = (kind, param if kind != "loss-input" else detail, source)
        if key in self._seen_facts:
            return
        self._seen_facts.add(key)
        self.facts.append(WatchFact(kind, step, param, source, detail, optimizer))

    # -- optimizer steps ---------------------------------------------------------------------
    def _opt(self, opt: Optimizer) -> OptState | None:
        o = self._opts.get(id(opt))
        if o is not None and o.optimizer is opt:
            return None if o.broken else o
        if self._given:
            return None  # watch(model, opt): only that optimizer
        if not self._global and not any(
            self._is_watched(t) for g in opt.param_groups for t in g["params"]
        ):
            return None  # watch(model) alone: an optimizer of other parameters
        return self._adopt(opt, late=True)

    def _on_step_pre(self, opt: Optimizer, args: Any, kwargs: Any) -> None:
        o = self._opt(opt)
        if o is None:
            return
        try:
            # The hooks get step()'s own arguments, the optimizer first: step(closure).
            closure = args[1] if len(args) > 1 else kwargs.get("closure")
            o.closure = closure is not None
            if not o.closure:  # the gradients are the ones backward left: measure them now
                with own_ops():
                    self._measure(o)
        except Exception as e:
            o.broken, o.open = True, None
            self._broke(f"optimizer {o.label}", e)

    def _on_step_post(self, opt: Optimizer, args: Any, kwargs: Any) -> None:
        o = self._opt(opt)
        if o is None:
            return
        try:
            with own_ops():
                if self._external and id(opt) not in self._external_open:
                    o.closure = True  # stepped with no announcement: measure after, no update
                self._external_open.discard(id(opt))
                if o.closure:  # gradients and loss of the closure's last evaluation
                    self._measure(o)
                self._finish(o)
        except Exception as e:
            o.broken, o.open = True, None
            self._broke(f"optimizer {o.label}", e)

    # -- steps a framework announces (gradlens.integrations) ---------------------------------
    def before_step(self, opt: Optimizer, loss_scale: torch.Tensor | float | None = None) -> None:
        """Measures the gradients ``opt`` is about to step with, where a framework has them
        final (accumulated, unscaled, clipped). ``loss_scale``: the AMP scale the backward
        roots were multiplied by (the loss is divided by it, on the device). The step's
        post-hook finishes it; ``step_skipped`` drops it if ``opt.step()`` never ran."""
        o = self._opt(opt)
        if o is None:
            return
        try:
            with own_ops():
                if id(opt) in self._external_open:  # announced again before it stepped (a
                    o.open = None  # closure evaluated again, LBFGS): the last one counts
                o.closure = False
                scale = None if "loss" in self._scalars else loss_scale  # the roots' only
                self._measure(o, loss_scale=scale)
            self._external_open.add(id(opt))
        except Exception as e:
            o.broken, o.open = True, None
            self._broke(f"optimizer {o.label}", e)

    def step_skipped(self, opt: Optimizer) -> None:
        """A step measured by ``before_step`` whose ``opt.step()`` never ran (an AMP loss
        scaler found non-finite gradients): it counts as a step, with no record."""
        o = self._opt(opt)
        if o is None or id(opt) not in self._external_open:
            return
        self._external_open.discard(id(opt))
        o.open = None
        self._skipped += 1
        o.steps += 1
        self.steps_seen += 1
        if self.on_step is not None:
            self.on_step(len(self._pending))

    @property
    def watched_count(self) -> int:
        """Returns how many parameters are watched so far."""
        return len(self._order)

    def _measure(self, o: OptState, loss_scale: torch.Tensor | float | None = None) -> None:
        """Checks and measures what an optimizer step is about to use (its open Pending);
        the backward roots' loss is divided by ``loss_scale`` if given."""
        members = self._members(o)
        step = o.steps
        missing: list[str] = []
        stale: list[ParamState] = []
        with_grad: list[ParamState] = []
        for p in members:
            g = p.tensor.grad
            ref = p.grad_ref
            if g is None or ref is None or ref() is not g:  # else: the .grad last seen
                g = self._sync(p)
            if not p.tensor.requires_grad:
                if not p.frozen_noted:
                    p.frozen_noted = True
                    self._fact("frozen", step, p.name, None, "", o.label)
                continue
            p.frozen_noted = False
            if not p.hooked:  # unfrozen, or added, since: hook it from now on
                self._hook(p, late=True)
            seen = o.seen.get(p.slot)
            new = self._new_for(o, p, g)
            if not new:
                if g is None or seen is None or seen[0] != p.epoch:
                    missing.append(p.name)  # (not when it steps again on the same gradient)
            else:
                with_grad.append(p)
                if seen is not None and seen[2] and seen[0] == p.epoch:
                    stale.append(p)
            o.seen[p.slot] = (p.epoch, p.adds, g is not None)
            if g is not None:
                p.stepped_epoch = p.epoch
        if stale:
            self._stale(o, step, stale)
        backs = self._step_backwards(o)
        pending: Pending | None = None
        if active():  # torch.distributed: what the exchange across ranks needs besides
            try:
                self._note_ranks(o, step, members, backs)
            except Exception as e:
                self._broke("combining across ranks", e)
        if step % self._every == 0:
            detail = self._detail_every > 0 and o.recorded % self._detail_every == 0
            pending = Pending(
                step,
                tuple(missing),
                detail=detail,
                backward_calls=len(backs),
                optimizer=o.label,
            )
            by_device: dict[torch.device, list[ParamState]] = {}
            for p in with_grad:
                by_device.setdefault(p.tensor.device, []).append(p)
            with torch.no_grad():
                for group in by_device.values():
                    snapshot = not o.closure
                    stats = group_stats(
                        group, detail, snapshot=snapshot, stash=self._stash, scratch=self._scratch
                    )
                    pending.groups.append(stats)
                spec = self.histograms  # a sink asked for them: on steps 1, 1 + every, ...
                if spec is not None and o.recorded % spec.every == 1 % spec.every:
                    hists = gradstats.histograms(
                        [(p.name, local(p.tensor.grad)) for p in with_grad], spec
                    )
                    pending.hists = [(n, lo, hi, self._stash.put(c)) for n, lo, hi, c in hists]
            lr = o.optimizer.param_groups[0].get("lr") if o.optimizer is not None else None
            if o.optimizer is not None and o.optimizer.param_groups:
                pending.lr = stash_part(self._stash, lr_value(lr))
            scalars, self._scalars = self._scalars, {}
            logged = scalars.pop("loss", None)  # lens.log(loss=...) wins over the roots
            pending.forward = self._take_forward()
            if o.closure:  # LBFGS evaluates the closure many times: its last loss is the one
                backs = [b for b in backs if b.loss is not None][-1:]
            if logged is not None:
                pending.loss = logged
            else:
                pending.loss = losses_of(backs)
                pending.loss_scale = stash_part(self._stash, loss_scale)
            pending.scalars = scalars
            o.recorded += 1
        elif missing:  # not recorded, but a parameter without a gradient is still news
            pending = Pending(step, tuple(missing), optimizer=o.label)
        if (pending is None or pending.forward is None) and self._forward is not None:
            self._forward.take()  # a step not recorded: its probes are dropped
        o.open = pending
        o.last_backward = self._backward_index
        self._last_step_backward = self._backward_index
        self._prune()

    def _note_ranks(
        self, o: OptState, step: int, members: list[ParamState], backs: list[BackwardCall]
    ) -> None:
        if step % self._every != 0:
            self._ranks.skip()
            return
        touched: set[int] = set()
        for b in backs:
            touched |= b.touched
        grads = [(p.slot, p.name, p.tensor) for p in members if p.tensor.requires_grad]
        self._ranks.note(o.label, step, grads, touched)

    def _stale(self, o: OptState, step: int, stale: list[ParamState]) -> None:
        lines = [p.stale[1] for p in stale if p.stale is not None and p.stale[0] == p.epoch]
        line = next((x for x in lines if x is not None), None)
        self._fact(
            "grad-accumulation",
            step,
            stale[0].name,
            format_location(*line) if line is not None else None,
            ", ".join(p.name for p in stale),
            o.label,
        )

    def _step_backwards(self, o: OptState) -> list[BackwardCall]:
        """The backward calls since this optimizer's previous step that reached it."""
        if o.optimizer is None:  # hand-written: every backward since the last one
            return [b for b in self._backs if b.index > o.last_backward]
        if o.late and o.steps == 0:  # its hooks came after this backward: take the latest ones
            return [b for b in self._backs if b.index > self._last_step_backward]
        if o.members and all(is_dtensor(p.tensor) for p in o.members):  # FSDP2: no hook fires
            return [b for b in self._backs if b.index > o.last_backward]
        # Only the backward calls since the members' .grad was last reset went into it: a GAN's
        # generator backward reaches D too, but D.zero_grad() drops that before D steps.
        slots = o.slots
        since = max(o.last_backward, min((p.reset_at for p in o.members), default=0))
        return [b for b in self._backs if b.index > since and not b.touched.isdisjoint(slots)]

    def _prune(self) -> None:
        if len(self._backs) < 16:  # a few backward calls kept longer cost nothing
            return
        opts = [*self._opts.values(), *([self._manual] if self._manual else [])]
        oldest = min(o.last_backward for o in opts) if opts else 0
        if self._backs and self._backs[0].index <= oldest:
            self._backs = [b for b in self._backs if b.index > oldest]

    def _finish(self, o: OptState) -> None:
        if o.stale:
            stale, o.stale = o.stale, []
            self._stale(o, o.steps, stale)
        pending, o.open = o.open, None
        if pending is not None:
            snapshots = any(group.snapshot is not None for group in pending.groups)
            members = {p.name: p.tensor for p in o.members} if snapshots else {}
            for group in pending.groups:
                if group.snapshot is not None:
                    with torch.no_grad():
                        after = [local(members[n]) for n in group.names]
                        update = gradstats.update_sumsq(group.snapshot, after)
                        group.update = self._stash.put(update)
                    self._scratch.release(group.snapshot)  # overwritten: its memory kept
                    group.snapshot = None
            self._pending.append(pending)
        o.steps += 1
        o.written = set()
        self.steps_seen += 1
        if self.on_step is not None:
            self.on_step(len(self._pending))

    # -- hand-written steps ------------------------------------------------------------------
    def _manual_step(self, p: ParamState) -> None:
        """A write to ``p`` after it got a gradient, with no optimizer: part of the current
        hand-written step (opened by the first such write after a backward)."""
        m = self._manual
        if m is None:
            m = self._manual = OptState(MANUAL, None)
        if m.open is None and not self._new_for(m, p, self._sync(p)):
            return  # no gradient since its last update (weight decay before backward, ...)
        if m.open is None:
            step = m.steps
            recorded = step % self._every == 0
            detail = recorded and self._detail_every > 0 and m.recorded % self._detail_every == 0
            backs = self._step_backwards(m)
            m.open = Pending(step, (), detail=detail, backward_calls=len(backs), optimizer=MANUAL)
            if recorded:
                scalars, self._scalars = self._scalars, {}
                logged = scalars.pop("loss", None)
                m.open.loss = logged if logged is not None else losses_of(backs)
                m.open.scalars = scalars
                m.open.forward = self._take_forward()
                m.recorded += 1
            m.last_backward = self._backward_index
            self._prune()
            m.written = set()
            m.members = []
        if p.slot in m.written:
            return
        m.written.add(p.slot)
        m.members.append(p)
        g = self._sync(p)
        seen = m.seen.get(p.slot)
        new = self._new_for(m, p, g)
        if new and seen is not None and seen[2] and seen[0] == p.epoch:
            m.stale.append(p)  # reported with the others when the step ends
        m.seen[p.slot] = (p.epoch, p.adds, g is not None)
        if g is not None:
            p.stepped_epoch = p.epoch
        if new and m.open.step % self._every == 0:
            with torch.no_grad():
                stats = group_stats(
                    [p], m.open.detail, snapshot=False, stash=self._stash, scratch=self._scratch
                )
                m.open.groups.append(stats)

    def _new_for(self, o: OptState, p: ParamState, g: torch.Tensor | None) -> bool:
        """Whether ``p`` (whose ``.grad`` is ``g``, synced) got a gradient since ``o``'s
        previous step with it."""
        seen = o.seen.get(p.slot)
        if is_dtensor(p.tensor):  # FSDP2 writes a sharded .grad itself: no gradient hook fires
            return self._ranks.grad_moved(o.label, p.slot, g)
        if g is None:
            return False
        if seen is None:  # o's first step with it
            return p.adds > 0 or p.late  # hooked after the backward: .grad is all we know
        return p.adds > seen[1]

    def _take_forward(self) -> ForwardPending | None:
        """nan_origin: the module calls probed since the previous step (None when off), their
        probes put in the stash."""
        taken = self._forward.take() if self._forward is not None else None
        if taken is not None:
            taken.tensors = [self._stash.put(t) for t in taken.tensors]
        return taken

    def _take_stash(self) -> Taken:
        """Empties the stash (one host copy per device); steps still open (between an
        optimizer's step hooks) read their numbers from it now. Returns the ``Taken``."""
        taken = self._stash.take()
        opts = [*self._opts.values(), *([self._manual] if self._manual else [])]
        for o in opts:
            if o.open is not None:
                resolve(o.open, taken)
        for b in self._backs:  # backward calls whose step is still to come
            b.loss = taken.value(b.loss)
        self._scalars = {k: taken.value(v) for k, v in self._scalars.items()}
        return taken

    # -- to the host -------------------------------------------------------------------------
    def flush(self, histograms: list[GradHistogram] | None = None) -> list[StepRecord]:
        """Copies every pending step to the host (one transfer per device) as StepRecords;
        their gradient histograms (for the sinks) are appended to ``histograms`` if given.

        Under torch.distributed, returns the steps ``sync_ranks`` combined; the others wait
        for it (it must run at the same point on every rank)."""
        ready, self._ready = self._ready, []
        ready_hists, self._ready_hists = self._ready_hists, []
        if histograms is not None:
            histograms += ready_hists
        if self._ranks.holding():
            return ready
        pending, self._pending = self._pending, []
        if not pending:
            return ready
        hists: list[GradHistogram] | None = [] if histograms is not None else None
        with own_ops():  # no user mode around the block sees the copy
            records = to_records(pending, self._take_stash(), hists)
        if histograms is not None:
            histograms += self._ranks.whole_histograms(hists or [])
        return ready + self._ranks.local_only(records)

    # -- torch.distributed -------------------------------------------------------------------
    @property
    def ranks(self) -> Ranks:
        """Returns the distributed side: world size, rank, exchanges made."""
        return self._ranks

    def ranks_due(self, every: int) -> bool:
        """Returns whether ``every`` recorded steps wait for the exchange across ranks."""
        return self._ranks.due(every)

    def sync_ranks(self) -> None:
        """Under torch.distributed, combines the waiting steps with every other rank's (one
        collective; ``capture/distributed.py``). Every rank must call it at the same point:
        every ``FLUSH_EVERY`` recorded steps, when the watch ends, and before the process
        group is destroyed. Does nothing in a single process."""
        if not self._ranks.holding():
            return
        pending, self._pending = self._pending, []
        records: list[StepRecord] = []
        hists: list[GradHistogram] | None = [] if self.histograms is not None else None
        try:
            with own_ops():
                taken = self._take_stash()
                records = to_records(pending, taken, hists) if pending else []
        except Exception as e:  # still exchange: the other ranks wait for this rank's part
            self._broke("combining across ranks", e)
        try:
            self._ready += self._ranks.exchange(records)
            self._ready_hists += self._ranks.whole_histograms(hists or [])
        except Exception as e:
            self._broke("combining across ranks", e)


_GLOBAL_HOOKS = (
    torch.nn.modules.module._global_forward_pre_hooks,
    torch.nn.modules.module._global_forward_hooks,
    torch.nn.modules.module._global_forward_hooks_always_called,
)


def _hide_global_hooks(handles: list[RemovableHandle]) -> list[tuple[dict[int, Any], int, Any]]:
    """Takes gradlens's global module hooks out of torch's dicts; returns them to put back."""
    out = []
    for handle in handles:
        for ref in (handle.hooks_dict_ref, *handle.extra_dict_ref):
            hooks = ref()
            if any(hooks is g for g in _GLOBAL_HOOKS) and handle.id in hooks:
                out.append((hooks, handle.id, hooks.pop(handle.id)))
    return out
