"""Writes that hide from the version counter, and writes that only look dangerous.

``no_grad`` and ``.detach()`` do not hide a write: the version counter is shared and still
bumps, so backward fails. ``.data`` and numpy do hide it: backward runs on the changed values
and returns a wrong gradient. Writes before the tensor is saved, after backward freed the
graph, or on tensors that no backward reads are harmless.
"""

from __future__ import annotations

import torch

from ._helpers import fixed_linear, grads, ramp
from ._registry import case


def _x() -> torch.Tensor:
    return torch.tensor([0.5, -1.0, 2.0], requires_grad=True)


def _w() -> torch.Tensor:
    return torch.tensor([1.0, 2.0, 3.0], requires_grad=True)


@case(expect="ok")
def inplace_on_nonsaved_intermediate():
    """y = x + 1 is saved by nothing; y.mul_(2) before using it is harmless."""
    x, w = _x(), _w()
    y = x + 1.0
    y.mul_(2.0)  # WRITE
    (y * w).sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def no_grad_inplace_on_saved():
    """no_grad does not hide a write: exp's saved output still changes version."""
    x = _x()
    h = x.exp()
    with torch.no_grad():
        h.add_(1.0)  # WRITE
    h.sum().backward()
    return grads(x=x)


def _unrelated_reference():
    x = _x()
    h = x.exp()
    h.sum().backward()
    return grads(x=x)


@case(expect="ok", reference=_unrelated_reference)
def no_grad_inplace_on_unrelated():
    """A running statistic updated under no_grad between forward and backward."""
    x = _x()
    running = torch.zeros(3)
    h = x.exp()
    with torch.no_grad():
        running.mul_(0.9).add_(h, alpha=0.1)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def detach_then_inplace_on_saved():
    """h.detach() shares h's storage and version counter: zeroing it breaks backward."""
    x = _x()
    h = torch.sigmoid(x)
    h.detach().zero_()  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok", reference=_unrelated_reference)
def detach_clone_then_inplace():
    """h.detach().clone() owns its memory: writing the copy is harmless."""
    x = _x()
    h = x.exp()
    snapshot = h.detach().clone()
    snapshot.zero_()  # WRITE
    h.sum().backward()
    return grads(x=x)


def _sigmoid_reference():
    x = _x()
    h = torch.sigmoid(x)
    h.sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_sigmoid_reference)
def data_write_on_saved_output():
    """h.data.mul_(2) on sigmoid's saved output: no error, wrong gradient."""
    x = _x()
    h = torch.sigmoid(x)
    h.data.mul_(2.0)  # WRITE
    h.sum().backward()
    return grads(x=x)


def _mul_reference():
    x, w = _x(), _w()
    a = x + 1.0
    (a * w).sum().backward()
    return grads(x=x, w=w)


@case(expect="silent", reference=_mul_reference)
def data_write_on_saved_input():
    """a.data.zero_() after a * w saved a: w's gradient comes out as zeros."""
    x, w = _x(), _w()
    a = x + 1.0
    y = a * w
    a.data.zero_()  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="silent", reference=_sigmoid_reference)
def data_setitem_on_saved_output():
    """h.data[0] = 0.9 on sigmoid's saved output."""
    x = _x()
    h = torch.sigmoid(x)
    h.data[0] = 0.9  # WRITE
    h.sum().backward()
    return grads(x=x)


def _two_layer_reference():
    x = ramp(2, 3, grad=True)
    l1, l2 = fixed_linear(3, 3), fixed_linear(3, 1)
    l2(torch.tanh(l1(x))).sum().backward()
    return grads(x=x, w1=l1.weight)


@case(expect="silent", reference=_two_layer_reference)
def data_update_of_param_between_forward_and_backward():
    """Updating a weight through .data after forward: backward uses the new weight."""
    x = ramp(2, 3, grad=True)
    l1, l2 = fixed_linear(3, 3), fixed_linear(3, 1)
    loss = l2(torch.tanh(l1(x))).sum()
    l2.weight.data.mul_(0.5)  # WRITE
    loss.backward()
    return grads(x=x, w1=l1.weight)


@case(expect="ok", reference=_two_layer_reference)
def data_assignment_of_linear_weight_between_forward_and_backward():
    """weight.data = new after forward: Linear saved weight.t(), a view of the old memory."""
    x = ramp(2, 3, grad=True)
    l1, l2 = fixed_linear(3, 3), fixed_linear(3, 1)
    loss = l2(torch.tanh(l1(x))).sum()
    l2.weight.data = torch.tensor([[1.0, -1.0, 0.5]])  # WRITE
    loss.backward()
    return grads(x=x, w1=l1.weight)


@case(expect="silent", reference=_mul_reference)
def data_assignment_of_saved_leaf():
    """w.data = new after a * w saved w itself: backward reads the new values."""
    x, w = _x(), _w()
    a = x + 1.0
    y = a * w
    w.data = torch.tensor([0.5, 0.5, 0.5])  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="silent", reference=_sigmoid_reference, visible=False)
def numpy_write_on_saved_output():
    """Writing sigmoid's saved output through a numpy view of its memory."""
    x = _x()
    h = torch.sigmoid(x)
    h.detach().numpy()[1] = 0.9  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_mul_reference, visible=False)
def numpy_write_on_saved_leaf():
    """Writing a weight that a * w saved through w.detach().numpy(): x's gradient is off."""
    x, w = _x(), _w()
    a = x + 1.0
    y = a * w
    w.detach().numpy()[:] = 0.5  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


def _product_reference():
    x, w = _x(), _w()
    (x * w).sum().backward()
    return grads(x=x, w=w)


@case(expect="ok", reference=_product_reference)
def data_write_on_unsaved():
    """y.data.mul_(0.5) on a product nothing saved: the gradient is unaffected."""
    x, w = _x(), _w()
    y = x * w
    y.data.mul_(0.5)  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="ok", reference=_product_reference)
def data_init_of_leaf_before_forward():
    """Initialising a leaf through .data before it is used."""
    x, w = _x(), torch.zeros(3, requires_grad=True)
    w.data.copy_(torch.tensor([1.0, 2.0, 3.0]))  # WRITE
    (x * w).sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def retain_graph_then_write_then_second_backward():
    """backward(retain_graph=True) keeps exp's saved output; writing it breaks the 2nd pass."""
    x = _x()
    h = x.exp()
    loss = h.sum()
    loss.backward(retain_graph=True)
    h.add_(1.0)  # WRITE
    loss.backward()
    return grads(x=x)


@case(expect="ok", reference=_unrelated_reference)
def write_after_backward():
    """Writing exp's output after backward already ran (and freed the graph) is harmless."""
    x = _x()
    h = x.exp()
    h.sum().backward()
    h.add_(1.0)  # WRITE
    return grads(x=x)


@case(expect="ok")
def write_saved_tensor_of_branch_not_backpropagated():
    """A sigmoid computed for logging is written; the loss never reads that branch."""
    x, w = _x(), _w()
    monitor = torch.sigmoid(x)
    monitor.mul_(100.0)  # WRITE
    (x * w).sum().backward()
    return grads(x=x, w=w)


@case(expect="fails", failure="leaf")
def leaf_inplace_add():
    """add_ on a leaf that requires grad raises at the write itself."""
    w = _w()
    w.add_(1.0)  # WRITE
    (w * 2.0).sum().backward()
    return grads(w=w)


@case(expect="fails", failure="view-leaf")
def leaf_setitem():
    """w[0] = 0 writes a view of a leaf that requires grad."""
    w = _w()
    w[0] = 0.0  # WRITE
    (w * 2.0).sum().backward()
    return grads(w=w)


@case(expect="ok", reference=_product_reference)
def no_grad_leaf_add_before_use():
    """with torch.no_grad(): w.add_(1) before the forward is harmless."""
    x, w = _x(), torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    with torch.no_grad():
        w.add_(1.0)  # WRITE
    (x * w).sum().backward()
    return grads(x=x, w=w)
