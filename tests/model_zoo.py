"""Real-model shapes built from ``torch.nn`` only (no downloads, random weights), shared by the
tests and the benchmarks (``benchmarks/`` put this folder on ``sys.path``).

- :func:`gpt2` follows Hugging Face's GPT-2 layout and names (``transformer.h.3.attn.c_attn``,
  ``lm_head.weight`` tied to ``transformer.wte.weight``); ``gpt2()`` is GPT-2 small (124 M).
- :func:`resnet50` follows torchvision's ResNet-50 layout and names (``layer3.5.conv2``,
  ``layer1.0.downsample.0``).
- :func:`mlp` is the classic 4 x 256 MLP.

Each ``*_step`` returns ``(model, inputs, loss_fn)`` with ``loss_fn(model, *inputs)`` a scalar.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["gpt2", "gpt2_step", "mlp", "mlp_step", "resnet50", "resnet50_step"]


# ---------------------------------------------------------------- GPT-2 (Hugging Face names)
class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored (in, out), as Hugging Face's ``Conv1D``."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = (*x.shape[:-1], self.nf)
        x = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = Conv1D(3 * d, d)
        self.c_proj = Conv1D(d, d)
        self.attn_dropout = nn.Dropout(0.1)
        self.resid_dropout = nn.Dropout(0.1)
        self.register_buffer("bias", torch.tril(torch.ones(ctx, ctx, dtype=torch.bool)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(v.size(-1))
        w = w.masked_fill(~self.bias[:t, :t], torch.finfo(w.dtype).min)
        w = self.attn_dropout(w.softmax(dim=-1))
        y = torch.matmul(w, v).transpose(1, 2).contiguous().view(b, t, d)
        return self.resid_dropout(self.c_proj(y))


class GPT2MLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc = Conv1D(4 * d, d)
        self.c_proj = Conv1D(d, 4 * d)
        self.act = nn.GELU(approximate="tanh")
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = GPT2Attention(d, heads, ctx)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = GPT2MLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    def __init__(self, vocab: int, ctx: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList(GPT2Block(d, heads, ctx) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, vocab: int, ctx: int, d: int, layers: int, heads: int) -> None:
        super().__init__()
        self.transformer = GPT2Model(vocab, ctx, d, layers, heads)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.transformer(ids))


def gpt2(
    vocab: int = 50257, ctx: int = 1024, d: int = 768, layers: int = 12, heads: int = 12
) -> GPT2LMHeadModel:
    """Returns a GPT-2 (small by default: 124 M parameters) with random weights, seed 0."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(vocab, ctx, d, layers, heads)
    with torch.no_grad():  # GPT-2's initialisation: N(0, 0.02) embeddings
        model.transformer.wte.weight.normal_(0.0, 0.02)
        model.transformer.wpe.weight.normal_(0.0, 0.01)
    return model


def _lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def gpt2_step(
    batch: int = 1, seq: int = 64, **sizes: int
) -> tuple[nn.Module, tuple[torch.Tensor, ...], Callable[..., torch.Tensor]]:
    """Returns GPT-2 (``sizes`` as :func:`gpt2`), a batch of token ids and the LM loss."""
    model = gpt2(**sizes)
    gen = torch.Generator().manual_seed(1)
    vocab = model.lm_head.out_features
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    return model, (ids,), _lm_loss


# ---------------------------------------------------------------- ResNet-50 (torchvision names)
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * 4, classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(classes: int = 1000) -> ResNet:
    """Returns a ResNet-50 (25.6 M parameters) with random weights, seed 0."""
    torch.manual_seed(0)
    return ResNet((3, 4, 6, 3), classes)


def resnet50_step(
    batch: int = 2, size: int = 224, classes: int = 1000
) -> tuple[nn.Module, tuple[torch.Tensor, ...], Callable[..., torch.Tensor]]:
    """Returns ResNet-50, a batch of images and the cross-entropy loss on random labels."""
    model = resnet50(classes)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    return model, (x, y), lambda m, x, y: F.cross_entropy(m(x), y)


# ---------------------------------------------------------------- the classic MLP
def mlp(width: int = 256, depth: int = 4, features: int = 64) -> nn.Sequential:
    """Returns ``depth`` Linear+ReLU layers of ``width`` and a one-output head, seed 0."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    size = features
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, 1))
    return nn.Sequential(*layers)


def mlp_step(
    batch: int = 64, width: int = 256, depth: int = 4
) -> tuple[nn.Module, tuple[torch.Tensor, ...], Callable[..., torch.Tensor]]:
    """Returns the MLP, a batch and the MSE loss."""
    model = mlp(width, depth)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 64, generator=gen), torch.randn(batch, 1, generator=gen)
    return model, (x, y), lambda m, x, y: F.mse_loss(m(x), y)
