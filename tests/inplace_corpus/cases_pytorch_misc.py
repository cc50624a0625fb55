"""Scenarios of PyTorch's foreach, nested-tensor, complex/conj and inference-mode tests.

From ``test/test_autograd.py`` (pytorch/pytorch): ``torch._foreach_*`` in-place ops on what a
foreach op saved (``test_grad_fn_attr_bindings``, ``TestAllowMutationOnSaved``), the nested
tensor case where ``sum`` saves its input (``test_per_dispatch_key_input_saving``), writes to
the base of a ``conj`` view or through ``.real``/``view_as_real``, and inference tensors
(``TestAutogradInferenceMode``), which carry no version counter at all.
"""

from __future__ import annotations

import torch

from ._helpers import grads, ramp
from ._registry import case


def _pair() -> list[torch.Tensor]:
    return [
        torch.tensor([1.0, 0.5], requires_grad=True),
        torch.tensor([0.25, -1.0], requires_grad=True),
    ]


@case(expect="fails")
def foreach_add_to_saved_foreach_exp_outputs():
    """from test_autograd.py TestAllowMutationOnSaved.test_inplace_foreach, without the context:
    _foreach_exp saved its outputs, _foreach_add_ writes them."""
    a = _pair()
    b = torch._foreach_exp(a)
    torch._foreach_add_(b, 1.0)  # WRITE
    (b[0].sum() + b[1].sum()).backward()
    return grads(a0=a[0], a1=a[1])


@case(expect="fails")
def foreach_mul_into_inputs_a_foreach_mul_saved():
    """foreach in-place on saved inputs (test_grad_fn_attr_bindings' _foreach_maximum saves its
    inputs): _foreach_mul(a, w) saved a; _foreach_mul_(a, 2) writes a."""
    leaves = _pair()
    a = [t.clone() for t in leaves]
    w = _pair()
    y = torch._foreach_mul(a, w)
    torch._foreach_mul_(a, 2.0)  # WRITE
    (y[0].sum() + y[1].sum()).backward()
    return grads(l0=leaves[0], l1=leaves[1], w0=w[0], w1=w[1])


@case(expect="ok")
def foreach_mul_into_outputs_of_a_foreach_add():
    """foreach in-place on tensors nothing saved (TestAllowMutationOnSaved.test_inplace_foreach's
    neighbour): _foreach_add saves nothing."""
    a, b = _pair(), _pair()
    y = torch._foreach_add(a, b)
    torch._foreach_mul_(y, 2.0)  # WRITE
    (y[0].sum() + y[1].sum()).backward()
    return grads(a0=a[0], a1=a[1])


@case(expect="fails")
def foreach_maximum_inputs_written():
    """from test_autograd.py test_grad_fn_attr_bindings: _foreach_maximum(inputs, scalars) saves
    the inputs; writing one of them afterwards."""
    leaves = [torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True) for _ in range(2)]
    inputs = [t * 1.0 for t in leaves]
    results = torch._foreach_maximum(inputs, [0.0, 0.0])
    inputs[0].mul_(-1.0)  # WRITE
    (results[0].sum() + results[1].sum()).backward()
    return grads(l0=leaves[0], l1=leaves[1])


def _nested(*rows: list[float]) -> torch.Tensor:
    return torch.nested.nested_tensor([torch.tensor(r) for r in rows], requires_grad=True)


@case(expect="fails")
def add_after_nested_sum_saved_its_input():
    """from test_autograd.py test_per_dispatch_key_input_saving: on nested tensors sum saves its
    input, so x.add_(x) afterwards fails (the dense twin passes)."""
    nt = _nested([0.5, 2.0], [1.0, -1.0])
    x = nt.clone()
    res = x.sum(-1, keepdim=True)
    x.add_(x)  # WRITE
    res.backward(torch.nested.nested_tensor([torch.ones(1), torch.ones(1)]))
    return {"nt": grads(nt=nt)["nt"].to_padded_tensor(0.0)}


@case(expect="ok")
def add_to_a_nested_tensor_nothing_saved():
    """Nested tensors (test_per_dispatch_key_input_saving's neighbour): add saves nothing."""
    nt = _nested([0.5, 2.0], [1.0, -1.0])
    x = nt.clone()
    y = x + 1.0
    x.mul_(3.0)  # WRITE
    y.backward(torch.nested.nested_tensor([torch.ones(2), torch.ones(2)]))
    return {"nt": grads(nt=nt)["nt"].to_padded_tensor(0.0)}


@case(expect="fails")
def sin_in_place_the_base_of_a_saved_conj():
    """from test_autograd.py TestAllowMutationOnSaved.test_with_math_views, without the context:
    b = a.conj() saved by b ** 2, then a.sin_()."""
    leaf = torch.tensor([1 + 1j, 0.5 - 2j], requires_grad=True)
    a = leaf.clone()
    b = a.conj()
    out = (b**2).sum()
    a.sin_()  # WRITE
    out.abs().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def zero_the_real_part_of_a_saved_complex_output():
    """Complex views (test_first_grad_fn_access_in_no_grad_mode's a.real): exp saved h; h.real
    shares its memory and version counter."""
    leaf = torch.tensor([1 + 1j, 0.5 - 2j], requires_grad=True)
    h = leaf.exp()
    h.real.zero_()  # WRITE
    h.abs().sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def write_a_real_view_of_a_saved_complex_output():
    """Complex views (test_autograd_inplace_views_cross_dtype's view_as_real): exp saved h."""
    leaf = torch.tensor([1 + 1j, 0.5 - 2j], requires_grad=True)
    h = leaf.exp()
    torch.view_as_real(h).mul_(2.0)  # WRITE
    h.abs().sum().backward()
    return grads(leaf=leaf)


@case(expect="ok")
def write_the_imag_part_of_an_unsaved_complex_sum():
    """Complex views on a tensor nothing saved (test_first_grad_fn_access_in_no_grad_mode's
    neighbour): a + 1 saves nothing; its .imag is written."""
    leaf = torch.tensor([1 + 1j, 0.5 - 2j], requires_grad=True)
    h = leaf + 1.0
    h.imag.mul_(2.0)  # WRITE
    h.abs().sum().backward()
    return grads(leaf=leaf)


@case(expect="ok")
def conj_of_a_saved_complex_is_written_through_a_copy():
    """Complex conj (test_with_math_views' second half): b = a.conj().clone() owns its memory."""
    leaf = torch.tensor([1 + 1j, 0.5 - 2j], requires_grad=True)
    a = leaf.clone()
    b = a.conj().clone()
    out = (a**2).sum()
    b.sin_()  # WRITE
    out.abs().backward()
    return grads(leaf=leaf)


@case(expect="fails", failure="inference")
def add_to_an_inference_tensor_outside_inference_mode():
    """from test_autograd.py test_inference_mode_inf_tensor_in_normal_mode_inplace_op."""
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with torch.inference_mode():
        c = torch.ones(3)
    y = w + c
    c.add_(2.0)  # WRITE
    y.sum().backward()
    return grads(w=w)


@case(expect="ok")
def add_an_inference_tensor_and_write_it_in_inference_mode():
    """from test_autograd.py test_mix_inference_and_normal_tensor_functional_op: add is safe
    since it saves nothing; the inference tensor is then written inside inference_mode."""
    s = ramp(1, 2, 3, grad=True)
    with torch.inference_mode():
        c = torch.ones(1, 2, 3)
    out = c.add(s)
    with torch.inference_mode():
        c.mul_(2.0)  # WRITE
    out.backward(torch.ones_like(out))
    return grads(s=s)


@case(expect="ok")
def inplace_inside_inference_mode_then_outside_on_normal_tensor():
    """from test_autograd.py test_normal_tensor_inplace_output_in_normal_mode: a = s.clone();
    a.add_ in and out of inference_mode, then used."""
    s = ramp(1, 2, 3, grad=True)
    a = s.clone()
    with torch.inference_mode():
        a.add_(2.0)
    a.add_(2.0)  # WRITE
    (a * 3.0).sum().backward()
    return grads(s=s)


def _jagged() -> torch.Tensor:
    return torch.nested.nested_tensor(
        [torch.tensor([[0.5, 1.0], [2.0, -1.0]]), torch.tensor([[1.5, 0.25]])],
        layout=torch.jagged,
        requires_grad=True,
    )


@case(expect="fails", failure="saved-nested")
def mul_a_jagged_nested_tensor_sin_saved():
    """Jagged nested tensors (test_grad_fn_input_metadata's layout=torch.jagged): sin saves its
    input, and x.mul_(2) writes it; PyTorch's version check fires but cannot print the size."""
    nt = _jagged()
    x = nt.clone()
    y = x.sin()
    x.mul_(2.0)  # WRITE
    y.values().sum().backward()
    return {"values": grads(nt=nt)["nt"].values()}


@case(expect="ok")
def mul_a_jagged_nested_tensor_nothing_saved():
    """Jagged nested tensors (test_grad_fn_input_metadata's layout=torch.jagged): x + 1 saves
    nothing, so x.mul_(2) afterwards is harmless."""
    nt = _jagged()
    x = nt.clone()
    y = x + 1.0
    x.mul_(2.0)  # WRITE
    y.values().sum().backward()
    return {"values": grads(nt=nt)["nt"].values()}


@case(expect="fails")
def write_a_real_tensor_through_its_complex_view():
    """Complex views (test_view_func_replay's view_as_complex): exp saved h (real, last dim 2);
    view_as_complex(h) shares its memory and version counter."""
    leaf = torch.tensor([[0.5, 1.0], [-1.0, 2.0]], requires_grad=True)
    h = leaf.exp()
    torch.view_as_complex(h).mul_(1j)  # WRITE
    h.sum().backward()
    return grads(leaf=leaf)


def _linear_and_batch() -> tuple[torch.nn.Linear, torch.Tensor]:
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    return lin, torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]], requires_grad=True)


@case(expect="fails")
def foreach_sgd_step_between_forward_and_backward():
    """foreach in-place writes by an optimizer (test_grad_fn_attr_bindings' _foreach_* family):
    SGD(foreach=True).step() writes the weight that linear saved, before backward."""
    lin, x = _linear_and_batch()
    for p in lin.parameters():
        p.grad = torch.ones_like(p)  # a previous step's gradient, not zeroed
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, foreach=True)
    loss = (lin(x) ** 2).sum()
    opt.step()  # WRITE
    loss.backward()
    return grads(x=x)


def _linear_reference():
    lin, x = _linear_and_batch()
    (lin(x) ** 2).sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_linear_reference, visible=False)
def fused_adam_step_between_forward_and_backward():
    """A fused optimizer kernel (the foreach family's fused sibling, test_grad_fn_attr_bindings'
    _foreach_* ops): Adam(fused=True).step() on CPU writes the weight that linear saved without
    moving its version, so PyTorch runs backward with the new weight."""
    lin, x = _linear_and_batch()
    for p in lin.parameters():
        p.grad = torch.ones_like(p)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, fused=True)
    loss = (lin(x) ** 2).sum()
    opt.step()  # WRITE
    loss.backward()
    return grads(x=x)


@case(expect="ok")
def foreach_sgd_step_after_backward():
    """foreach in-place writes by an optimizer (test_grad_fn_attr_bindings' _foreach_* family)
    after backward, the usual order: harmless."""
    lin, x = _linear_and_batch()
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, foreach=True)
    for _ in range(2):
        opt.zero_grad()
        (lin(x) ** 2).sum().backward()
        opt.step()  # WRITE
    return {"weight": lin.weight.detach().clone(), "x": grads(x=x)["x"]}
