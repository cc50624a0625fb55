"""Scenarios of PyTorch's in-place-on-view autograd tests, in our own words.

From ``test/test_autograd.py`` (pytorch/pytorch): ``test_inplace_on_view_*`` (views of views,
views of leaves, several views, views made in ``no_grad``/``inference_mode``, views made by
custom Functions), ``test_autograd_views_codegen``, ``test_autograd_inplace_views_*``
(``unsqueeze_``/``transpose_`` on views), plus views with ``.detach()`` and ``out=``.
Autograd rebases a view written in place onto its base (CopySlices); the writes that break
something are the ones on a saved tensor, on a leaf's view, or on a view autograd cannot
rebase, and PyTorch refuses those at the write itself.
"""

from __future__ import annotations

import torch

from ._helpers import exact, grads, ramp
from ._registry import case


def _root() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)


@case(expect="ok", reference=exact(root=[[2.0, 2.0], [1.0, 1.0]]))
def mul_a_view_backprop_through_base():
    """from test_autograd.py test_inplace_on_view_backprop_base: x.narrow(0, 0, 1).mul_(2)."""
    root = _root()
    x = root.clone()
    v1 = x.narrow(0, 0, 1)
    v1.mul_(2.0)  # WRITE
    x.sum().backward()
    return grads(root=root)


@case(expect="ok", reference=exact(root=[[2.0, 2.0], [0.0, 0.0]]))
def mul_a_view_backprop_through_another_view():
    """from test_autograd.py test_inplace_on_view_backprop_view_of_view: v1.mul_(2), backprop v2."""
    root = _root()
    x = root.clone()
    v1 = x.narrow(0, 0, 1)
    v2 = x.narrow(0, 0, 1)
    v1.mul_(2.0)  # WRITE
    v2.sum().backward()
    return grads(root=root)


@case(expect="ok", reference=exact(root=[[1.0, 2.0], [1.0, 1.0]]))
def mul_a_view_of_a_view():
    """from test_autograd.py test_inplace_on_view_of_view: x.narrow(0,0,1).narrow(1,1,1).mul_(2)."""
    root = _root()
    x = root.clone()
    v1 = x.narrow(0, 0, 1)
    v2 = v1.narrow(1, 1, 1)
    v2.mul_(2.0)  # WRITE
    x.sum().backward()
    return grads(root=root)


@case(expect="ok")
def setitem_a_view_then_refresh_under_no_grad():
    """from test_autograd.py test_inplace_on_view_then_no_grad: c[0][0] = 3, grad_fn under
    no_grad."""
    a = torch.ones(3, 1, requires_grad=True)
    b = a * 2
    c = b.view_as(b)
    c[0][0] = 3.0  # WRITE
    with torch.no_grad():
        c.grad_fn  # noqa: B018
    c.sum().backward()
    return grads(a=a)


@case(expect="ok")
def mul_two_narrowed_views_by_a_weight():
    """from test_autograd.py test_inplace_on_view_gradcheck: x.narrow(...).narrow(...).mul_(b)."""
    a = ramp(4, 4, grad=True)
    b = torch.tensor([[1.0, 2.0], [0.5, -1.0]], requires_grad=True)
    x = a.clone()
    x.narrow(1, 2, 2).narrow(0, 1, 2).mul_(b)  # WRITE
    x.narrow(1, 0, 2).narrow(0, 1, 2).mul_(b)
    x.sum().backward()
    return grads(a=a, b=b)


@case(expect="fails", failure="view")
def mul_one_output_of_unbind():
    """from test_autograd.py test_inplace_on_view_multiple_outputs: x.unbind()[0].mul_(2)."""
    root = torch.arange(9.0).reshape(3, 3).requires_grad_()
    x = root.clone()
    v1 = x.unbind()
    v1[0].mul_(2.0)  # WRITE
    x.sum().backward()
    return grads(root=root)


@case(expect="fails", failure="view")
def mul_a_view_of_an_unbind_output():
    """from test_autograd.py test_inplace_on_view_of_multiple_output_view: view_as of b[0]."""
    leaf = ramp(10, grad=True)
    a = leaf.clone()
    b = a.unbind(0)
    c = b[0].view_as(b[0])
    c.mul_(2.0)  # WRITE
    a.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails", failure="view")
def mul_an_unbind_output_of_a_view():
    """from test_autograd.py test_inplace_multiple_output_view_of_view: a.view_as(a).unbind()."""
    leaf = ramp(10, grad=True)
    a = leaf.clone()
    b = a.view_as(a)
    c = b.unbind(0)
    c[0].mul_(2.0)  # WRITE
    a.sum().backward()
    return grads(leaf=leaf)


@case(expect="ok")
def mul_a_view_makes_its_base_require_grad():
    """from test_autograd.py test_inplace_on_view_makes_base_require_grad: x.narrow(...).mul_(b)."""
    root = ramp(4, 4)
    b = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0], [1.0, 1.0]], requires_grad=True)
    x = root.clone()
    x.narrow(1, 2, 2).mul_(b)  # WRITE
    x.sum().backward()
    return grads(b=b)


@case(expect="ok", reference=exact(b=[5.0]))
def mul_a_view_and_backprop_the_result():
    """from test_autograd.py test_inplace_on_view_backprop_view: a.narrow(0, 1, 1).mul_(b)."""
    a = torch.tensor([2.0, 5.0])
    b = torch.tensor([3.0], requires_grad=True)
    res = a.narrow(0, 1, 1).mul_(b)  # WRITE
    res.sum().backward()
    return grads(b=b)


@case(expect="ok", reference=exact(r=[1.0]))
def add_to_a_base_makes_an_old_view_require_grad():
    """from test_autograd.py test_inplace_on_view_modify_base: v = x.select(0, 1); x.add_(r)."""
    r = torch.ones(1, requires_grad=True)
    x = torch.ones(5)
    v = x.select(0, 1)
    x.add_(r)  # WRITE
    v.backward()
    return grads(r=r)


@case(expect="ok", reference=exact(root=[[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]]))
def mul_a_view_of_a_non_contiguous_clone():
    """from test_autograd.py test_inplace_on_view_non_contig: a strided leaf, view of view."""
    root = torch.ones(2, 3, 2).select(2, 1).t().requires_grad_(True)
    x = root.clone()
    v1 = x.narrow(0, 0, 1)
    v2 = v1.narrow(1, 1, 1)
    v2.mul_(2.0)  # WRITE
    x.sum().backward()
    return grads(root=root)


@case(expect="ok")
def mul_unsafe_split_outputs_together():
    """from test_autograd.py test_inplace_on_view_multi_output_unsafe: s1.mul_(s2)."""
    a = ramp(3, 3, grad=True)
    b = a + a
    s1, s2, _ = b.unsafe_split(1)
    s1.mul_(s2)  # WRITE
    s1.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="view")
def mul_split_outputs_together():
    """from test_autograd.py test_inplace_on_view_multi_output_safe: split outputs refuse."""
    a = ramp(3, 3, grad=True)
    b = a + a
    s1, s2, _ = b.split(1)
    s1.mul_(s2)  # WRITE
    s1.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="view-leaf")
def add_to_a_view_of_a_leaf():
    """from test_autograd.py test_inplace_on_view_leaf_errors: x.view_as(x).add_(1)."""
    x = torch.zeros(1, requires_grad=True)
    y = x.view_as(x)
    y.add_(1.0)  # WRITE
    y.sum().backward()
    return grads(x=x)


@case(expect="fails", failure="view-leaf")
def relu_on_a_narrowed_leaf():
    """from test_autograd.py test_inplace_on_view_weak_grad_fn: leaf.narrow(0, 0, 10).relu_()."""
    leaf = ramp(10, grad=True)
    a = leaf.narrow(0, 0, 10)
    b = a.relu_()  # WRITE
    b.sum().backward()
    return grads(leaf=leaf)


@case(expect="ok")
def relu_on_a_view_of_a_narrowed_clone():
    """from test_autograd.py test_inplace_on_view_weak_grad_fn: b = a.narrow(...).clone().view(-1);
    b.relu_(); c = b.clone(); del b."""
    a = torch.arange(10.0, requires_grad=True)
    b = a.narrow(0, 0, 2).clone().view(-1)
    b.relu_()  # WRITE
    c = b.clone()
    del b
    c.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="view")
def add_to_an_unbind_output_under_grad():
    """from test_autograd.py test_autograd_views_codegen: inp.unbind()[0].add_(1) refuses."""
    leaf = torch.tensor([0.5, 1.5], requires_grad=True)
    inp = leaf.clone()
    out = inp.unbind()
    out[0].add_(1.0)  # WRITE
    inp.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails", failure="view")
def add_to_a_view_made_under_no_grad():
    """from test_autograd.py test_autograd_views_codegen: a view made in no_grad, written after."""
    leaf = torch.tensor([0.5, 1.5], requires_grad=True)
    inp = leaf.clone()
    with torch.no_grad():
        out = inp.view_as(inp)
    out.add_(1.0)  # WRITE
    inp.sum().backward()
    return grads(leaf=leaf)


@case(expect="ok")
def add_to_a_view_made_under_no_grad_of_a_plain_tensor():
    """from test_autograd.py test_autograd_views_codegen: the same with requires_grad=False, and
    a weight that does require grad downstream."""
    inp = torch.tensor([0.5, 1.5]).clone()
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    with torch.no_grad():
        out = inp.view_as(inp)
    out.add_(1.0)  # WRITE
    (inp * w).sum().backward()
    return grads(w=w)


@case(expect="fails", failure="view")
def divide_a_view_of_a_no_grad_view():
    """from test_autograd.py test_autograd_inplace_view_of_view: z = y.view(2), y made in
    no_grad then requires_grad_: z /= 2 refuses."""
    x = torch.zeros(2)
    with torch.no_grad():
        y = x.view(2)
    y.requires_grad_(True)
    z = y.view(2)
    z /= 2.0  # WRITE
    z.sum().backward()
    return grads(y=y)


@case(expect="fails", failure="view")
def add_to_a_view_made_in_inference_mode():
    """from test_autograd.py test_inference_mode_handle_direct_view_on_rebase: view_as inside
    inference_mode, add_ outside."""
    s = ramp(1, 2, 3, grad=True)
    a = s.clone()
    with torch.inference_mode():
        view_out = a.view_as(a)
    view_out.add_(2.0)  # WRITE
    a.sum().backward()
    return grads(s=s)


def _cross_dtype_reference():
    a_orig = ramp(3, 3, grad=True).to(torch.complex64).detach().requires_grad_()
    a = a_orig.clone()
    b = torch.view_as_real(a).transpose(0, 1)
    b = b + 1.0
    b.backward(torch.arange(0, 18, dtype=torch.float).view(3, 3, 2))
    return grads(a_orig=a_orig)


@case(expect="silent", reference=_cross_dtype_reference)
def transpose_in_place_a_real_view_of_complex():
    """from test_autograd.py test_autograd_inplace_views_cross_dtype: view_as_real(a).transpose_()
    then += 1 gives the transposed gradient (a PyTorch bug the test pins, issue 49825)."""
    a_orig = ramp(3, 3, grad=True).to(torch.complex64).detach().requires_grad_()
    a = a_orig.clone()
    b = torch.view_as_real(a)
    b.transpose_(0, 1)  # WRITE
    b += 1.0
    b.backward(torch.arange(0, 18, dtype=torch.float).view(3, 3, 2))
    return grads(a_orig=a_orig)


@case(expect="ok")
def add_to_a_complex_base_of_a_real_view():
    """from test_autograd.py test_first_grad_fn_access_in_no_grad_mode: v = a.real; a.add_(1)."""
    leaf = torch.tensor([1 + 1j, 2 - 1j], requires_grad=True)
    a = leaf.clone()
    v = a.real
    a.add_(1.0)  # WRITE
    with torch.no_grad():
        v.grad_fn  # noqa: B018
    (v * torch.tensor([2.0, 3.0])).sum().backward()
    return grads(leaf=leaf)


class _ViewAs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp):
        return inp.view_as(inp)

    @staticmethod
    def backward(ctx, grad):
        return grad


@case(expect="fails", failure="view")
def add_a_grad_requiring_tensor_to_a_custom_function_view():
    """from test_autograd.py test_inplace_not_requires_grad: view_a += b on a custom view."""
    a = torch.tensor([[0.5, 1.5]])
    b = torch.tensor([2.0], requires_grad=True)
    view_a = _ViewAs.apply(a)
    view_a += b  # WRITE
    view_a.sum().backward()
    return grads(b=b)


@case(expect="ok")
def copy_a_grad_requiring_tensor_into_a_select_view():
    """from test_autograd.py test_inplace_not_requires_grad: a.select(1, 0).copy_(b) works."""
    a = torch.tensor([[0.5, 1.5]])
    b = torch.tensor([2.0], requires_grad=True)
    a.select(1, 0).copy_(b)  # WRITE
    (a * torch.tensor([[3.0, 4.0]])).sum().backward()
    return grads(b=b)


class _SelectView(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, idx):
        ctx.save_for_backward(a)
        ctx.idx = idx
        return a.select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        res = torch.zeros_like(a)
        res.select(0, ctx.idx).copy_(grad)
        return res, None


@case(expect="fails", failure="view")
def add_to_a_view_returned_by_a_custom_function():
    """from test_autograd.py test_autograd_multiple_views_python: out += 1 on ComplexView's
    output."""
    a = torch.ones(2, requires_grad=True)
    out = _SelectView.apply(a.clone(), 1)
    out += 1.0  # WRITE
    out.sum().backward()
    return grads(a=a)


class _Alias(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x[:]

    @staticmethod
    def backward(ctx, gx):
        return gx


@case(expect="fails", failure="view")
def zero_a_custom_function_view_made_under_no_grad():
    """from test_autograd.py test_custom_function_return_view_in_nograd: output.zero_()."""
    inp = torch.tensor([0.5, 1.5], requires_grad=True)
    with torch.no_grad():
        output = _Alias.apply(inp)
    output.zero_()  # WRITE
    (inp * 2.0).sum().backward()
    return grads(inp=inp)


@case(expect="ok")
def transpose_in_place_a_view_then_add():
    """from test_autograd.py test_autograd_inplace_views_creation_meta: inp = base.view_as(base);
    inp.t_(); inp.add_(1)."""
    leaf = ramp(2, 3, grad=True)
    base = leaf.clone()
    inp = base.view_as(base)
    inp.t_()  # WRITE
    inp.add_(1.0)
    (base * base).sum().backward()
    return grads(leaf=leaf)


@case(expect="fails", failure="view")
def unsqueeze_in_place_an_unbind_output():
    """from test_autograd.py test_autograd_inplace_views_creation_meta: unsqueeze_(0) on
    base.unbind()[0]."""
    leaf = ramp(2, 3, grad=True)
    base = leaf.clone()
    inp = base.unbind()[0]
    inp.unsqueeze_(0)  # WRITE
    base.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def transpose_in_place_a_view_of_a_saved_output():
    """transpose_ on a view of sigmoid's saved output (the inplace-view ops of
    test_autograd_inplace_views_creation_meta): no value changes, yet the version moves and
    backward fails."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
    s = torch.sigmoid(x)
    v = s.view(2, 2)
    v.transpose_(0, 1)  # WRITE
    s.sum().backward()
    return grads(x=x)


@case(expect="fails")
def unsqueeze_in_place_a_saved_output():
    """unsqueeze_ on exp's saved output (the inplace-view ops of
    test_autograd_inplace_views_creation_meta): only the shape changes, yet the version moves
    and backward fails."""
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = x.exp()
    h.unsqueeze_(0)  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def zero_a_slice_of_a_detached_saved_output():
    """Views + detach (test_detach_then_inplace_raises_in_autograd on a view): h.detach()[0:2]
    shares exp's saved output and its version counter."""
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = x.exp()
    h.detach()[0:2].zero_()  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def out_into_a_view_of_a_saved_output():
    """out= into a slice of sigmoid's saved output (test_out_variant_raises_when_inputs_require_
    grad runs out= under no_grad; here the out tensor is a view of a saved one)."""
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = torch.sigmoid(x)
    with torch.no_grad():
        torch.mul(torch.ones(2), 3.0, out=h[:2])  # WRITE
    h.sum().backward()
    return grads(x=x)


@case(expect="fails")
def write_one_view_while_a_disjoint_view_is_saved():
    """Multiple views (test_inplace_on_view_backprop_view_of_view): w * base[2:4] saved the
    second half; writing the first half bumps the shared version counter, so backward fails."""
    x = torch.tensor([0.5, -1.0, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    base = x * 1.0
    y = w * base[2:4]
    base[0:2].mul_(2.0)  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="fails")
def write_one_view_overlapping_a_saved_view():
    """Multiple overlapping views (test_inplace_on_view_backprop_view_of_view): w * base[1:3]
    saved; base[0:2].zero_() overlaps it."""
    x = torch.tensor([0.5, -1.0, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    base = x * 1.0
    y = w * base[1:3]
    base[0:2].zero_()  # WRITE
    y.sum().backward()
    return grads(x=x, w=w)


@case(expect="ok")
def mul_a_view_that_retains_grad():
    """from test_autograd.py test_retain_grad_inplace_over_view: view.mul_(2) with
    view.retain_grad() and view2.retain_grad() on two views of one base."""
    leaf = torch.tensor([1.0], requires_grad=True)
    base = leaf.clone()
    view = base[:]
    view2 = base[:]
    view.retain_grad()
    view2.retain_grad()
    view.mul_(2.0)  # WRITE
    (view + view2).sum().backward()
    assert view.grad is not None and view2.grad is not None
    return {"leaf": grads(leaf=leaf)["leaf"], "view": view.grad, "view2": view2.grad}


@case(expect="ok")
def add_into_a_view_of_a_clone_after_scaling_it():
    """from test_autograd.py test_copy_slices_graph_task_updates (f2): b = out * 2, then
    out += y on out = x.clone().view(-1)."""
    x = torch.tensor([0.5, 1.5], requires_grad=True)
    y = torch.tensor([2.0, -1.0], requires_grad=True)
    out = x.clone().view(-1)
    b = out * 2
    out += y  # WRITE
    (out + b).sum().backward()
    return grads(x=x, y=y)


@case(expect="ok")
def threshold_in_place_on_a_view_then_double_backward():
    """from test_autograd.py test_inplace_on_view_backward: threshold(inplace=True) on a view,
    gradient with create_graph=True, then backward of the gradient penalty."""
    inputs = torch.tensor([[[[0.5, -1.0], [2.0, 0.25]]]], requires_grad=True)
    tmp1 = (inputs + 1).view_as(inputs)
    tmp2 = torch.nn.functional.threshold(tmp1, 0.0, 0.0, True)  # WRITE
    prob = torch.sigmoid(tmp2)
    (gradients,) = torch.autograd.grad(
        prob, inputs, grad_outputs=torch.ones(prob.size()), create_graph=True, retain_graph=True
    )
    gradients.sum().backward()
    return grads(inputs=inputs)


@case(expect="ok")
def instance_norm_then_relu_in_place_double_backward():
    """from test_autograd.py test_inplace_on_view_backward: nn.Sequential(InstanceNorm2d(2),
    ReLU(True)), gradient with create_graph=True, then its gradient."""
    net = torch.nn.Sequential(torch.nn.InstanceNorm2d(2), torch.nn.ReLU(True))
    x = torch.tensor([[[[1.0, 2.0]], [[0.5, -1.0]]]], requires_grad=True)
    out = net(x)  # WRITE
    (g,) = torch.autograd.grad(out.pow(2), [x], grad_outputs=x.new_ones(x.shape), create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), [x])
    return {"g": g.detach(), "gg": gg}


@case(expect="fails", failure="view")
def copy_a_grad_requiring_tensor_into_a_custom_function_view():
    """from test_autograd.py test_inplace_not_requires_grad: view_a.copy_(b) on a custom view."""
    a = torch.tensor([[0.5, 1.5]])
    b = torch.tensor([2.0], requires_grad=True)
    view_a = _ViewAs.apply(a)
    view_a.copy_(b)  # WRITE
    view_a.sum().backward()
    return grads(b=b)


@case(expect="fails", failure="view")
def copy_a_grad_requiring_tensor_into_an_unbind_output():
    """from test_autograd.py test_inplace_not_requires_grad: a.unbind()[0].copy_(b)."""
    a = torch.tensor([[0.5, 1.5]])
    b = torch.tensor([2.0], requires_grad=True)
    view_a = a.unbind()[0]
    view_a.copy_(b)  # WRITE
    a.sum().backward()
    return grads(b=b)
