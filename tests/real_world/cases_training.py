"""Training loops as people write them: pytorch/examples' DCGAN, mnist and word-language-model
steps, two models with two optimizers, param groups added mid-run, hand-written SGD, LBFGS
with a closure, gradient accumulation, layers frozen mid-run, an LSTMCell loop, REINFORCE."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._harness import Case, Outcome, Rec, count_alive, local_hooks, record_truth
from ._models import (
    Discriminator,
    Generator,
    MnistNet,
    RNNModel,
    data,
    mlp,
    weights_init,
)


def dcgan_steps(rec: Rec) -> Outcome:
    """pytorch/examples dcgan main.py's loop body: D on real then detached fakes (one label
    tensor refilled in place), then G through D; BCELoss, two Adams (betas 0.5, 0.999)."""
    torch.manual_seed(999)
    net_g, net_d = Generator(), Discriminator()
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_images = data(3, 1, 8, 8).tanh()
    losses: list[torch.Tensor] = []
    refs: list[weakref.ref[Any]] = []

    def step() -> None:
        net_d.zero_grad()
        batch_size = real_images.size(0)
        label = torch.full((batch_size,), 1.0)
        output = net_d(real_images)
        err_d_real = criterion(output, label)
        err_d_real.backward()
        noise = torch.randn(batch_size, 4, 1, 1)
        fake = net_g(noise)
        label.fill_(0.0)
        output = net_d(fake.detach())
        err_d_fake = criterion(output, label)
        err_d_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        label.fill_(1.0)
        output = net_d(fake)
        err_g = criterion(output, label)
        err_g.backward()
        opt_g.step()
        losses.extend([err_d_real + err_d_fake, err_g])
        refs.extend(weakref.ref(t) for t in (fake, output, err_g))

    out = Outcome()
    with out.catch(), rec():
        step()
        step()
    out.keep_model("G", net_g)
    out.keep_model("D", net_d)
    out.keep(losses=losses, rng=torch.randn(3))
    out.counters.update(alive=count_alive(refs), **local_hooks(net_g, net_d, opt_g, opt_d))
    return out


def mnist_steps(rec: Rec) -> Outcome:
    """pytorch/examples mnist: dropout (global RNG), nll_loss, Adadelta, StepLR."""
    torch.manual_seed(1)
    model = MnistNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    images, target = data(4, 1, 12, 12), torch.tensor([3, 1, 4, 1])
    out = Outcome()
    with out.catch(), rec(model, opt):
        model.train()
        for _ in range(2):
            opt.zero_grad()
            loss = F.nll_loss(model(images), target)
            loss.backward()
            record_truth(out, model)
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            test_loss = F.nll_loss(model(images), target, reduction="sum")
    out.keep_model("model", model)
    out.keep(test_loss=test_loss, rng=torch.randn(3), lr=opt.param_groups[0]["lr"])
    out.counters.update(local_hooks(model, opt))
    return out


def word_language_model(rec: Rec) -> Outcome:
    """pytorch/examples word_language_model train(): repackage_hidden, clip_grad_norm_, and
    the hand-written update p.data.add_(p.grad, alpha=-lr), no optimizer."""
    torch.manual_seed(2)
    model = RNNModel()
    criterion = nn.NLLLoss()
    g = torch.Generator().manual_seed(3)
    source = torch.randint(0, 11, (13, 2), generator=g)
    bptt, lr, clip = 4, 20.0, 0.25

    def repackage_hidden(h: Any) -> Any:
        if isinstance(h, torch.Tensor):
            return h.detach()
        return tuple(repackage_hidden(v) for v in h)

    refs: list[weakref.ref[Any]] = []
    out = Outcome()
    with out.catch(), rec(model):
        model.train()
        hidden = model.init_hidden(2)
        for i in range(0, source.size(0) - 1, bptt):
            seq_len = min(bptt, len(source) - 1 - i)
            x, targets = source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(x, hidden)
            loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            refs.extend(weakref.ref(t) for t in (output, loss))
        del output, loss
    out.keep_model("model", model)
    out.keep(hidden=list(hidden))
    out.counters.update(alive=count_alive(refs), **local_hooks(model))
    return out


def two_models_two_optimizers(rec: Rec) -> Outcome:
    """Two instances of one class (same parameter names), each with its own optimizer,
    trained on the same batch in one loop; ``watch()`` with no arguments sees both."""
    a, b = mlp(3, 5, 1, seed=1), mlp(3, 5, 1, seed=2)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01)
    x, y = data(6, 3), data(6, 1, seed=5)
    out = Outcome()
    with out.catch(), rec():
        for _ in range(3):
            for model, opt in ((a, opt_a), (b, opt_b)):
                opt.zero_grad()
                F.mse_loss(model(x), y).backward()
                opt.step()
    out.keep_model("a", a)
    out.keep_model("b", b)
    out.counters.update(local_hooks(a, b, opt_a, opt_b))
    return out


def add_param_group_mid_run(rec: Rec) -> Outcome:
    """Fine-tuning: train the head, then add the backbone to the optimizer with a lower lr."""
    model = mlp(4, 6, 6, 2)
    backbone, head = model[:4], model[4]
    for p in backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    x, y = data(5, 4), torch.tensor([0, 1, 1, 0, 1])
    out = Outcome()
    with out.catch(), rec(model, opt):
        for step in range(3):
            if step == 1:
                for p in backbone.parameters():
                    p.requires_grad_(True)
                opt.add_param_group({"params": list(backbone.parameters()), "lr": 0.01})
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            record_truth(out, model)
            opt.step()
    out.keep_model("model", model)
    out.counters["groups"] = len(opt.param_groups)
    out.counters.update(local_hooks(model, opt))
    return out


def hand_written_sgd(rec: Rec) -> Outcome:
    """No optimizer: both update idioms, and .grad zeroed in place."""
    model = mlp(3, 4, 1)
    x, y = data(5, 3), data(5, 1, seed=6)
    lr = 0.05
    out = Outcome()
    with out.catch(), rec(model):
        for step in range(3):
            loss = F.mse_loss(model(x), y)
            loss.backward()
            if step % 2 == 0:
                for p in model.parameters():
                    p.data.add_(p.grad, alpha=-lr)
            else:
                with torch.no_grad():
                    for p in model.parameters():
                        p -= lr * p.grad
            for p in model.parameters():
                p.grad.zero_()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model))
    return out


def lbfgs_closure(rec: Rec) -> Outcome:
    """LBFGS evaluates the closure (zero_grad, forward, backward) several times per step."""
    model = mlp(2, 4, 1)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4, history_size=3)
    x, y = data(8, 2), data(8, 1, seed=7)
    evals = {"closure": 0}

    def closure() -> torch.Tensor:
        evals["closure"] += 1
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return loss

    losses = []
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            losses.append(opt.step(closure))
    out.keep_model("model", model)
    out.keep(losses=losses)
    out.counters.update(evals, **local_hooks(model, opt))
    return out


def gradient_accumulation(rec: Rec) -> Outcome:
    """Four micro-batches per optimizer step, loss divided by four."""
    model = mlp(3, 4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data(8, 3), data(8, 2, seed=8)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            for xb, yb in zip(x.chunk(4), y.chunk(4), strict=True):
                (F.mse_loss(model(xb), yb) / 4).backward()
            record_truth(out, model)
            opt.step()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model, opt))
    return out


def freeze_mid_run(rec: Rec) -> Outcome:
    """After the first step the first layer is frozen (requires_grad_(False)); the optimizer
    keeps it and skips it, since its .grad stays None after zero_grad()."""
    model = mlp(3, 4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data(6, 3), data(6, 2, seed=9)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for step in range(3):
            if step == 1:
                model[0].requires_grad_(False)
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            record_truth(out, model)
            opt.step()
    out.keep_model("model", model)
    out.counters.update(local_hooks(model, opt))
    return out


def lstm_cell_loop(rec: Rec) -> Outcome:
    """An LSTMCell unrolled by hand over a sequence, a linear read-out at every step."""
    torch.manual_seed(4)
    cell, head = nn.LSTMCell(3, 5), nn.Linear(5, 1)
    model = nn.ModuleDict({"cell": cell, "head": head})
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    seq, target = data(6, 2, 3), data(6, 2, 1, seed=2)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(2):
            opt.zero_grad()
            h, c = torch.zeros(2, 5), torch.zeros(2, 5)
            preds = []
            for t in range(seq.size(0)):
                h, c = cell(seq[t], (h, c))
                preds.append(head(h))
            loss = F.mse_loss(torch.stack(preds), target)
            loss.backward()
            record_truth(out, model)
            opt.step()
    out.keep_model("model", model)
    out.keep(h=h, c=c)
    out.counters.update(local_hooks(model, opt))
    return out


def reinforce_policy(rec: Rec) -> Outcome:
    """pytorch/examples reinforcement_learning/reinforce.py: Categorical sampling from the
    global RNG, log_prob * normalised return, Adam."""
    torch.manual_seed(543)
    policy = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.6), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    eps, gamma = torch.finfo(torch.float32).eps, 0.99
    actions: list[int] = []
    out = Outcome()
    with out.catch(), rec(policy, opt):
        for _ in range(2):
            state = data(4, seed=11)
            log_probs, rewards = [], []
            for _ in range(5):
                probs = F.softmax(policy(state.unsqueeze(0)), dim=1)
                m = torch.distributions.Categorical(probs)
                action = m.sample()
                log_probs.append(m.log_prob(action))
                actions.append(int(action.item()))
                state = state.roll(1) + 0.1 * (action.item() - 0.5)
                rewards.append(1.0 if action.item() == 1 else 0.5)
            returns: list[float] = []
            running = 0.0
            for r in reversed(rewards):
                running = r + gamma * running
                returns.insert(0, running)
            ret = torch.tensor(returns)
            ret = (ret - ret.mean()) / (ret.std() + eps)
            loss = torch.cat([-lp * r for lp, r in zip(log_probs, ret, strict=True)]).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    out.keep_model("policy", policy)
    out.keep(rng=torch.randn(3))
    out.counters["actions"] = actions
    out.counters.update(local_hooks(policy, opt))
    return out


def long_loop(rec: Rec) -> Outcome:
    """70 steps: past watch's batched flush to the host (every 64 steps) and three of its
    detail steps (0, 25, 50); every step's norm and max |g| compared with the truth."""
    model = mlp(2, 3, 1, seed=50)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data(4, 2), data(4, 1, seed=2)
    out = Outcome()
    with out.catch(), rec(model, opt):
        for _ in range(70):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            record_truth(out, model)
            opt.step()
    out.keep_model("model", model)
    return out


CASES = [
    Case("dcgan", dcgan_steps),
    Case("mnist", mnist_steps),
    Case("word_language_model", word_language_model),
    Case("two_models_two_optimizers", two_models_two_optimizers),
    Case("add_param_group_mid_run", add_param_group_mid_run),
    Case("hand_written_sgd", hand_written_sgd),
    Case("lbfgs_closure", lbfgs_closure),
    Case("gradient_accumulation", gradient_accumulation),
    Case(
        "freeze_mid_run",
        freeze_mid_run,
        # true, and said as info: the optimizer holds them, they get no gradient from step 1
        expect={"watch": [("frozen", None)] * 2},
    ),
    Case("lstm_cell_loop", lstm_cell_loop),
    Case("long_loop_70_steps", long_loop),
    Case("reinforce_policy", reinforce_policy),
]
