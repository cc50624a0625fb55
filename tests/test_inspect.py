"""``gradlens.inspect``: the autograd status of tensors, named after the caller's variables."""

from __future__ import annotations

import pytest
import torch

import gradlens
from gradlens.records import TensorStatus


def classic() -> tuple[torch.Tensor, ...]:
    w = torch.tensor([1.0], requires_grad=True)
    x = torch.tensor([2.0], requires_grad=True)
    a = w + x
    b = w + 1
    y = a * b
    return w, x, a, b, y


def facts(s: TensorStatus) -> tuple[object, ...]:
    return (s.is_leaf, s.requires_grad, s.grad_fn, s.retains_grad, s.version)


def test_statuses_of_the_classic_example() -> None:
    w, x, a, b, y = classic()
    found = gradlens.inspect(w, x, a, b, y)
    assert list(found.statuses) == ["w", "x", "a", "b", "y"]
    assert len(found) == 5
    assert [s.name for s in found] == ["w", "x", "a", "b", "y"]
    assert facts(found["w"]) == (True, True, None, False, 0)
    assert facts(found["x"]) == (True, True, None, False, 0)
    assert facts(found["a"]) == (False, True, "AddBackward0", False, 0)
    assert facts(found["b"]) == (False, True, "AddBackward0", False, 0)
    assert facts(found["y"]) == (False, True, "MulBackward0", False, 0)
    for s in found:
        assert (s.shape, s.dtype, s.device) == ((1,), "float32", "cpu")
        assert s.grad is None
    assert [found[n].value.values for n in ("w", "x", "a", "b", "y")] == [
        [1.0],
        [2.0],
        [3.0],
        [2.0],
        [6.0],
    ]
    assert [found[n].role for n in ("w", "a")] == ["leaf (requires grad)", "non-leaf"]


def test_why_no_grad() -> None:
    w, _x, a, _b, y = classic()
    c = torch.ones(2)
    found = gradlens.inspect(w, a, c)
    assert found["w"].why_no_grad() == "no backward() has reached it yet"
    why = found["a"].why_no_grad()
    assert why is not None
    assert "not a leaf" in why and "retain_grad" in why
    assert "does not require grad" in found["c"].why_no_grad()
    assert found["c"].role == "leaf (constant)"
    y.backward()
    after = gradlens.inspect(w, a)
    assert after["w"].why_no_grad() is None
    assert after["w"].grad.values == [5.0]
    assert after["a"].grad is None
    assert "retain_grad" in after["a"].why_no_grad()


def test_retain_grad_keeps_a_non_leafs_gradient() -> None:
    w, x, a, b, y = classic()
    a.retain_grad()
    assert gradlens.inspect(a)["a"].retains_grad is True
    y.backward()
    found = gradlens.inspect(w, x, a, b)
    assert found["a"].retains_grad is True
    assert found["a"].grad.values == [2.0]  # dy/da = b = 2
    assert found["a"].why_no_grad() is None
    assert found["b"].retains_grad is False and found["b"].grad is None
    assert (found["w"].grad.values, found["x"].grad.values) == ([5.0], [2.0])


def test_version_counts_in_place_writes() -> None:
    c = torch.zeros(4)
    v = c[1:3]
    v.add_(1)
    c.mul_(2)
    found = gradlens.inspect(c, v)
    # Views share their base's version counter.
    assert (found["c"].version, found["v"].version) == (2, 2)
    assert found["v"].shape == (2,)


def test_dtype_and_shape() -> None:
    m = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    i = torch.arange(5)
    found = gradlens.inspect(m, i)
    assert (found["m"].shape, found["m"].dtype) == ((2, 3), "float64")
    assert (found["i"].shape, found["i"].dtype, found["i"].requires_grad) == ((5,), "int64", False)


def test_keyword_names_and_unnamed_tensors() -> None:
    w, *_ = classic()
    found = gradlens.inspect(w, torch.ones(1), weight=w)
    assert list(found.statuses) == ["w", "t1", "weight"]
    assert found["weight"].is_leaf is True


def test_same_tensor_twice_gets_a_distinct_name() -> None:
    w, *_ = classic()
    assert list(gradlens.inspect(w, w).statuses) == ["w", "w'"]


def test_str_shows_the_names_and_facts() -> None:
    w, x, a, b, y = classic()
    text = str(gradlens.inspect(w, x, a, b, y))
    lines = text.splitlines()
    for name, grad_fn in [("w", "—"), ("x", "—"), ("a", "AddBackward0"), ("y", "MulBackward0")]:
        row = next(line for line in lines if line.split()[:1] == [name])
        assert grad_fn in row
        assert "[1]" in row and "float32" in row
    assert "retain_grad" in text


def test_non_tensor_arguments() -> None:
    w, *_ = classic()
    with pytest.raises(gradlens.GradlensError, match="argument 1 is a list, not a tensor"):
        gradlens.inspect(w, [w])
    with pytest.raises(gradlens.GradlensError, match="argument 0 is a float, not a tensor"):
        gradlens.inspect(1.0)
    with pytest.raises(gradlens.GradlensError, match="k= is a"):
        gradlens.inspect(k=3)


def test_inspect_changes_nothing() -> None:
    w, x, a, _b, y = classic()
    gradlens.inspect(w, a, y)
    assert a.grad_fn.metadata == {}
    y.backward()
    assert (w.grad.tolist(), x.grad.tolist()) == ([5.0], [2.0])
    assert w._version == 0
