"""Scenarios of PyTorch's custom ``autograd.Function`` tests with in-place writes, in our own words.

From ``test/test_autograd.py`` (pytorch/pytorch): ``ctx.save_for_backward`` then a write to what
was saved, ``ctx.mark_dirty`` used right (the Function writes its input and says so) and wrong
(a view input with several outputs, a dirty tensor not returned, a non-input marked dirty, a
view of a leaf), ``mark_non_differentiable`` outputs written after use, and ``InplaceFunction``
on a leaf. The ``# WRITE`` line of a Function that writes inside ``forward`` is its ``apply``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from ._helpers import exact, grads
from ._registry import case


class _Square(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _ExpSavesOutput(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.exp()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return out * g


class _SquareNoneAround(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(None, x, None)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        _, x, _ = ctx.saved_tensors
        return 2 * x * g


class _SquareSetupContext(Function):
    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x**2

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        (x,) = inputs
        ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * 2 * x


def _x() -> torch.Tensor:
    return torch.tensor([0.5, -1.0, 2.0], requires_grad=True)


@case(expect="fails")
def write_an_input_a_function_saved():
    """from test_autograd.py test_function (save_for_backward of an input), written after apply."""
    leaf = _x()
    x = leaf.clone()
    y = _Square.apply(x)
    x.mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def write_an_output_a_function_saved():
    """from test_autograd.py test_custom_autograd_no_early_free (a saved output), written after."""
    x = _x()
    y = _ExpSavesOutput.apply(x)
    y.add_(1.0)  # WRITE
    (y * 2.0).sum().backward()
    return grads(x=x)


@case(expect="fails")
def write_an_input_saved_between_nones():
    """from test_autograd.py test_save_none_for_backward: save_for_backward(None, x, None)."""
    leaf = _x()
    x = leaf.clone()
    y = _SquareNoneAround.apply(x)
    x.zero_()  # WRITE
    y.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def write_an_input_saved_in_setup_context():
    """from test_autograd.py test_custom_function_setup_context_simple: saved in setup_context."""
    leaf = _x()
    x = leaf.clone()
    y = _SquareSetupContext.apply(x)
    x.add_(1.0)  # WRITE
    y.sum().backward()
    return grads(leaf=leaf)


def _square_reference():
    leaf = _x()
    x = leaf.clone()
    _Square.apply(x).sum().backward()
    return grads(leaf=leaf)


@case(expect="ok", reference=_square_reference)
def write_a_tensor_the_function_did_not_save():
    """from test_autograd.py test_function: a scratch tensor beside the Function is written."""
    leaf = _x()
    x = leaf.clone()
    scratch = x + 0.0
    y = _Square.apply(x)
    scratch.mul_(3.0)  # WRITE
    y.sum().backward()
    return grads(leaf=leaf)


class _Adder(Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a.add_(b)
        ctx.mark_dirty(a)
        return a

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad


@case(expect="ok")
def function_adds_into_its_input_and_marks_it_dirty():
    """from test_autograd.py test_autograd_python_custom_function_inplace (I, no extra inplace)."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    c = _Adder.apply(a.clone(), b)  # WRITE
    c.sum().backward()
    return grads(a=a, b=b)


@case(expect="ok")
def add_to_the_dirty_output_of_a_function():
    """from test_autograd.py test_autograd_python_custom_function_inplace: c += 2 afterwards."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    c = _Adder.apply(a.clone(), b)
    c += 2.0  # WRITE
    c.sum().backward()
    return grads(a=a, b=b)


@case(expect="ok")
def function_adds_into_a_view_input():
    """from test_autograd.py test_autograd_python_custom_function_inplace: the input is a view."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    c = _Adder.apply(a.clone().view_as(a), b)  # WRITE
    c.sum().backward()
    return grads(a=a, b=b)


class _AdderTwoOutputs(Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a.add_(b)
        ctx.mark_dirty(a)
        return a, a + b

    @staticmethod
    def backward(ctx: Any, ga: torch.Tensor, gab: torch.Tensor) -> tuple[Any, Any]:
        return ga + gab, ga + gab


@case(expect="ok")
def add_to_the_dirty_output_of_a_two_output_function():
    """from test_autograd.py test_autograd_python_custom_function_inplace (II): c += 2."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    c, d = _AdderTwoOutputs.apply(a.clone(), b)
    c += 2.0  # WRITE
    (c * d).sum().backward()
    return grads(a=a, b=b)


@case(expect="fails", failure="mark-dirty")
def two_output_function_adds_into_a_view_input():
    """from test_autograd.py test_autograd_python_custom_function_inplace (II): a view input."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    c, d = _AdderTwoOutputs.apply(a.clone().view_as(a), b)  # WRITE
    (c * d).sum().backward()
    return grads(a=a, b=b)


class _AdderReturnsClone(Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a.add_(b)
        ctx.mark_dirty(a)
        return a.clone(), a + b

    @staticmethod
    def backward(ctx: Any, ga: torch.Tensor, gab: torch.Tensor) -> tuple[Any, Any]:
        return ga + gab, ga + 2 * gab


@case(expect="fails", failure="mark-dirty")
def function_marks_dirty_but_returns_a_clone():
    """from test_autograd.py test_autograd_python_custom_function_inplace (III)."""
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    orig_a = a.clone().view_as(a)
    c, d = _AdderReturnsClone.apply(orig_a, b)  # WRITE
    (c * d).sum().backward()
    return grads(a=a, b=b)


class _MarksIntermediateDirty(Function):
    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor) -> torch.Tensor:
        out = inp.clone().view_as(inp)
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


@case(expect="fails", failure="mark-dirty")
def function_marks_a_non_input_dirty():
    """from test_autograd.py test_custom_function_mark_output_view_of_intermediate."""
    a = torch.tensor([1.0], requires_grad=True)
    out = _MarksIntermediateDirty.apply(a.clone())  # WRITE
    out.sum().backward()
    return grads(a=a)


class _AddOneDirty(Function):
    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor) -> torch.Tensor:
        inp.add_(1)
        ctx.mark_dirty(inp)
        return inp

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


@case(expect="fails", failure="view")
def function_adds_into_one_output_of_split():
    """from test_autograd.py test_custom_function_inplace_on_non_default_view."""
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b, _ = a.clone().split_with_sizes([1, 1], dim=0)
    out = _AddOneDirty.apply(b)  # WRITE
    out.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="view-leaf")
def function_adds_into_a_view_of_a_leaf():
    """from test_autograd.py test_custom_function_inplace_on_view_of_leaf."""
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = a.view_as(a)
    out = _AddOneDirty.apply(b)  # WRITE
    out.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="leaf")
def function_adds_into_a_leaf():
    """from test_autograd.py test_return_duplicate_inplace: an in-place Function on a leaf."""
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    out = _AddOneDirty.apply(a)  # WRITE
    out.sum().backward()
    return grads(a=a)


class _AddIntoFirst(Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.mark_dirty(a)
        return a.add_(b), b + 2

    @staticmethod
    def backward(ctx: Any, grad_a: torch.Tensor, grad_b: torch.Tensor) -> tuple[Any, Any]:
        return grad_a, grad_a + grad_b


@case(expect="ok", reference=exact(y=[[1.0, 1.0], [1.0, 1.0]]))
def function_adds_into_a_plain_tensor_and_returns_it():
    """from test_autograd.py test_return_leaf_inplace: x does not require grad; q is x."""
    x = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
    y = torch.tensor([[1.0, 1.0], [0.5, 0.5]], requires_grad=True)
    q, _ = _AddIntoFirst.apply(x, y)  # WRITE
    q.sum().backward()
    return grads(y=y)


class _DoubleInplace(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x.mul_(2)
        ctx.mark_dirty(x)
        return x, x

    @staticmethod
    def backward(ctx: Any, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        return g1 * 2 + g2 * 2


@case(expect="ok")
def function_doubles_in_place_and_returns_it_twice():
    """from test_autograd.py test_return_duplicate_inplace: a, b = DoubleInplace(x.clone())."""
    x = torch.tensor([[0.5, 1.0], [2.0, -1.0]], requires_grad=True)
    a, b = _DoubleInplace.apply(x.clone())  # WRITE
    (a + b).sum().backward()
    return grads(x=x)


class _LocalInplace(Function):
    @staticmethod
    def forward(ctx: Any, inp: torch.Tensor) -> torch.Tensor:
        view = inp.clone()[:3]
        view += 2
        return view

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(5)
        out[:3] = grad
        return out


@case(expect="ok")
def function_writes_a_local_view_inside_forward():
    """from test_autograd.py test_custom_function_local_inplace: view += 2 inside forward."""
    base = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5], requires_grad=True)
    foo = _LocalInplace.apply(base)  # WRITE
    foo.sum().backward()
    return grads(base=base)


class _MulTwoDirty(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)
        return x.mul_(2)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, Any]:
        return grad * 2, None


@case(expect="ok", reference=exact(a=[2.0]))
def function_doubles_a_view_in_place():
    """from test_autograd.py test_inplace_on_view_undefined_grad_output: v = c[:], mul_(2)."""
    a = torch.tensor([1.0], requires_grad=True)
    c = a.clone()
    v = c[:]
    b = torch.tensor(1.0, requires_grad=True)
    out = _MulTwoDirty.apply(v, b)  # WRITE
    out.backward()
    return grads(a=a)


class _PyAdd(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)
        x.add_(y)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, Any]:
        return grad, grad


@case(expect="ok")
def function_adds_into_views_of_views():
    """from test_autograd.py test_inplace_on_view_python: PyAdd on x.narrow(...).narrow(...)."""
    a = torch.arange(16.0).reshape(4, 4).requires_grad_()
    b = torch.tensor([[1.0, 2.0], [0.5, -1.0]], requires_grad=True)
    x = a.clone()
    _PyAdd.apply(x.narrow(1, 2, 2).narrow(0, 1, 2), b)  # WRITE
    _PyAdd.apply(x.narrow(1, 0, 2).narrow(0, 1, 2), b)
    (x * x).sum().backward()
    return grads(a=a, b=b)


class _Positive(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x > 0
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return torch.zeros(g.shape)


@case(expect="fails")
def flip_a_non_differentiable_mask_masked_fill_saved():
    """from test_autograd.py test_mark_non_differentiable: masked_fill saves the mask; flipping
    it in place afterwards breaks backward."""
    x = torch.tensor([[0.5, -1.0], [2.0, -0.25]], requires_grad=True)
    mask = _Positive.apply(x)
    y = x.masked_fill(mask, 0)
    mask.logical_not_()  # WRITE
    y.sum().backward()
    return grads(x=x)


class _Clone(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


@case(expect="ok")
def write_the_output_of_a_function_that_saved_nothing():
    """from test_autograd.py test_multi_grad_all_hooks (a Python Function that saves nothing)."""
    x = _x()
    y = _Clone.apply(x)
    y.mul_(3.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


class _OnceDifferentiable(Function):
    @staticmethod
    def forward(ctx: Any, t1: torch.Tensor, scalar: float, t2: torch.Tensor) -> torch.Tensor:
        ctx.scalar = scalar
        ctx.save_for_backward(t1, t2)
        return t1 + scalar * t2 + t1 * t2

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, Any, Any]:
        t1, t2 = ctx.saved_tensors
        return g + g * t2, None, g * ctx.scalar + g * t1


@case(expect="fails")
def write_an_input_a_once_differentiable_function_saved():
    """from test_autograd.py test_once_differentiable: save_for_backward(t1, t2), t2 written."""
    x = torch.tensor([[0.5, 1.0], [2.0, -1.0]], requires_grad=True)
    y = torch.tensor([[1.0, 2.0], [0.5, 0.25]], requires_grad=True)
    t2 = y.clone()
    out = _OnceDifferentiable.apply(x, 2, t2)
    t2.mul_(3.0)  # WRITE
    out.sum().backward()
    return grads(x=x, y=y)


class _DirtyAndSaved(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * 2 + 0 * x


@case(expect="ok")
def function_saves_the_input_it_marked_dirty():
    """from test_autograd.py test_custom_function_saving_mutated_view_no_leak: mark_dirty(x) and
    save_for_backward(x) of a view input; backward runs."""
    leaf = torch.tensor([1.0, -2.0], requires_grad=True)
    x = leaf.clone().view_as(leaf)
    y = _DirtyAndSaved.apply(x)  # WRITE
    y.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def write_the_dirty_output_a_function_saved():
    """from test_autograd.py test_custom_function_saving_mutated_view_no_leak, then the returned
    (dirty, saved) tensor is written again before backward."""
    leaf = torch.tensor([1.0, -2.0], requires_grad=True)
    x = leaf.clone()
    y = _DirtyAndSaved.apply(x)
    y.add_(1.0)  # WRITE
    y.sum().backward()
    return grads(leaf=leaf)


class _ReturnsInput(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2


@case(expect="fails", failure="view")
def write_the_output_of_a_function_that_returns_its_input():
    """from test_autograd.py test_function_returns_input: MyFunction.apply(v.clone()) returns
    its input as-is, which autograd treats as a view made inside a custom Function: scaling
    it in place is refused."""
    v = torch.ones(2, requires_grad=True)
    out = _ReturnsInput.apply(v.clone())
    out.mul_(3.0)  # WRITE
    out.sum().backward()
    return grads(v=v)
