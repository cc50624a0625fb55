"""trace() and explain() on programs written in ways the lessons do not show: leaves made inside
the block, locals deleted after it, in-place writes to leaves, saved-tensor hooks."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

import gradlens

HERE = "tests/test_trace_robust.py"


def _line(needle: str) -> str:
    with open(HERE, encoding="utf-8") as f:
        (hit,) = [i for i, t in enumerate(f, 1) if needle in t and "_line(" not in t]
    return f"{HERE}:{hit}"


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_explain_names_the_cut_of_a_leaf_made_inside_or_outside_the_trace(where: str) -> None:
    torch.manual_seed(0)
    made = {}
    if where == "outside":
        made["w"] = torch.randn(3, requires_grad=True)
    with gradlens.trace() as t:
        w = made["w"] if where == "outside" else torch.randn(3, requires_grad=True)
        b = torch.randn(3, requires_grad=True)
        h = (torch.ones(3) * w).detach()  # the cut
        s = float((w * 2).sum())  # another cut: a host read, not used below
        loss = (h * b).sum() + s
        loss.backward()
    e = t.explain(loss)
    assert (e["w"].status, e["w"].kind, e["w"].source) == ("cut", "detach", _line("# the cut"))
    assert e["b"].status == "reachable"


def test_explain_names_a_no_grad_cut_of_a_leaf_made_inside_the_trace() -> None:
    with gradlens.trace() as t:
        w = torch.ones(2, requires_grad=True)
        with torch.no_grad():
            h = w * 3  # no_grad cut
        b = torch.ones(2, requires_grad=True)
        loss = (h * b).sum()
    e = t.explain(loss)
    assert (e["w"].status, e["w"].kind, e["w"].source) == ("cut", "no_grad", _line("# no_grad cut"))


def _big_local_dies_after_del() -> bool:
    big = torch.zeros(4_000_000)  # 16 MB
    ref = weakref.ref(big)
    with gradlens.trace():
        y = (big[:3] * 2).sum()
    with gradlens.guard():
        z = big[:3] + 1
    del big, y, z
    gc.collect()
    return ref() is None


def test_a_trace_keeps_no_local_of_the_caller_alive_after_del() -> None:
    assert _big_local_dies_after_del()


def test_a_trace_reports_an_inplace_write_to_a_leaf_like_the_guard() -> None:
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable") as plain:
        w.add_(1)
    with pytest.raises(RuntimeError) as traced, gradlens.trace() as t:
        w.add_(1)  # the leaf write
    assert str(traced.value) == str(plain.value)
    (v,) = t.record.violations
    assert (v.kind, v.tensor, v.write_op, v.write_source) == (
        "inplace-leaf",
        "w",
        "add_",
        _line("# the leaf write"),
    )
    assert [d.kind for d in t.diagnostics].count("inplace-leaf") == 1


def test_unpack_hooks_run_as_often_under_trace_and_guard_as_without() -> None:
    def run(ctx: object) -> tuple[int, int, torch.Tensor]:
        calls = {"pack": 0, "unpack": 0}

        def pack(t: torch.Tensor) -> torch.Tensor:
            calls["pack"] += 1
            return t

        def unpack(t: torch.Tensor) -> torch.Tensor:
            calls["unpack"] += 1
            return t

        x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with ctx:  # type: ignore[attr-defined]
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                y = (x.exp() * x).sigmoid()
            y.sum().backward()
        assert x.grad is not None
        return calls["pack"], calls["unpack"], x.grad

    import contextlib

    plain = run(contextlib.nullcontext())
    for ctx in (gradlens.trace(), gradlens.guard(verify=True), gradlens.guard(mode="strict")):
        got = run(ctx)
        assert got[:2] == plain[:2]
        assert torch.equal(got[2], plain[2])


def test_values_under_hooks_are_skipped_and_said_so() -> None:
    x = torch.ones(3, requires_grad=True)
    with gradlens.guard() as g:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            y = x.exp()
        y.sum().backward()
    assert sum(g.skipped.values()) >= 1
    (reason,) = g.skipped
    assert "saved_tensors_hooks" in reason
    with gradlens.trace() as t:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
            y = x.exp()
        y.sum().backward()
    assert any("saved_tensors_hooks" in n for n in t.record.notes)


def test_an_unpack_hook_error_still_comes_from_backward() -> None:
    def unpack(t: torch.Tensor) -> torch.Tensor:
        raise ValueError("unpack refused")

    x = torch.ones(3, requires_grad=True)
    for ctx in (gradlens.trace(), gradlens.guard(verify=True)):
        with ctx:  # type: ignore[attr-defined]
            with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
                y = x.exp()  # must not raise here
            with pytest.raises(ValueError, match="unpack refused"):
                y.sum().backward()


def test_an_intended_minus_infinity_mask_is_not_a_nan_finding() -> None:
    """nanoGPT's causal attention: masked_fill(mask == 0, -inf) before softmax."""
    torch.manual_seed(0)
    q = torch.randn(1, 4, 4, requires_grad=True)
    mask = torch.tril(torch.ones(4, 4))
    with gradlens.trace() as t:
        att = (q @ q.transpose(-2, -1)).masked_fill(mask == 0, float("-inf"))
        att.softmax(dim=-1).sum().backward()
    assert q.grad is not None and bool(torch.isfinite(q.grad).all())
    assert [d.kind for d in t.diagnostics if d.kind in ("non-finite", "nan-grad")] == []
    with gradlens.trace() as t:
        (torch.log(q * 0) * 1).sum()  # a computed -inf: still found
    assert [d.kind for d in t.diagnostics] == ["non-finite"]
