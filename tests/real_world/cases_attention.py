"""Values that are infinite on purpose, and NaN gradients: nanoGPT's causal self-attention
(masked_fill with -inf before softmax: correct, finite gradients); the torch.where(h > 0,
log(h), 0) trap, whose NaN gradient a ReLU behind it happens to zero; and a Euclidean distance
between two equal embeddings, whose sqrt at 0 puts NaN into the weights' gradients."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._harness import Case, Outcome, Rec, local_hooks
from ._models import data


class CausalSelfAttention(nn.Module):
    """nanoGPT's CausalSelfAttention, the manual (non-flash) path."""

    def __init__(self, n_embd: int = 8, n_head: int = 2, block_size: int = 6) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(0.1)
        self.n_head, self.n_embd = n_head, n_embd
        mask = torch.tril(torch.ones(block_size, block_size))
        self.register_buffer("bias", mask.view(1, 1, block_size, block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        att = self.attn_dropout(att)
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


def nanogpt_attention(rec: Rec) -> Outcome:
    torch.manual_seed(61)
    model = CausalSelfAttention()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, target = data(2, 6, 8), data(2, 6, 8, seed=4)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(x), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    out.keep_model("model", model)
    out.counters["claim_finite_grads"] = all(
        bool(p.grad.isfinite().all()) for p in model.parameters()
    )
    out.counters.update(local_hooks(model, opt))
    return out


def where_log_nan(rec: Rec) -> Outcome:
    """torch.where picks 0 where h <= 0, but log(h) ran there too: log(0) = -inf (forward),
    and its gradient 0 / 0 = NaN reaches ReluBackward0, which zeroes it: the weights'
    gradients are finite (checked), so watch has nothing to say; trace saw both facts."""
    torch.manual_seed(62)
    layer = nn.Linear(3, 4)
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    x = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5]])
    out = Outcome()
    with out.catch(), rec(layer, opt):
        opt.zero_grad()
        h = F.relu(layer(x))
        safe = torch.where(h > 0, torch.log(h), torch.zeros_like(h))  # NAN: log of relu's zeros
        safe.sum().backward()
        opt.step()
    out.keep_model("layer", layer)
    out.counters["claim_finite_grads"] = all(
        bool(p.grad.isfinite().all()) for p in layer.parameters()
    )
    return out


def distance_nan(rec: Rec) -> Outcome:
    """A hand-written Euclidean distance (as in triplet and contrastive losses) between two
    equal inputs: sqrt(0)'s infinite slope times 0 is NaN in the weights' gradients."""
    torch.manual_seed(63)
    emb = nn.Linear(3, 2)
    opt = torch.optim.SGD(emb.parameters(), lr=0.01)
    anchor, positive, negative = data(3), None, data(3, seed=9)
    positive = anchor.clone()
    out = Outcome()
    with out.catch(), rec(emb, opt):
        for _ in range(2):
            opt.zero_grad()
            za, zp, zn = emb(anchor), emb(positive), emb(negative)
            d_pos = ((za - zp) ** 2).sum().sqrt()
            d_neg = ((za - zn) ** 2).sum().sqrt()
            F.relu(d_pos - d_neg + 1.0).backward()
            opt.step()
    out.keep_model("emb", emb)
    out.counters["claim_nan_grads"] = bool(emb.weight.isnan().any())
    return out


CASES = [
    Case("nanogpt_causal_attention", nanogpt_attention),
    Case(
        "where_log_nan",
        where_log_nan,
        # true: log made -inf from a finite 0, and a NaN gradient reached ReluBackward0
        expect={"trace": [("non-finite", "NAN: log of relu's zeros"), ("nan-grad", None)]},
    ),
    Case(
        "distance_nan",
        distance_nan,
        # trace names the first non-finite gradient: sqrt(0)'s infinite slope, before the NaN
        expect={"watch": [("nan-grad", None)], "trace": [("inf-grad", None)]},
    ),
]
