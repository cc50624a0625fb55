"""Scenarios of PyTorch's saved-tensor-hook, mutation and checkpoint tests, in our own words.

From ``test/test_autograd.py`` (pytorch/pytorch): ``saved_tensors_hooks`` (an identity pair turns
PyTorch's version check off, a copying pair protects the saved values, ``save_on_cpu`` on a CPU
tensor keeps an alias, a pack hook that writes its input), ``TestAllowMutationOnSaved``
(``allow_mutation_on_saved_tensors`` clones what a write would break, so backward is right),
activation checkpointing (reentrant and not, selective checkpointing's cache) with writes.
A tool that reads saved tensors runs these hooks: the cases that count recomputations return
the count, so a changed count shows up as a changed result.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from ._helpers import grads
from ._registry import case


def _x() -> torch.Tensor:
    return torch.tensor([0.5, -1.0, 2.0], requires_grad=True)


def _sigmoid_reference():
    """sigmoid then the same doubling, out of place: the gradient the program should get."""
    x = _x()
    (torch.sigmoid(x) * 2.0).sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_sigmoid_reference)
def write_saved_output_under_identity_hooks():
    """from test_autograd.py test_saved_variable_packing_unpacking_saved_original_with_default_
    hooks: identity pack/unpack; the write to sigmoid's output is not checked by PyTorch."""
    x = _x()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        s = torch.sigmoid(x)
    s.mul_(2.0)  # WRITE
    s.sum().backward()
    return grads(x=x)


def _mul_reference():
    a = _x()
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = a * 1.0
    (b * w).sum().backward()
    return grads(a=a, w=w)


@case(expect="silent", reference=_mul_reference)
def write_saved_input_under_identity_hooks():
    """from test_autograd.py test_setting_default_saved_variable_hooks_twice_should_use_inner:
    b * w saved b through identity hooks; b.zero_() is not checked."""
    a = _x()
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = a * 1.0
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        y = b * w
    b.zero_()  # WRITE
    y.sum().backward()
    return grads(a=a, w=w)


@case(expect="ok", reference=_sigmoid_reference)
def write_saved_output_under_copying_hooks():
    """from test_autograd.py test_saving_variable_to_disk (pack makes a copy): the write does not
    reach the packed copy."""
    x = _x()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
        s = torch.sigmoid(x)
    s.mul_(2.0)  # WRITE
    s.sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_sigmoid_reference)
def write_saved_output_under_save_on_cpu():
    """from test_autograd.py test_graph_save_on_cpu: on a CPU tensor save_on_cpu keeps the same
    memory, so the write reaches backward unchecked."""
    x = _x()
    with torch.autograd.graph.save_on_cpu():
        s = torch.sigmoid(x)
    s.mul_(2.0)  # WRITE
    s.sum().backward()
    return grads(x=x)


@case(expect="fails", failure="pack-hook")
def pack_hook_writes_its_input():
    """from test_autograd.py test_pack_hook_with_inplace_modification_should_fail."""
    a = _x()

    def inc(t: torch.Tensor) -> torch.Tensor:
        t += 1  # WRITE
        return t

    with torch.autograd.graph.saved_tensors_hooks(inc, lambda t: t):
        y = torch.exp(a)
    y.sum().backward()
    return grads(a=a)


def _square_reference():
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    (a.clone() ** 2).sum().backward()
    return grads(a=a)


@case(expect="ok", reference=_square_reference)
def sin_in_place_allowed_by_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_basic: b.sin_() after (b ** 2)."""
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        b = a.clone()
        out = (b**2).sum()
        b.sin_()  # WRITE
        out.backward()
    return grads(a=a)


@case(expect="fails")
def sin_in_place_without_the_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_basic: outside the context it fails."""
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    b = a.clone()
    out = (b**2).sum()
    b.sin_()  # WRITE
    out.backward()
    return grads(a=a)


@case(expect="ok", reference=_square_reference)
def sin_in_place_a_view_allowed_by_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_views: c = b.view_as(b); c.sin_()."""
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        b = a.clone()
        c = b.view_as(b)
        out = (b**2).sum()
        c.sin_()  # WRITE
        out.backward()
    return grads(a=a)


@case(expect="ok", reference=_square_reference)
def scale_a_view_of_a_saved_base_in_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_save_base_and_modify_view: c *= 10."""
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        b = a.clone()
        c = b[:1]
        out = b**2
        c *= 10.0  # WRITE
        out.sum().backward()
    return grads(a=a)


@case(expect="ok", reference=_square_reference)
def scale_the_base_of_a_saved_view_in_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_save_view_modify_base: b *= 2."""
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        b = a.clone()
        c = b[:]
        out = (c**2).sum()
        b *= 2.0  # WRITE
        out.backward()
    return grads(a=a)


@case(expect="ok")
def out_into_a_saved_buffer_in_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_with_out_variant: sin(c, out=b)."""
    a = torch.tensor([1.5], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        b = torch.tensor([1.0])
        c = torch.tensor([2.0])
        out = a * b
        torch.sin(c, out=b)  # WRITE
        out.backward()
    return grads(a=a)


@case(expect="ok")
def foreach_add_to_saved_exp_outputs_in_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_inplace_foreach."""
    a = [torch.tensor(1.0, requires_grad=True), torch.tensor(0.5, requires_grad=True)]
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        b = torch._foreach_exp(a)
        torch._foreach_add_(b, 1.0)  # WRITE
        (b[0] + b[1]).backward()
    return grads(a0=a[0], a1=a[1])


@case(expect="ok")
def sin_in_place_the_base_of_a_saved_conj_in_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_with_math_views: b = a.conj() saved."""
    leaf = torch.tensor([1 + 1j], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        a = leaf.clone()
        b = a.conj()
        out = (b**2).sum()
        a.sin_()  # WRITE
        out.abs().backward()
    return grads(leaf=leaf)


@case(expect="ok")
def sin_in_place_twice_with_two_saves_in_mutation_context():
    """from test_autograd.py TestAllowMutationOnSaved.test_saved_same_tensor_different_versions."""
    leaf = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    with torch.autograd.graph.allow_mutation_on_saved_tensors():
        a = leaf.clone()
        b = a**2
        a.sin_()  # WRITE
        c = a**2
        a.sin_()
        (b.sum() + c.sum()).backward()
    return grads(leaf=leaf)


@case(expect="fails")
def write_the_input_of_a_reentrant_checkpoint():
    """from test_autograd.py test_checkpointing (use_reentrant=True saves its inputs): the input
    is written between forward and backward."""
    x = _x()
    h = x * 2.0
    out = checkpoint(torch.sin, h, use_reentrant=True)
    h.mul_(3.0)  # WRITE
    out.sum().backward()
    return grads(x=x)


@case(expect="fails")
def write_the_input_of_a_non_reentrant_checkpoint():
    """from test_autograd.py test_checkpointing_without_reentrant_correct_grad: the input is
    written between forward and backward; PyTorch's version check still fires at backward."""
    x = _x()
    h = x * 2.0
    out = checkpoint(torch.sin, h, use_reentrant=False)
    h.mul_(3.0)  # WRITE
    out.sum().backward()
    return grads(x=x)


@case(expect="ok")
def write_inside_a_checkpointed_function_counted():
    """from test_autograd.py test_access_saved_tensor_twice_without_recomputation_works: a write
    inside the checkpointed function that nothing saved; the forward runs twice, no more."""
    x = _x()
    runs = [0]

    def fn(t: torch.Tensor) -> torch.Tensor:
        runs[0] += 1
        y = t * 2.0
        y.add_(1.0)  # WRITE
        return y.sin()

    out = checkpoint(fn, x, use_reentrant=False)
    out.sum().backward()
    return {"x": grads(x=x)["x"], "runs": torch.tensor(float(runs[0]))}


def _sin_saved_policy(ctx, op, *args, **kwargs):
    if op == torch.ops.aten.sin.default:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


@case(expect="fails", failure="checkpoint")
def mutate_a_cached_output_of_selective_checkpoint():
    """from test_autograd.py TestSelectiveActivationCheckpoint.test_version_counter: sin's output
    is cached by the policy, then mul_ changes it."""
    x = _x()

    def fn(t: torch.Tensor) -> torch.Tensor:
        return t.sin().mul_(2.0).cos().exp()  # WRITE

    context_fn = functools.partial(create_selective_checkpoint_contexts, _sin_saved_policy)
    out = checkpoint(fn, x, use_reentrant=False, context_fn=context_fn)
    out.sum().backward()
    return grads(x=x)


@case(expect="ok")
def mutate_a_cached_output_allowed_by_selective_checkpoint():
    """from test_autograd.py TestSelectiveActivationCheckpoint.test_version_counter with
    allow_cache_entry_mutation=True."""
    x = _x()

    def fn(t: torch.Tensor) -> torch.Tensor:
        return t.sin().mul_(2.0).cos().exp()  # WRITE

    context_fn = functools.partial(
        create_selective_checkpoint_contexts, _sin_saved_policy, allow_cache_entry_mutation=True
    )
    out = checkpoint(fn, x, use_reentrant=False, context_fn=context_fn)
    out.sum().backward()
    return grads(x=x)


@case(expect="ok")
def add_to_the_output_of_a_no_grad_checkpoint():
    """from test_autograd.py test_checkpointing_without_reentrant_detached_tensor: out += a."""
    lin = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
    a = torch.tensor([[0.5, 1.0], [2.0, -1.0]], requires_grad=True)

    def no_grad_forward(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return lin(t)

    out = checkpoint(no_grad_forward, a, use_reentrant=False)
    out += a  # WRITE
    out.sum().backward()
    return grads(a=a)


@case(expect="ok")
def optimizer_step_inside_post_accumulate_grad_hooks():
    """from test_autograd.py test_post_accumulate_grad_hook_e2e: each parameter's SGD step runs
    in its post-accumulate-grad hook, inside backward, three steps in a row."""
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]]))
        model.bias.copy_(torch.tensor([0.1, -0.2]))
    inp = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    optims = {p: torch.optim.SGD([p], lr=0.1) for p in model.parameters()}

    def step_in_backward(param: torch.Tensor) -> None:
        optims[param].step()  # WRITE
        optims[param].zero_grad()

    handles = [p.register_post_accumulate_grad_hook(step_in_backward) for p in model.parameters()]
    try:
        for _ in range(3):
            (model(inp) ** 2).sum().backward()
    finally:
        for h in handles:
            h.remove()
    return {"weight": model.weight.detach().clone(), "bias": model.bias.detach().clone()}


@case(expect="ok")
def leaf_updated_in_place_by_its_own_post_accumulate_hooks():
    """from test_autograd.py test_post_accumulate_grad_hook_multiple_hooks: tensor.sub_(grad)
    then tensor.mul_(4) in two hooks on a leaf, during backward."""
    tensor = torch.tensor([0.5, 1.5, -1.0], requires_grad=True)

    def hook1(t: torch.Tensor) -> None:
        assert t.grad is not None
        t.sub_(t.grad)  # WRITE

    def hook2(t: torch.Tensor) -> None:
        t.mul_(4.0)

    tensor.register_post_accumulate_grad_hook(hook1)
    tensor.register_post_accumulate_grad_hook(hook2)
    (tensor * tensor).sum().backward()
    return {"tensor": tensor.detach().clone(), "grad": grads(tensor=tensor)["tensor"]}


@case(expect="fails")
def optimizer_step_in_a_hook_then_a_retained_second_backward():
    """from test_autograd.py test_post_accumulate_grad_hook_e2e, with retain_graph=True and a
    second backward: the first backward's in-hook step wrote the weight that addmm saved."""
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]]))
        model.bias.copy_(torch.tensor([0.1, -0.2]))
    inp = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], requires_grad=True)
    opt = torch.optim.SGD([model.weight], lr=0.1)

    def step_in_backward(param: torch.Tensor) -> None:
        opt.step()  # WRITE
        opt.zero_grad()

    handle = model.weight.register_post_accumulate_grad_hook(step_in_backward)
    try:
        loss = (model(inp) ** 2).sum()
        loss.backward(retain_graph=True)
        loss.backward()
    finally:
        handle.remove()
    return grads(inp=inp)


class _SinWritesItsSave(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        x.add_(1)  # writes what the pack hook handed over, not the input
        return grad_output


@case(expect="ok")
def backward_writes_a_saved_tensor_the_pack_hook_replaced():
    """from test_autograd.py test_saved_tensors_hook_version_counter_not_shared: the pack hook
    saves a clone instead of a; the custom backward writes that clone."""
    a = torch.tensor(1.0, requires_grad=True)
    replacement = a.detach().clone()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: replacement, lambda t: t):
        b = _SinWritesItsSave.apply(a)  # WRITE
    b.backward()
    return {"a": grads(a=a)["a"], "replacement": replacement}
