"""What a recorder keeps and lets through: nothing alive after the block, the user's own
exception unchanged; and more real shapes: float64 and bfloat16 parameters, channels_last
convolutions, Grad-CAM (activation hooks), magnitude pruning (torch.nn.utils.prune)."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ._harness import Case, Outcome, Rec, count_alive, local_hooks
from ._models import MnistNet, data, mlp


def keeps_nothing(rec: Rec) -> Outcome:
    """Model, optimizer, parameters, gradients, activations and loss made and trained inside a
    function: once it returns, nothing of it may survive, though the recorder object does."""
    refs: list[weakref.ref[Any]] = []

    def train() -> None:
        model = mlp(5, 16, 16, 3, seed=41)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        x, y = data(8, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        with rec(model, opt):
            for _ in range(2):
                opt.zero_grad()
                h = model[0](x)
                loss = F.cross_entropy(model[1:](h), y)
                loss.backward()
                opt.step()
        refs.extend(weakref.ref(o) for o in (model, opt, h, loss, x))
        refs.extend(weakref.ref(p) for p in model.parameters())
        refs.extend(weakref.ref(p.grad) for p in model.parameters() if p.grad is not None)
        refs.extend(weakref.ref(s["exp_avg"]) for s in opt.state.values())

    out = Outcome()
    with out.catch():
        train()
    out.counters["alive"] = count_alive(refs)
    out.counters["watched"] = len(refs)
    return out


class DataError(ValueError):
    """A user's own exception type, raised from inside the forward."""


def user_raises_midstep(rec: Rec) -> Outcome:
    """The user's code raises from a module's forward in the second step (a bad batch): the
    same exception, same type, from the same line, and every hook gone."""
    model = mlp(3, 4, 1, seed=42)

    def check_batch(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].abs().max() > 10:
            raise DataError(f"batch out of range: max {args[0].abs().max().item():.1f}")

    handle = model[0].register_forward_pre_hook(check_batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [data(4, 3), data(4, 3, seed=2) * 100]
    out = Outcome()
    with out.catch(), rec(model, opt):
        for xb in batches:
            opt.zero_grad()
            model(xb).pow(2).mean().backward()
            opt.step()
    handle.remove()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model, opt))
    return out


def other_dtypes(rec: Rec) -> Outcome:
    """The same MLP trained with float64 parameters and with bfloat16 parameters."""
    results = {}
    out = Outcome()
    with out.catch():
        for dtype in (torch.float64, torch.bfloat16):
            model = mlp(4, 6, 2, seed=43).to(dtype)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
            x, y = data(5, 4).to(dtype), data(5, 2, seed=3).to(dtype)
            with rec(model, opt):
                for _ in range(2):
                    opt.zero_grad()
                    F.mse_loss(model(x), y).backward()
                    opt.step()
            results[str(dtype)] = model
    for name, model in results.items():
        out.keep_model(name, model)
    return out


def channels_last_conv(rec: Rec) -> Outcome:
    torch.manual_seed(44)
    model = MnistNet().to(memory_format=torch.channels_last)
    model.eval()  # no dropout: only the layout is under test
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = data(2, 1, 12, 12).to(memory_format=torch.channels_last)
    y = torch.tensor([7, 2])
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            F.nll_loss(model(x), y).backward()
            opt.step()
    out.keep_model("model", model)
    out.counters["strides"] = list(model.conv1.weight.stride())
    return out


def grad_cam(rec: Rec) -> Outcome:
    """Grad-CAM: a forward hook keeps the last conv's activation and a tensor hook on it keeps
    the gradient; the map is relu(sum_c mean(grad_c) * act_c)."""
    torch.manual_seed(45)
    model = MnistNet().eval()
    kept: dict[str, torch.Tensor] = {}

    def keep_activation(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        kept["act"] = output
        output.register_hook(lambda g: kept.__setitem__("grad", g))

    handle = model.conv2.register_forward_hook(keep_activation)
    x = data(1, 1, 12, 12).requires_grad_()
    out = Outcome()
    with out.catch(), rec(model):
        scores = model(x)
        scores[0, scores.argmax()].backward()
        weights = kept["grad"].mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * kept["act"]).sum(1)).detach()
    handle.remove()
    out.keep(cam=cam, saliency=x.grad)
    return out


def magnitude_pruning(rec: Rec) -> Outcome:
    """prune.l1_unstructured reparametrizes weight = weight_orig * weight_mask (a forward
    pre-hook); train, prune again mid-run, then make it permanent."""
    model = mlp(6, 8, 2, seed=46)
    prune.l1_unstructured(model[0], "weight", amount=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data(4, 6), data(4, 2, seed=5)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for step in range(3):
            if step == 2:
                prune.l1_unstructured(model[2], "weight", amount=0.5)
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
        prune.remove(model[0], "weight")
    out.keep_model("model", model)
    out.counters["zeros"] = int((model[0].weight == 0).sum())
    return out


def keyboard_interrupt_midstep(rec: Rec) -> Outcome:
    """Ctrl-C in the middle of the second step's backward (raised from a gradient hook, as a
    signal handler would): the KeyboardInterrupt goes through unchanged, hooks are gone."""
    model = mlp(3, 4, 1, seed=47)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"hook": 0}

    def interrupt(g: torch.Tensor) -> None:
        calls["hook"] += 1
        if calls["hook"] == 2:
            raise KeyboardInterrupt

    handle = model[0].weight.register_hook(interrupt)
    x = data(4, 3)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(3):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    handle.remove()
    out.keep_model("model", model)
    out.counters.update(calls, **local_hooks(model, opt))
    return out


def two_blocks_in_a_row(rec: Rec) -> Outcome:
    """Pre-training, then fine-tuning with a new optimizer, each phase in its own block."""
    model = mlp(3, 5, 2, seed=48)
    x, y = data(6, 3), data(6, 2, seed=4)
    out = Outcome()
    with out.catch():
        for phase, lr in enumerate((0.1, 0.01)):
            opt = torch.optim.SGD(model.parameters(), lr=lr)
            with rec(model, opt):
                for _ in range(2):
                    opt.zero_grad()
                    F.mse_loss(model(x) * (phase + 1), y).backward()
                    opt.step()
            out.counters[f"hooks_after_phase_{phase}"] = local_hooks(model, opt)
    out.keep_model("model", model)
    return out


def training_in_a_thread(rec: Rec) -> Outcome:
    """The loop runs in a worker thread (as notebook and actor frameworks do) while the block
    is open in the main thread."""
    model = mlp(3, 4, 2, seed=49)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data(5, 3), data(5, 2, seed=6)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2):
                opt.zero_grad()
                F.mse_loss(model(x), y).backward()
                opt.step()
        except BaseException as e:  # the thread's error, reported below
            errors.append(e)

    out = Outcome()
    with out.catch(), rec(model, opt):
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    out.keep_model("model", model)
    out.counters["thread_errors"] = [repr(e) for e in errors]
    return out


CASES = [
    Case("recorder_keeps_nothing", keeps_nothing),
    Case("user_raises_midstep", user_raises_midstep, raises="batch out of range"),
    Case("float64_and_bfloat16_params", other_dtypes),
    Case("channels_last_conv", channels_last_conv),
    Case("grad_cam", grad_cam),
    Case("magnitude_pruning", magnitude_pruning),
    Case("keyboard_interrupt_midstep", keyboard_interrupt_midstep, raises=""),  # no message
    Case("two_blocks_in_a_row", two_blocks_in_a_row),
    Case("training_in_a_thread", training_in_a_thread),
]
