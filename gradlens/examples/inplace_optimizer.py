"""A GAN step that reuses the discriminator's scores after the discriminator's optimizer step:
opt_d.step() overwrites weights that the generator's loss saved for backward."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

import gradlens

from ._result import ExampleResult

TITLE = "An optimizer step between forward and backward: which weight, which line, and the fix"

Optimizer = torch.optim.Optimizer


def setup() -> tuple[nn.Module, nn.Module, Optimizer, Optimizer]:
    """Returns a fresh tiny generator and discriminator (seed 0) and their optimizers."""
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    discriminator = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.1)
    return generator, discriminator, opt_g, opt_d


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Returns 8 real points around (2, 2) and 8 noise vectors for the generator (seed 1)."""
    torch.manual_seed(1)
    return torch.randn(8, 2) + 2, torch.randn(8, 2)


def gan_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: Optimizer,
    opt_d: Optimizer,
    real: torch.Tensor,
    z: torch.Tensor,
) -> None:
    fake = generator(z)
    score = discriminator(fake)  # the discriminator's forward saves its weights for backward
    d_loss = bce(score, torch.zeros(8, 1)) + bce(discriminator(real), torch.ones(8, 1))
    g_loss = bce(score, torch.ones(8, 1))  # reuses score, so its graph holds those weights
    opt_d.zero_grad()
    d_loss.backward(retain_graph=True)
    opt_d.step()  # the bug: updates the discriminator's weights in place
    opt_g.zero_grad()
    g_loss.backward()  # needs the weights as they were: RuntimeError
    opt_g.step()


def gan_step_fixed(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: Optimizer,
    opt_d: Optimizer,
    real: torch.Tensor,
    z: torch.Tensor,
) -> tuple[float, float]:
    fake = generator(z)
    d_loss = bce(discriminator(fake.detach()), torch.zeros(8, 1))
    d_loss = d_loss + bce(discriminator(real), torch.ones(8, 1))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = bce(discriminator(fake), torch.ones(8, 1))  # scored again, by the updated weights
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    return d_loss.item(), g_loss.item()


def run() -> ExampleResult:
    real, z = data()

    # Plain PyTorch: the error names a tensor's shape and the op that saved it, not the line.
    generator, discriminator, opt_g, opt_d = setup()
    pytorch_error = "no error"
    try:
        gan_step(generator, discriminator, opt_g, opt_d, real, z)
    except RuntimeError as e:
        pytorch_error = str(e)

    # The same step under gradlens.guard(): each overwritten weight, by name, at opt_d.step().
    generator, discriminator, opt_g, opt_d = setup()
    guarded_error = None
    try:
        gan = nn.ModuleDict({"generator": generator, "discriminator": discriminator})
        with gradlens.guard() as g, gradlens.trace(gan) as t:
            gan_step(generator, discriminator, opt_g, opt_d, real, z)
    except RuntimeError as e:
        guarded_error = str(e)
    diagnostics = g.diagnostics

    # The fix: the discriminator's loss gets fake.detach(), and the generator's loss scores the
    # fakes again after the discriminator's step.
    generator, discriminator, opt_g, opt_d = setup()
    with gradlens.guard() as fixed_guard:
        losses = [gan_step_fixed(generator, discriminator, opt_g, opt_d, real, z) for _ in range(3)]

    violations = [asdict(v) for v in g.violations]
    explained = "\n\n".join(d.message for d in diagnostics)
    fix = diagnostics[0].fix if diagnostics else None
    return ExampleResult(
        name="inplace-optimizer",
        title=TITLE,
        trace=t,
        values={
            "pytorch_error": pytorch_error,
            "guarded_error": guarded_error,
            "violations": violations,
            "overwritten": [v.tensor for v in g.violations],
            "d_loss, fixed": [d for d, _ in losses],
            "g_loss, fixed": [g_ for _, g_ in losses],
            "violations after fix": len(fixed_guard.violations),
        },
        sections=[
            ("PyTorch says (at g_loss.backward(), no line)", pytorch_error),
            ("gradlens.guard() says (at opt_d.step())", g.__rich__()),
            ("Explained", f"{explained}\n\nFix: {fix}"),
            (
                "The fix: detach the fakes for D's loss, score them again after D's step",
                "three GAN steps run; d_loss = "
                + ", ".join(f"{d:.4f}" for d, _ in losses)
                + "; g_loss = "
                + ", ".join(f"{g_:.4f}" for _, g_ in losses)
                + f"; the guard finds {len(fixed_guard.violations)} violations",
            ),
        ],
    )
