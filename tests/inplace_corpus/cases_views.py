"""In-place writes through views, indexing, ``out=`` and the in-place tensor methods.

A view shares its base's version counter, so writing any view of a saved tensor (slice,
transpose, narrow, select, expand) counts as writing the saved tensor, and writing the base
of a saved view counts as writing the view.
"""

from __future__ import annotations

import torch

from ._helpers import grads
from ._registry import case


def _x() -> torch.Tensor:
    return torch.tensor([0.5, -1.0, 2.0, 0.25], requires_grad=True)


def _m() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0, 2.0], [0.25, 1.5, -0.75]], requires_grad=True)


@case(expect="fails")
def setitem_on_saved_output():
    """h[0] = 0 after exp (which saved h)."""
    x = _x()
    h = x.exp()
    h[0] = 0.0  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def setitem_on_unsaved_padding():
    """Zeroing a padded position of an unsaved intermediate (x * w saves x and w)."""
    x = _x()
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    h = x * w
    h[3] = 0.0  # WRITE
    h.sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def iadd_on_slice_of_saved():
    """h[1:] += 1 writes tanh's saved output through a slice."""
    x = _x()
    h = torch.tanh(x)
    h[1:] += 1.0  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def iadd_on_slice_of_unsaved():
    """The same += on a slice of a sum, which nothing saved."""
    x = _x()
    h = x + 1.0
    h[1:] += 1.0  # WRITE
    (h * 2.0).sum().backward()
    return grads(x=x)


@case(expect="fails")
def write_base_of_saved_expand():
    """b = a.expand(...) is saved by b * w; writing the base a changes b."""
    x = _x()
    w = torch.ones(2, 4, requires_grad=True)
    a = x + 0.0
    b = a.expand(2, 4)
    z = b * w
    a.add_(1.0)  # WRITE
    z.sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def strided_view_of_saved():
    """Zeroing every other element of sigmoid's saved output through h[::2]."""
    x = _x()
    h = torch.sigmoid(x)
    h[::2].zero_()  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def strided_view_of_unsaved():
    """The same strided write on an unsaved intermediate."""
    x = _x()
    h = x * 3.0
    h[::2].zero_()  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def transpose_view_of_saved():
    """Scaling tanh's saved output through h.t()."""
    m = _m()
    h = torch.tanh(m)
    h.t().mul_(2.0)  # WRITE
    h.sum().backward()
    return grads(m=m)


@case(expect="fails")
def narrow_view_of_saved():
    """Filling a narrow() view of exp's saved output."""
    m = _m()
    h = m.exp()
    h.narrow(1, 0, 2).fill_(1.0)  # WRITE
    h.sum().backward()
    return grads(m=m)


@case(expect="ok")
def select_view_of_unsaved():
    """Filling a select() row of a matmul output, which matmul does not save."""
    m = _m()
    w = torch.tensor([[1.0, 0.0], [0.5, 1.0], [-1.0, 2.0]], requires_grad=True)
    h = m @ w
    h.select(0, 1).fill_(0.0)  # WRITE
    h.sum().backward()
    return grads(m=m, w=w)


@case(expect="fails")
def out_into_saved_buffer():
    """Reusing a preallocated buffer with out= after it was saved by x * buf."""
    x = _x()
    buf = torch.empty(4)
    torch.exp(torch.tensor([0.0, 1.0, 2.0, 3.0]), out=buf)
    y = x * buf
    torch.exp(torch.tensor([1.0, 1.0, 1.0, 1.0]), out=buf)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="ok")
def out_into_unsaved_buffer():
    """Reusing a buffer with out= that only fed an add (add saves nothing)."""
    x = _x()
    buf = torch.empty(4)
    torch.exp(torch.tensor([0.0, 1.0, 2.0, 3.0]), out=buf)
    y = x + buf
    torch.exp(torch.tensor([1.0, 1.0, 1.0, 1.0]), out=buf)  # WRITE
    (y * 2.0).sum().backward()
    return grads(x=x)


@case(expect="fails")
def copy_into_saved():
    """Tensor.copy_ overwrites tanh's saved output."""
    x = _x()
    h = torch.tanh(x)
    h.copy_(torch.zeros(4))  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def copy_into_unsaved():
    """Tensor.copy_ into an intermediate that nothing saved."""
    x = _x()
    h = x + 1.0
    h.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # WRITE
    (h * 2.0).sum().backward()
    return grads(x=x)


@case(expect="fails")
def masked_fill_on_saved_probs():
    """Masking the probabilities after softmax (which saved them)."""
    x = _x()
    p = torch.softmax(x, dim=0)
    p.masked_fill_(torch.tensor([False, True, False, False]), 0.0)  # WRITE
    (p * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    return grads(x=x)


@case(expect="ok")
def masked_fill_on_attention_scores():
    """Masking attention scores before softmax: q @ k.T does not save its output."""
    q = _m()
    k = torch.tensor([[1.0, 0.5, -0.5], [0.0, 1.0, 2.0]], requires_grad=True)
    scores = q @ k.t()
    scores.masked_fill_(torch.tensor([[False, True], [False, False]]), -1e9)  # WRITE
    (scores.softmax(-1) * torch.tensor([1.0, 2.0])).sum().backward()
    return grads(q=q, k=k)


@case(expect="fails")
def index_add_on_saved():
    """index_add_ into sigmoid's saved output."""
    x = _x()
    h = torch.sigmoid(x)
    h.index_add_(0, torch.tensor([0, 2]), torch.tensor([1.0, 1.0]))  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def index_add_on_unsaved():
    """index_add_ into an intermediate that nothing saved."""
    x = _x()
    h = x * 2.0
    h.index_add_(0, torch.tensor([0, 2]), torch.tensor([1.0, 1.0]))  # WRITE
    (h * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    return grads(x=x)


@case(expect="fails")
def clamp_on_saved():
    """Clamping exp's saved output in place."""
    x = _x()
    h = x.exp()
    h.clamp_(max=2.0)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def clamp_on_unsaved():
    """Clamping an unsaved intermediate in place (clamp_ keeps what it needs itself)."""
    x = _x()
    h = x * 2.0
    h.clamp_(min=0.0)  # WRITE
    (h * 3.0).sum().backward()
    return grads(x=x)


@case(expect="fails")
def zero_on_saved():
    """zero_() on relu's saved output."""
    x = _x()
    h = torch.relu(x)
    h.zero_()  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="ok")
def fill_on_unsaved():
    """fill_() on an intermediate that nothing saved."""
    x = _x()
    h = x - 1.0
    h.fill_(2.0)  # WRITE
    (h * x).sum().backward()
    return grads(x=x)
