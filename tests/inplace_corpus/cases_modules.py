"""In-place writes by modules and optimizers.

``nn.ReLU(inplace=True)`` is fine after ops that save their inputs (Linear, Conv, BatchNorm,
GELU) and breaks after ops that save their outputs (Sigmoid, Tanh, exp). ``optimizer.step()``
writes every parameter in place, so stepping between a forward and its backward breaks the
graphs that saved those parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._helpers import fixed, fixed_linear, grads, ramp
from ._registry import case


def _batch() -> torch.Tensor:
    return ramp(4, 3, lo=-1.5, hi=2.0, grad=True)


@case(expect="fails")
def sigmoid_then_relu_inplace():
    """Linear -> Sigmoid -> ReLU(inplace=True): relu_ writes sigmoid's saved output."""
    x = _batch()
    lin, sig, act = fixed_linear(3, 2), nn.Sigmoid(), nn.ReLU(inplace=True)
    h = sig(lin(x))
    h = act(h)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight)


@case(expect="fails")
def tanh_then_relu_inplace_sequential():
    """The same mistake inside nn.Sequential: the write happens in the model call."""
    x = _batch()
    model = nn.Sequential(fixed_linear(3, 2), nn.Tanh(), nn.ReLU(inplace=True))
    out = model(x)  # WRITE
    out.sum().backward()
    return grads(x=x, weight=model[0].weight)


@case(expect="fails")
def exp_then_functional_relu_inplace():
    """F.relu(..., inplace=True) on exp's saved output."""
    x = _batch()
    lin = fixed_linear(3, 2)
    h = torch.exp(lin(x))
    h = F.relu(h, inplace=True)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight)


@case(expect="ok")
def linear_then_relu_inplace():
    """Linear -> ReLU(inplace=True): addmm saves its inputs, not its output."""
    x = _batch()
    lin, act = fixed_linear(3, 2), nn.ReLU(inplace=True)
    h = lin(x)
    h = act(h)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight, bias=lin.bias)


@case(expect="ok")
def gelu_then_functional_relu_inplace():
    """GELU saves its input, so an in-place ReLU on its output is harmless."""
    x = _batch()
    lin = fixed_linear(3, 2)
    h = F.gelu(lin(x))
    h = F.relu(h, inplace=True)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight)


@case(expect="ok")
def conv_then_relu_inplace():
    """Conv2d -> ReLU(inplace=True), the usual CNN block."""
    x = ramp(1, 1, 3, 3, grad=True)
    conv = fixed(nn.Conv2d, 1, 2, 2)
    act = nn.ReLU(inplace=True)
    h = conv(x)
    h = act(h)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=conv.weight, bias=conv.bias)


@case(expect="ok")
def batchnorm_then_relu_inplace():
    """BatchNorm1d -> ReLU(inplace=True), the ResNet pattern: batch norm saves its input."""
    x = _batch()
    bn = nn.BatchNorm1d(3)
    act = nn.ReLU(inplace=True)
    h = bn(x * 1.0)
    h = act(h)  # WRITE
    (h * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    return grads(x=x, weight=bn.weight, bias=bn.bias)


@case(expect="ok")
def dropout_inplace_after_linear():
    """Dropout(inplace=True) after Linear (seeded): it writes an unsaved output."""
    x = _batch()
    lin, drop = fixed_linear(3, 2), nn.Dropout(p=0.5, inplace=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        h = lin(x)
        h = drop(h)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight)


@case(expect="fails")
def dropout_inplace_after_sigmoid():
    """Dropout(inplace=True) after Sigmoid (seeded): it writes sigmoid's saved output."""
    x = _batch()
    lin, drop = fixed_linear(3, 2), nn.Dropout(p=0.5, inplace=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        h = torch.sigmoid(lin(x))
        h = drop(h)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight)


@case(expect="fails")
def residual_iadd_after_layernorm():
    """h += ln(h): layer norm saved h, and the residual add writes it."""
    x = _batch()
    lin, ln = fixed_linear(3, 3), nn.LayerNorm(3)
    h = lin(x)
    h += ln(h)  # WRITE
    h.sum().backward()
    return grads(x=x, weight=lin.weight)


@case(expect="fails")
def custom_block_scales_saved_output():
    """A user module whose forward scales tanh's saved output in place."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = fixed_linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.lin(x))
            h *= 0.5  # WRITE
            return h

    x = _batch()
    block = Block()
    block(x).sum().backward()
    return grads(x=x, weight=block.lin.weight)


@case(expect="fails")
def linear_input_without_grad_then_relu_():
    """Linear saves its input for the weight's gradient even when the input needs none."""
    x = ramp(4, 3, lo=-1.5, hi=2.0)
    lin = fixed_linear(3, 2)
    h = lin(x)
    torch.relu_(x)  # WRITE
    h.sum().backward()
    return grads(weight=lin.weight)


@case(expect="fails")
def embedding_indices_shifted():
    """Embedding saves its index tensor; shifting the indices in place breaks it."""
    emb = fixed(nn.Embedding, 5, 2)
    idx = torch.tensor([0, 3, 1])
    y = emb(idx)
    idx.add_(1)  # WRITE
    y.sum().backward()
    return grads(weight=emb.weight)


def _gan() -> tuple[nn.Linear, nn.Linear, torch.Tensor, torch.Tensor]:
    gen, disc = fixed_linear(2, 3), fixed_linear(3, 1)
    z = torch.tensor([[0.5, -1.0], [1.5, 0.25]])
    real = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    return gen, disc, z, real


@case(expect="fails")
def gan_discriminator_step_before_generator_backward():
    """GAN loop: D steps (writing its weights) before G's loss, which saved them, backprops."""
    gen, disc, z, real = _gan()
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.1)
    fake = gen(z)
    d_loss = disc(fake.detach()).mean() - disc(real).mean()
    g_loss = -disc(fake).mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()  # WRITE
    g_loss.backward()
    return grads(gen_weight=gen.weight)


@case(expect="ok")
def gan_generator_loss_after_discriminator_step():
    """The correct order: step D, then build G's loss with the updated D and backprop."""
    gen, disc, z, real = _gan()
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.1)
    fake = gen(z)
    d_loss = disc(fake.detach()).mean() - disc(real).mean()
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()  # WRITE
    g_loss = -disc(fake).mean()
    g_loss.backward()
    return grads(gen_weight=gen.weight, gen_bias=gen.bias)


@case(expect="fails")
def two_losses_step_between_backwards():
    """loss1.backward(retain_graph=True); step(); loss2.backward() on the shared graph."""
    x = _batch()
    lin = fixed_linear(3, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    h = lin(x)
    loss1, loss2 = h.pow(2).mean(), h.abs().mean()
    loss1.backward(retain_graph=True)
    opt.step()  # WRITE
    loss2.backward()
    return grads(x=x, weight=lin.weight)


@case(expect="fails", failure="leaf")
def manual_sgd_without_no_grad():
    """w -= lr * w.grad outside no_grad: an in-place op on a leaf that requires grad."""
    x = _batch()
    w = torch.tensor([[0.5], [-1.0], [0.25]], requires_grad=True)
    (x @ w).sum().backward()
    w -= 0.1 * w.grad  # WRITE
    (x @ w).sum().backward()
    return grads(w=w)


@case(expect="ok")
def manual_sgd_under_no_grad():
    """The same update under no_grad, between one step's backward and the next forward."""
    x = _batch()
    w = torch.tensor([[0.5], [-1.0], [0.25]], requires_grad=True)
    (x @ w).pow(2).sum().backward()
    with torch.no_grad():
        w -= 0.1 * w.grad  # WRITE
    w.grad = None
    (x @ w).pow(2).sum().backward()
    return grads(w=w)


@case(expect="fails", failure="leaf")
def bias_fill_outside_no_grad():
    """Re-initialising a parameter with fill_ outside no_grad."""
    lin = fixed_linear(3, 2)
    lin.bias.fill_(0.0)  # WRITE
    lin(_batch()).sum().backward()
    return grads(weight=lin.weight)


@case(expect="fails", failure="leaf")
def relu_inplace_on_leaf_input():
    """nn.ReLU(inplace=True) applied straight to an input that requires grad."""
    x = _batch()
    act = nn.ReLU(inplace=True)
    h = act(x)  # WRITE
    h.sum().backward()
    return grads(x=x)
