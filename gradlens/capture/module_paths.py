"""Which module made each autograd node, for ``graph()`` (no hooks ran) and ``trace()``.

``graph(loss, params=model)`` reads a finished graph, so no forward hook saw the modules run.
It infers them from autograd *sequence numbers* (``node._sequence_nr()``: a per-thread counter
stamped on every node as the forward creates it, so creation order is known):

1. anchors: each op that consumes a parameter belongs to the parameter's module (a tied
   parameter's consumers are matched to its owners in order);
2. a module's ops lie in the sequence range spanned by its anchors (and its submodules'):
   each op goes to the deepest module whose range holds it;
3. a reshape just before a module's range whose only consumer is one of that module's anchors
   (Conv1D's ``reshape`` before ``addmm``) joins that module ("head");
4. an op in the gap after a submodule C's range (residual ``add``, ``view`` after ``addmm``)
   joins C when each of its inputs comes from inside C or is an input C itself read ("tail");
   into a module without submodules only a reshape straight after one of its parameter ops;
5. k modules without parameters registered between two with (``avgpool`` between ``layer4``
   and ``fc``) get the last k ops of the gap between their ranges, one each, in order.

Modules without parameters (``Dropout``, ``ReLU``, ``avgpool``) and ops between modules cannot
be told apart this way; ``tests/test_views.py`` measures the match with trace()'s hooks.

``trace()`` knows modules from hooks, but only the node of an op's *output* was stamped:
:class:`CallModules` gives the nodes an op made inside its own decomposition (``matmul``'s
``expand``/``bmm``/``view``) the module the op ran in.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from typing import Any

import torch

from ..records import ModuleInfo
from .modules import module_infos

__all__ = ["CallModules", "infer_modules"]

# Ops that only reshape their input: a module without submodules may end with one (Conv1D's
# ``view`` after ``addmm``), but not with real work, which belongs to whoever called it.
_SHAPING = re.compile(
    r"^(View|UnsafeView|Reshape|ReshapeAlias|Expand|Squeeze|Unsqueeze|Permute|Transpose|T)"
    r"Backward\d*$"
)


class CallModules:
    """trace(): stamps the interior nodes of one op call with the call's module."""

    def __init__(self) -> None:
        self._floor = -1  # every node with a sequence number up to this was seen before
        self._pending = -1
        self._call: object = None

    def claim(self, builder: Any, fn: Any, module: str | None, call: object) -> None:
        """Gives the unmarked op nodes behind ``fn`` made during this call ``module``."""
        if call != self._call:
            self._call, self._floor = call, max(self._floor, self._pending)
        top = fn._sequence_nr()
        self._pending = max(self._pending, top)
        if module is None:
            return
        stack = [fn]
        while stack:
            node = stack.pop()
            for child, _ in node.next_functions:
                if child is None or hasattr(child, "variable"):
                    continue
                seq = child._sequence_nr()
                if not self._floor < seq < top:
                    continue
                nid = builder.known_id(child)
                if nid is None:
                    continue
                draft = builder.draft(nid)
                if draft.module is None and draft.op is None:
                    draft.module = module
                    stack.append(child)


def infer_modules(
    reached: Iterable[tuple[Any, str]],
    builder: Any,
    root: torch.nn.Module,
    named: list[tuple[str, torch.Tensor]] | None = None,
) -> tuple[ModuleInfo, ...]:
    """Sets ``module`` on the drafts of ``reached`` op and leaf nodes (see the module docstring);
    returns the model's ModuleInfo records. ``named``: ``root.named_parameters(
    remove_duplicate=False)`` when the caller has it already."""
    if named is None:
        named = list(root.named_parameters(remove_duplicate=False))
    infos = module_infos(root, named=named)
    owners: dict[int, list[str]] = {}
    for name, p in named:
        owners.setdefault(id(p), []).append(name.rpartition(".")[0])

    seq: dict[str, int] = {}
    names: dict[str, str] = {}
    inputs: dict[str, list[str]] = {}  # op -> the op nodes feeding it
    users: dict[str, list[str]] = {}  # op -> the op nodes it feeds
    consumers: dict[int, list[str]] = {}  # parameter -> op nodes consuming it
    leaf_owner: dict[str, str] = {}
    # Every child of a reached node was reached too: ids by the Node object (autograd keeps one
    # Python object per Node while it is referenced, and ``reached`` references them all).
    ids: dict[Any, str] = {}
    leaves: dict[str, int] = {}  # leaf node id -> id() of its tensor
    op_fns: list[tuple[Any, str]] = []
    for fn, nid in reached:
        ids[fn] = nid
        variable = getattr(fn, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves[nid] = id(variable)
            if id(variable) in owners:
                leaf_owner[nid] = owners[id(variable)][0]
        else:
            op_fns.append((fn, nid))
    draft = builder.draft
    for fn, nid in op_fns:
        seq[nid] = fn._sequence_nr()
        names[nid] = draft(nid).name
        for child, _ in fn.next_functions:
            if child is None:
                continue
            cid = ids.get(child)
            if cid is not None:
                leaf = leaves.get(cid)
            else:  # not reached by this walk: as the builder knows it, if at all
                cid = builder.known_id(child)
                if cid is None:
                    continue
                variable = getattr(child, "variable", None)
                leaf = id(variable) if isinstance(variable, torch.Tensor) else None
            if leaf is not None:
                if leaf in owners:
                    consumers.setdefault(leaf, []).append(nid)
            else:
                inputs.setdefault(nid, []).append(cid)
                users.setdefault(cid, []).append(nid)

    anchor: dict[str, str] = {}
    for pid, ops in consumers.items():
        paths = owners[pid]
        ops = sorted(set(ops), key=seq.__getitem__)
        if len(paths) == 1:
            anchor.update((op, paths[0]) for op in ops)
        elif len(ops) == len(paths):  # a tied parameter: owners in order of use
            anchor.update(zip(ops, paths, strict=True))
    # An op that only reshapes a parameter (``t()`` in ``F.linear``) passes the role on to the
    # op using the result (``mm``).
    for op, path in list(anchor.items()):
        outs = users.get(op, [])
        if not inputs.get(op) and len(outs) == 1 and _SHAPING.match(names[op]):
            anchor.setdefault(outs[0], path)

    ranges: dict[str, tuple[int, int]] = {}
    for op, path in anchor.items():
        s = seq[op]
        at: str | None = path
        while at is not None:
            lo, hi = ranges.get(at, (s, s))
            ranges[at] = (min(lo, s), max(hi, s))
            at = None if not at else at.rpartition(".")[0]
    parents = {info.path.rpartition(".")[0] for info in infos if info.path}
    children: dict[str, list[str]] = {}
    for info in infos:
        if info.path and info.path in ranges:
            children.setdefault(info.path.rpartition(".")[0], []).append(info.path)

    after = _free_after(infos, ranges)
    spans = {  # each module's children with their ranges, in registration order
        path: [(*ranges[kid], kid) for kid in kids] for path, kids in children.items()
    }
    module: dict[str, str | None] = {}
    for op, s in seq.items():
        module[op] = anchor.get(op) or _deepest(s, ranges, spans)

    order = sorted(seq, key=seq.__getitem__)
    headed: set[str] = set()
    for op in reversed(order):  # heads: the input shaping of a module's first parameter op
        outs = users.get(op, [])
        if op in anchor or len(outs) != 1 or outs[0] not in anchor:
            continue
        if len(inputs.get(op, [])) > 1 or not _SHAPING.match(names[op]):
            continue
        target = anchor[outs[0]]
        if _inside(target, module[op]) and target != module[op]:
            module[op] = target
            headed.add(op)
    # Modules without parameters registered right after C, before C's next sibling with
    # parameters (ResNet's ``avgpool`` between ``layer4`` and ``fc``), made the last ops of the
    # gap between them, one op each, as such modules mostly do (pooling, activation, dropout).
    fixed = set(headed)
    order_seq = [seq[op] for op in order]  # ascending: each gap is found by bisection
    for before, (free, nxt) in after.items():
        lo = bisect.bisect_right(order_seq, ranges[before][1])
        hi = bisect.bisect_left(order_seq, ranges[nxt][0])
        parent = before.rpartition(".")[0]
        gap = [op for op in order[lo:hi] if op not in fixed and module[op] == parent]
        if gap and len(gap) >= len(free):
            for op, owner in zip(gap[-len(free) :], free, strict=True):
                module[op] = owner
                fixed.add(op)
    for op in order:  # tails: what a submodule's output goes through before the parent's ops
        where = module[op]
        if op in anchor or op in fixed:
            continue
        if where is not None:
            if any(module.get(i) != where for i in inputs.get(op, ())):  # else it stays home
                module[op] = _tail(op, where, inputs, users, module, anchor, parents, names)
        elif any(module.get(i) is not None for i in inputs.get(op, [])) and (
            _SHAPING.match(names[op]) or builder.draft(op).shape not in ((), None)
        ):
            # After the model's last parameter op: a reshape (lm_head's view after mm) or
            # the last block's residual add and ReLU may end one of its modules; never the
            # root itself, nor an op making a scalar (a loss is outside the model).
            inner = _tail(op, "", inputs, users, module, anchor, parents, names)
            module[op] = inner or None

    for op, found in module.items():
        if found is not None:
            builder.draft(op).module = found
    for nid, owner in leaf_owner.items():
        builder.draft(nid).module = owner
    return infos


def _free_after(
    infos: tuple[ModuleInfo, ...], ranges: dict[str, tuple[int, int]]
) -> dict[str, tuple[list[str], str]]:
    """Returns ``{C: (free, next)}``: the modules without a range registered after C and before
    ``next``, C's next sibling with a range."""
    siblings: dict[str, list[str]] = {}
    for info in infos:
        if info.path:
            siblings.setdefault(info.path.rpartition(".")[0], []).append(info.path)
    out: dict[str, tuple[list[str], str]] = {}
    for kids in siblings.values():
        last: str | None = None
        free: list[str] = []
        for kid in kids:
            if kid in ranges:
                if last is not None and free:
                    out[last] = (free, kid)
                last, free = kid, []
            elif last is not None:
                free.append(kid)
    return out


def _deepest(
    s: int, ranges: dict[str, tuple[int, int]], spans: dict[str, list[tuple[int, int, str]]]
) -> str | None:
    """Returns the deepest module whose range holds sequence number ``s`` (the first child
    holding it at each level), or None outside the root's range."""
    root = ranges.get("")
    if root is None or not root[0] <= s <= root[1]:
        return None
    path = ""
    while True:
        for lo, hi, kid in spans.get(path, ()):
            if lo <= s <= hi:
                path = kid
                break
        else:
            return path


def _inside(path: str | None, ancestor: str | None) -> bool:
    """Returns True when ``path`` is strictly or not inside ``ancestor`` (None holds all)."""
    if path is None:
        return ancestor is None
    if ancestor is None or ancestor == "":
        return True
    return path == ancestor or path.startswith(ancestor + ".")


def _child_of(ancestor: str, path: str) -> str:
    """Returns the child of ``ancestor`` on the way down to ``path`` (strictly inside it)."""
    rest = path[len(ancestor) + 1 :] if ancestor else path
    head = rest.split(".", 1)[0]
    return f"{ancestor}.{head}" if ancestor else head


def _tail(
    op: str,
    where: str,
    inputs: dict[str, list[str]],
    users: dict[str, list[str]],
    module: dict[str, str | None],
    anchor: dict[str, str],
    parents: set[str],
    names: dict[str, str],
) -> str:
    srcs = inputs.get(op, [])

    def inner_kids(where: str) -> set[str]:
        """The children of ``where`` holding one of the op's inputs."""
        return {
            _child_of(where, m)
            for i in srcs
            if (m := module.get(i)) is not None and m != where and _inside(m, where)
        }

    kids = inner_kids(where)
    if not kids:
        return where  # most ops: every input made in ``where`` itself
    shaping = bool(_SHAPING.match(names.get(op, "")))

    def fits(kid: str) -> bool:
        for i in srcs:
            if _inside(module.get(i), kid):
                # Into a module with no submodules only straight after its parameter ops
                # (Conv1D's ``view`` after ``addmm``), not whatever follows that.
                if kid not in parents and (i not in anchor or not shaping):
                    return False
                continue
            # An input from outside ``kid`` must be one that ``kid`` itself read (a residual).
            if not any(u != op and _inside(module.get(u), kid) for u in users.get(i, [])):
                return False
        return True

    while True:
        fitting = [kid for kid in kids if fits(kid)]
        if len(fitting) != 1:
            return where
        where = fitting[0]
        kids = inner_kids(where)
