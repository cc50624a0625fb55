"""In-place writes after elementwise ops, pow, div, matmul: which ops save what.

exp/sigmoid/tanh/relu/sqrt/softmax save their output; mul/div/pow(scalar)/log/matmul save
their inputs (mul and div only the inputs the *other* operand's gradient needs); add saves
nothing. Writing a saved tensor fails at backward; writing an unsaved one is harmless.
"""

from __future__ import annotations

import torch

from ._helpers import grads
from ._registry import case


def _x() -> torch.Tensor:
    return torch.tensor([0.5, -1.0, 2.0], requires_grad=True)


@case(expect="fails")
def exp_then_add_():
    """exp saves its output; adding to it in place breaks ExpBackward."""
    x = _x()
    h = x.exp()
    h.add_(1.0)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def sigmoid_then_mul_():
    """sigmoid saves its output; scaling it in place breaks SigmoidBackward."""
    x = _x()
    h = torch.sigmoid(x)
    h.mul_(2.0)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def tanh_then_sub_():
    """tanh saves its output."""
    x = _x()
    h = torch.tanh(x)
    h.sub_(0.5)  # WRITE
    (h * h.detach()).sum().backward()
    return grads(x=x)


@case(expect="fails")
def relu_output_then_mul_():
    """relu saves its output (the mask is read from the result)."""
    x = _x()
    h = torch.relu(x * 2.0)
    h.mul_(0.5)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def relu_input_then_add_():
    """relu saves its output, not its input: writing the input afterwards is harmless."""
    x = _x()
    a = x * 2.0
    h = torch.relu(a)
    a.add_(1.0)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def mul_input_then_add_():
    """a * w saves a for w's gradient; a is then changed."""
    x = _x()
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a = x + 1.0
    y = a * w
    a.add_(1.0)  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="ok")
def mul_by_constant_then_write_input():
    """a * c with c not requiring grad saves only c: writing a afterwards is harmless."""
    x = _x()
    c = torch.tensor([1.0, 2.0, 3.0])
    a = x + 1.0
    y = a * c
    a.add_(1.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="ok")
def mul_output_then_write():
    """mul does not save its output: writing the product is harmless."""
    x = _x()
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * w
    y.add_(1.0)  # WRITE
    (y * 3.0).sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def div_by_buffer_then_update_buffer():
    """x / scale saves scale (a buffer, no grad); updating the running scale breaks it."""
    x = _x()
    scale = torch.tensor([2.0, 4.0, 8.0])
    y = x / scale
    scale.mul_(0.9)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="ok")
def div_numerator_then_write():
    """a / c with a constant c saves only c: writing the numerator is harmless."""
    x = _x()
    scale = torch.tensor([2.0, 4.0, 8.0])
    a = x * 1.0
    y = a / scale
    a.zero_()  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="fails")
def pow_then_write_base():
    """a ** 2 saves its base a."""
    x = _x()
    a = x + 0.5
    y = a**2
    a.add_(1.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="ok")
def pow_then_write_output():
    """a ** 2 (scalar exponent) saves only the base, not the result."""
    x = _x()
    a = x + 0.5
    y = a**2
    y.add_(1.0)  # WRITE
    (y * 2.0).sum().backward()
    return grads(x=x)


@case(expect="fails")
def pow_tensor_exponent_then_write_output():
    """pow with a tensor exponent saves its result too (even for a constant exponent)."""
    x = _x()
    e = torch.tensor([1.0, 2.0, 3.0])
    y = torch.pow(x + 3.0, e)
    y.mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="ok")
def log_then_write_output():
    """log saves its input, not its output: writing the output is harmless."""
    x = _x()
    y = (x + 3.0).log()
    y.mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="fails")
def sqrt_then_write_output():
    """sqrt saves its output."""
    x = _x()
    y = (x + 3.0).sqrt()
    y.mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="fails")
def matmul_then_write_input():
    """h @ w2 saves h (for w2's gradient); h is then doubled."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
    w1 = torch.tensor([[1.0, 0.5], [-0.5, 1.0]], requires_grad=True)
    w2 = torch.tensor([[0.3], [0.7]], requires_grad=True)
    h = x @ w1
    y = h @ w2
    h.mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(x=x, w1=w1, w2=w2)


@case(expect="ok")
def matmul_then_write_output():
    """matmul saves its inputs, not its output."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
    w = torch.tensor([[1.0, 0.5], [-0.5, 1.0]], requires_grad=True)
    y = x @ w
    y.mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def softmax_then_write_output():
    """softmax saves its output."""
    x = _x()
    p = torch.softmax(x, dim=0)
    p.mul_(2.0)  # WRITE
    (p * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    return grads(x=x)


@case(expect="fails")
def exp_inplace_then_add_():
    """exp_ saves its own result (a itself), so a second in-place op on a breaks it."""
    x = _x()
    a = x + 1.0
    a.exp_()
    a.add_(1.0)  # WRITE
    a.sum().backward()
    return grads(x=x)


@case(expect="ok")
def sigmoid_inplace_on_fresh_tensor():
    """sigmoid_ on an intermediate nobody saved is harmless (it saves its own result)."""
    x = _x()
    a = x + 1.0
    a.sigmoid_()  # WRITE
    (a * 2.0).sum().backward()
    return grads(x=x)
