"""gradlens.explain: reachable, cut (every kind, with its line), unused, dead, not-leaf."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable

import pytest
import torch
from torch.utils.hooks import RemovableHandle

import gradlens
from gradlens.records import EdgeKind

HERE = os.path.relpath(__file__)
with open(__file__, encoding="utf-8") as _f:
    _LINES = _f.read().splitlines()


def line(marker: str) -> str:
    """Returns "tests/test_explain.py:N" of the one line that ends with ``# <marker>``."""
    hits = [i for i, text in enumerate(_LINES, 1) if text.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, marker
    return f"{HERE}:{hits[0]}"


def _params() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    v = torch.randn(3, requires_grad=True)
    return w, v


def _explain_cut(body) -> gradlens.Explanation:  # type: ignore[no-untyped-def]
    w, v = _params()
    with gradlens.trace(w=w, v=v) as t, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = body(w, v)
    return gradlens.explain(loss, params={"w": w, "v": v}, trace=t)


def _detach(w, v):  # type: ignore[no-untyped-def]
    h = (v * 2).detach()  # detach
    return (w * h).sum()


def _data(w, v):  # type: ignore[no-untyped-def]
    h = v.data  # data
    return (w * h).sum()


def _item(w, v):  # type: ignore[no-untyped-def]
    s = v.sum().item()  # item
    return (w * s).sum()


def _float(w, v):  # type: ignore[no-untyped-def]
    s = float(v.sum())  # float
    return (w * torch.tensor(s)).sum()


def _tolist(w, v):  # type: ignore[no-untyped-def]
    s = (v * 2).tolist()  # tolist
    return (w * torch.tensor(s)).sum()


def _no_grad(w, v):  # type: ignore[no-untyped-def]
    with torch.no_grad():
        h = v * 2  # no_grad
    return (w * h).sum()


def _inference(w, v):  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        h = v * 2  # inference
    return (w * h.clone()).sum()


def _requires_grad_(w, v):  # type: ignore[no-untyped-def]
    h = v * 2
    h.detach_()  # detach_
    return (w * h).sum()


def _argmax(w, v):  # type: ignore[no-untyped-def]
    i = v.argmax()  # argmax
    return (w * (i + 1)).sum()


def _compare(w, v):  # type: ignore[no-untyped-def]
    mask = v > 0  # compare
    return (w * (mask + 1)).sum()


def _rewrap(w, v):  # type: ignore[no-untyped-def]
    h = torch.tensor(v * 2)  # rewrap
    return (w * h).sum()


@pytest.mark.parametrize(
    ("body", "kind", "marker"),
    [
        (_detach, "detach", "detach"),
        (_data, "data", "data"),
        (_item, "host", "item"),
        (_float, "host", "float"),
        (_tolist, "host", "tolist"),
        (_no_grad, "no_grad", "no_grad"),
        (_inference, "inference_mode", "inference"),
        (_requires_grad_, "requires_grad_", "detach_"),
        (_argmax, "non-differentiable", "argmax"),
        (_compare, "non-differentiable", "compare"),
        (_rewrap, "rewrap", "rewrap"),
    ],
)
def test_each_cut_kind_is_named_with_its_line(body, kind: str, marker: str) -> None:  # type: ignore[no-untyped-def]
    why = _explain_cut(body)
    assert why.params["w"].status == "reachable"
    assert why.params["w"].path == ("SumBackward0", "MulBackward0", "AccumulateGrad")
    v = why.params["v"]
    assert (v.status, v.kind, v.source) == ("cut", kind, line(marker))
    assert line(marker) in v.reason
    [diag] = why.diagnostics
    assert (diag.kind, diag.name, diag.source) == ("cut", "v", line(marker))
    assert diag.fix
    cut_edges = [e for e in why.graph.edges if e.kind == EdgeKind.CUT]  # type: ignore[union-attr]
    assert [e.label for e in cut_edges] == [f"{kind} at {line(marker)}"]
    assert f"label=<{kind} at {line(marker)}>" in why.to_dot()
    assert 'style=dashed, color="#c62828"' in why.to_dot()


class _MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(3, 4)
        self.fc2 = torch.nn.Linear(4, 1)
        self.extra = torch.nn.Linear(4, 4)
        self.spare = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        self.extra(h)  # extra
        return self.fc2(h)


def test_module_names_reachable_paths_and_unused() -> None:
    model = _MLP()
    x = torch.randn(5, 3)
    with gradlens.trace(model) as t:
        loss = torch.nn.functional.mse_loss(model(x), torch.zeros(5, 1))
    why = gradlens.explain(loss, params=model, trace=t)
    assert list(why.params) == [n for n, _ in model.named_parameters()]
    assert why.params["fc2.weight"].status == "reachable"
    assert why.params["fc2.bias"].path == ("MseLossBackward0", "AddmmBackward0", "AccumulateGrad")
    assert why.params["fc1.bias"].path == (
        "MseLossBackward0",
        "AddmmBackward0",
        "ReluBackward0",
        "AddmmBackward0",
        "AccumulateGrad",
    )
    spare = why.params["spare.weight"]
    assert (spare.status, spare.source) == ("unused", None)
    assert "never used" in spare.reason
    extra = why.params["extra.weight"]
    assert (extra.status, extra.source) == ("unused", line("extra"))
    assert {d.name for d in why.diagnostics} == {
        "spare.weight",
        "spare.bias",
        "extra.weight",
        "extra.bias",
    }
    assert all(d.kind == "unused" for d in why.diagnostics)
    text = str(why)
    assert "spare.weight" in text and "reachable" in text


def test_dead_relu_names_the_node_and_its_line() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor(-10.0, requires_grad=True)
    x = torch.tensor([[1.0, 1.0], [0.5, 0.5]])
    with gradlens.trace(w=w, b=b) as t:
        h = torch.relu(x @ w + b)  # relu
        loss = (h * 3).sum()
    why = gradlens.explain(loss, params={"w": w, "b": b}, trace=t)
    for name in ("w", "b"):
        p = why.params[name]
        assert (p.status, p.kind, p.source) == ("dead", "ReluBackward0", line("relu"))
        assert p.path[:3] == ("SumBackward0", "MulBackward0", "ReluBackward0")
    assert [d.kind for d in why.diagnostics] == ["dead", "dead"]
    dead = [n for n in why.graph.nodes if n.dead]  # type: ignore[union-attr]
    assert [n.name for n in dead] == ["ReluBackward0"]
    assert 'fillcolor="#bdbdbd"' in why.to_dot()


def test_dead_without_trace_still_names_the_node() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = (torch.clamp(w, min=5.0) * 2).sum()
    why = gradlens.explain(loss, params={"w": w})
    assert why.params["w"].status == "dead"
    assert why.params["w"].kind.startswith("Clamp")  # type: ignore[union-attr]


def test_not_leaf() -> None:
    w = torch.tensor([1.0], requires_grad=True)
    h = w * 2
    loss = (h * h).sum()
    why = gradlens.explain(loss, params={"w": w, "h": h})
    assert why.params["w"].status == "reachable"
    assert why.params["h"].status == "not-leaf"
    assert "retain_grad()" in why.params["h"].reason
    assert [d.kind for d in why.diagnostics] == ["not-leaf"]


def test_graph_only_gives_reachable_and_unreachable() -> None:
    w, v = _params()
    loss = (w * v.detach()).sum()
    why = gradlens.explain(loss, params={"w": w, "v": v})
    assert why.params["w"].status == "reachable"
    assert why.params["v"].status == "unreachable"
    assert "gradlens.trace()" in why.params["v"].reason
    assert why.diagnostics[0].kind == "unreachable"
    assert not why.record.traced


def test_no_params_means_every_grad_leaf_of_the_trace() -> None:
    w, v = _params()
    with gradlens.trace() as t:
        loss = (w * v.detach()).sum()  # detach-default
    why = gradlens.explain(loss, trace=t)
    assert why.params["w"].status == "reachable"
    assert (why.params["v"].status, why.params["v"].source) == ("cut", line("detach-default"))


def test_uses_the_trace_recording_now_and_records_nothing() -> None:
    w, v = _params()
    with gradlens.trace(w=w, v=v) as t:
        loss = (w * v.detach()).sum()  # detach-live
        recorder = t._recorder
        assert recorder is not None
        before = len(recorder._events)
        why = gradlens.explain(loss, params={"w": w, "v": v})
        assert len(recorder._events) == before
    assert (why.params["v"].kind, why.params["v"].source) == ("detach", line("detach-live"))
    assert not any(e.kind == "backward" for e in t.events)


def test_trace_explain_defaults_to_the_last_backward_root() -> None:
    w, v = _params()
    with gradlens.trace(w=w, v=v) as t:
        loss = (w * v.detach()).sum()  # detach-method
        loss.backward(retain_graph=True)
    why = t.explain()
    assert why.params["v"].source == line("detach-method")
    assert why.params["w"].status == "reachable"


def test_hooks_removed_grad_untouched_and_backward_identical() -> None:
    def run(explain: bool) -> list[torch.Tensor]:
        model = _MLP()
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
        with gradlens.trace(model) as t:
            loss = model(x).pow(2).sum()
        fns = []
        stack = [loss.grad_fn]
        while stack:
            fn = stack.pop()
            fns.append(fn)
            stack.extend(c for c, _ in fn.next_functions if c is not None)
        if explain:
            live: set[int] = set()
            real_init, real_remove = RemovableHandle.__init__, RemovableHandle.remove

            def init(self, *a, **k):  # type: ignore[no-untyped-def]
                real_init(self, *a, **k)
                live.add(id(self))

            def remove(self):  # type: ignore[no-untyped-def]
                live.discard(id(self))
                real_remove(self)

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(RemovableHandle, "__init__", init)
                mp.setattr(RemovableHandle, "remove", remove)
                gradlens.explain(loss, params=model, trace=t)
            assert live == set()
            assert all(p.grad is None for p in model.parameters())
            assert all(fn.metadata == {} for fn in fns)
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    with_explain, without = run(True), run(False)
    assert len(with_explain) == len(without) == 4
    for a, b in zip(with_explain, without, strict=True):
        assert torch.equal(a, b)


def test_after_a_freed_graph_dead_comes_from_the_traced_backward() -> None:
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    with gradlens.trace(w=w) as t:
        loss = (torch.relu(w - 10) * 2).sum()  # relu-freed
        loss.backward()
    why = gradlens.explain(loss, params={"w": w}, trace=t)
    assert (why.params["w"].status, why.params["w"].source) == ("dead", line("relu-freed"))
    assert not why.record.dead_known or why.record.dead_known  # known through GradEvents

    v = torch.tensor([1.0, 2.0], requires_grad=True)
    loss2 = (v * 2).sum()
    loss2.backward()
    why2 = gradlens.explain(loss2, params={"v": v})
    assert why2.params["v"].status == "reachable"
    assert "unknown" in why2.params["v"].reason


def test_first_cut_in_forward_order_and_reachable_wins() -> None:
    w, v = _params()
    with gradlens.trace(w=w, v=v) as t:
        a = v.detach()  # first
        b = v.sum().item()  # second
        loss = (w * a).sum() * b + (w * 0).sum()
    why = gradlens.explain(loss, params={"w": w, "v": v}, trace=t)
    assert why.params["v"].source == line("first")
    assert why.params["w"].status == "reachable"


def test_a_cut_that_reaches_the_loss_beats_an_earlier_logging_read() -> None:
    w, v = _params()
    with gradlens.trace(w=w, v=v) as t:
        print(v.sum().item())  # logging
        loss = (w * v.detach()).sum()  # real-cut
    why = gradlens.explain(loss, params={"w": w, "v": v}, trace=t)
    assert why.params["v"].source == line("real-cut")
    assert "only through .detach()" in why.params["v"].reason


def test_rich_table_and_loss_errors() -> None:
    from gradlens.render.terminal import to_text

    w, v = _params()
    with gradlens.trace(w=w, v=v) as t:
        loss = (w * v.detach()).sum()
    why = gradlens.explain(loss, params={"w": w, "v": v}, trace=t)
    text = to_text(why.__rich__(), width=120)
    assert "cut (detach)" in text and "reachable" in text and HERE in text
    with pytest.raises(gradlens.GradlensError, match="loss tensor"):
        gradlens.explain(loss.item())  # type: ignore[arg-type]


def test_frozen_parameters_are_listed_but_not_flagged() -> None:
    model = _MLP()
    model.spare.requires_grad_(False)
    x = torch.randn(5, 3)
    with gradlens.trace(model) as t:
        loss = model(x).sum()
    why = gradlens.explain(loss, params=model, trace=t)
    spare = why.params["spare.weight"]
    assert (spare.status, spare.frozen) == ("unreachable", True)
    assert "spare.weight" not in {d.name for d in why.diagnostics}


def test_json_round_trip_of_a_trace_with_new_fields() -> None:
    from gradlens.records.serialize import dumps, loads

    w, v = _params()
    with gradlens.trace(w=w, v=v) as t:
        with torch.no_grad():
            h = v * 2
        s = v.sum().item()
        loss = (w * h).sum() * s
    ops = [e for e in t.events if e.kind == "op"]
    assert [(e.op, e.grad_enabled) for e in ops][:3] == [
        ("mul", False),
        ("sum", True),
        ("item", True),
    ]
    assert loads(dumps(t.record)) == t.record
    why = gradlens.explain(loss, params={"w": w, "v": v}, trace=t)
    assert why.params["v"].kind == "no_grad"


def _no_grad_fn_message(program: Callable[[], None]) -> str:
    with pytest.raises(RuntimeError, match="does not require grad"), gradlens.trace() as t:
        program()
    (d,) = [d for d in t.diagnostics if d.kind == "no-grad-fn"]
    return d.message


def test_no_grad_fn_names_the_no_grad_region_line() -> None:
    def program() -> None:
        w = torch.tensor([1.0], requires_grad=True)
        with torch.no_grad():
            y = w * 2
        y.backward()

    message = _no_grad_fn_message(program)
    lines, start = inspect.getsourcelines(program)
    line = start + next(i for i, t in enumerate(lines) if "w * 2" in t)
    assert (
        f"y was computed by mul at tests/test_explain.py:{line} inside torch.no_grad()" in message
    )


def test_no_grad_fn_names_the_detach_line_and_the_leaves_without_grad() -> None:
    def detached() -> None:
        w = torch.tensor([1.0], requires_grad=True)
        y = (w * 2).detach()
        y.backward()

    assert "was made by .detach() at tests/test_explain.py:" in _no_grad_fn_message(detached)

    def no_leaves() -> None:
        a = torch.tensor([1.0])
        b = torch.tensor([2.0])
        y = a * b
        y.backward()

    assert "computed only from tensors that do not require grad (a, b)" in _no_grad_fn_message(
        no_leaves
    )
