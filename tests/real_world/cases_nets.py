"""Real architectures whose in-place idioms are correct (no finding allowed), and the same
loops with one planted, real-world mistake (the finding must name its line)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._harness import Case, Outcome, Rec, local_hooks
from ._models import Discriminator, Generator, data, mlp, weights_init


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: ReLU(inplace=True) and `out += identity`."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def resnet_blocks(rec: Rec) -> Outcome:
    torch.manual_seed(31)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), BasicBlock(4), BasicBlock(4)
    )
    head = nn.Linear(4, 3)
    net = nn.ModuleDict({"body": model, "head": head})
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = data(2, 1, 6, 6), torch.tensor([2, 0])
    out = Outcome()
    with out.catch(), rec(net, opt):
        for _ in range(2):
            opt.zero_grad()
            feats = F.adaptive_avg_pool2d(model(x), 1).flatten(1)
            F.cross_entropy(head(feats), y).backward()
            opt.step()
    out.keep_model("net", net)
    out.counters.update(local_hooks(net, opt))
    return out


def transformer_layer(rec: Rec) -> Outcome:
    torch.manual_seed(32)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
    opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    x = data(2, 5, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    out = Outcome()
    with out.catch(), rec(layer, opt):
        for _ in range(2):
            opt.zero_grad()
            layer(x, src_mask=mask, is_causal=True).pow(2).mean().backward()
            opt.step()
        layer.eval()
        with torch.no_grad():
            evaluated = layer(x)
    out.keep_model("layer", layer)
    out.keep(evaluated=evaluated, rng=torch.rand(2))
    out.counters.update(local_hooks(layer, opt))
    return out


def wgan_clip_and_ema(rec: Rec) -> Outcome:
    """WGAN's weight clipping (p.data.clamp_ after the step) and a mean-teacher EMA copy
    updated in place under no_grad: writes after backward, nothing saved is touched."""
    critic = mlp(3, 6, 1, seed=33)
    ema = mlp(3, 6, 1, seed=33)
    opt = torch.optim.RMSprop(critic.parameters(), lr=5e-3)
    real, fake = data(4, 3), data(4, 3, seed=2)
    out = Outcome()
    with out.catch(), rec(critic, opt):
        for _ in range(3):
            opt.zero_grad()
            (critic(fake).mean() - critic(real).mean()).backward()
            opt.step()
            for p in critic.parameters():
                p.data.clamp_(-0.05, 0.05)
            with torch.no_grad():
                for e, p in zip(ema.parameters(), critic.parameters(), strict=True):
                    e.mul_(0.9).add_(p, alpha=0.1)
    out.keep_model("critic", critic)
    out.keep_model("ema", ema)
    out.counters.update(local_hooks(critic, opt))
    return out


def two_views_batchnorm(rec: Rec) -> Outcome:
    """SimCLR-style: two views of a batch through one encoder with BatchNorm (training mode),
    then one backward. Each forward updates the running statistics in place; BatchNorm's
    backward in training mode uses the batch statistics it saved, never the running ones, so
    the gradients are exact: the same whether or not the running statistics moved (checked
    below against momentum=0, where they do not move)."""

    def build(momentum: float) -> nn.Module:
        torch.manual_seed(36)
        return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=momentum), nn.ReLU())

    def run(enc: nn.Module) -> torch.Tensor:
        x = data(5, 4)
        z1, z2 = enc(x + 0.1), enc(x.flip(0) * 0.9)
        loss = -F.cosine_similarity(z1, z2).mean()
        loss.backward()
        return loss

    # built before the block: a model built inside one is model_built_in_block's subject
    enc, still = build(0.1), build(0.0)
    out = Outcome()
    with out.catch(), rec():
        loss = run(enc)
        run(still)
    out.keep_model("enc", enc)
    out.keep(loss=loss)
    out.counters["claim_grads_ignore_running_stats"] = all(
        torch.equal(a.grad, b.grad)
        for a, b in zip(enc.parameters(), still.parameters(), strict=True)
    )
    return out


def model_built_in_block(rec: Rec) -> Outcome:
    """A model built inside the block, in deterministic mode (as reproducible research code
    runs): torch.use_deterministic_algorithms(True) makes torch.empty hand out NaN-filled
    memory, which nn.Linear then fills with kaiming_uniform_; nothing computes with the NaN."""
    out = Outcome()
    torch.use_deterministic_algorithms(True)
    try:
        with out.catch(), rec():
            torch.manual_seed(37)
            layer = nn.Linear(37, 53)
            opt = torch.optim.SGD(layer.parameters(), lr=0.1)
            opt.zero_grad()
            layer(data(2, 37)).pow(2).mean().backward()
            opt.step()
        out.counters["claim_empty_is_nan"] = bool(torch.empty(3).isnan().all())
    finally:
        torch.use_deterministic_algorithms(False)
    out.keep_model("layer", layer)
    return out


def dcgan_step_before_backward(rec: Rec) -> Outcome:
    """The classic GAN mistake: the generator's loss is computed through D, then D's
    optimizer steps (writing D's weights in place), then the generator's backward runs
    through the stale graph: PyTorch refuses at that backward."""
    torch.manual_seed(999)
    net_g, net_d = Generator(), Discriminator()
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = data(3, 1, 8, 8).tanh()
    out = Outcome()
    with out.catch(), rec():
        net_d.zero_grad()
        net_g.zero_grad()
        fake = net_g(torch.randn(3, 4, 1, 1))
        err_d = criterion(net_d(real), torch.ones(3)) + criterion(
            net_d(fake.detach()), torch.zeros(3)
        )
        err_g = criterion(net_d(fake), torch.ones(3))
        err_d.backward()
        opt_d.step()  # WRITE: optimizer step before the generator's backward
        err_g.backward()
        opt_g.step()
    out.keep_model("G", net_g)
    out.keep_model("D", net_d)
    return out


def mnist_forgot_zero_grad(rec: Rec) -> Outcome:
    """The mnist loop without optimizer.zero_grad(): gradients pile up from step 1."""
    model = mlp(6, 8, 3, seed=34)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data(5, 6), torch.tensor([0, 1, 2, 1, 0])
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(3):
            loss = F.cross_entropy(model(x), y)
            loss.backward()  # MISSED: zero_grad
            opt.step()
    out.keep_model("model", model)
    return out


def bce_on_logits(rec: Rec) -> Outcome:
    """BCELoss fed the raw output of a Linear (no sigmoid): PyTorch raises when a value falls
    outside [0, 1]; here the scores are small, so it runs and trains on nonsense."""
    model = mlp(4, 1, seed=35)
    with torch.no_grad():
        model[0].weight.mul_(0.1)
        model[0].bias.fill_(0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data(6, 4) * 0.5, torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0], [0.0]])
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            F.binary_cross_entropy(model(x), y).backward()  # MISSED: sigmoid
            opt.step()
    out.keep_model("model", model)
    return out


CASES = [
    Case("resnet_basic_blocks", resnet_blocks),
    Case("transformer_encoder_layer", transformer_layer),
    Case("wgan_clip_and_ema", wgan_clip_and_ema),
    Case("two_views_batchnorm", two_views_batchnorm),
    Case("model_built_in_block", model_built_in_block),
    Case(
        "dcgan_step_before_backward",
        dcgan_step_before_backward,
        expect={
            # D's three conv weights and its BatchNorm weight, all saved by err_g's graph
            k: [("inplace-saved", "WRITE: optimizer step before the generator's backward")] * 4
            for k in ("guard_verify", "guard_strict", "trace")
        },
        write="WRITE: optimizer step before the generator's backward",
        raises="modified by an inplace operation",
    ),
    Case(
        "mnist_forgot_zero_grad",
        mnist_forgot_zero_grad,
        expect={"watch": [("grad-accumulation", "MISSED: zero_grad")]},
    ),
    Case(
        "bce_on_logits",
        bce_on_logits,
        expect={"watch": [("loss-input", "MISSED: sigmoid")]},
    ),
]
