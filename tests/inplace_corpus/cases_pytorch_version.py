"""Scenarios of PyTorch's own autograd tests around the version counter, in our own words.

Each docstring names the test in ``test/test_autograd.py`` (pytorch/pytorch) the scenario comes
from. These are the tests that expect "modified by an inplace operation" at backward, and their
harmless neighbours that must run (in-place on a tensor nothing saved, a node that saved its
own output, a gradient edge taken before the write, ...). Values are fixed, never random.
"""

from __future__ import annotations

import warnings

import torch

from ._helpers import exact, grads, ramp
from ._registry import case


def _x() -> torch.Tensor:
    return torch.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)


def _y() -> torch.Tensor:
    return torch.tensor([[4.0, 3.0], [-2.0, 1.5]], requires_grad=True)


@case(expect="ok")
def add_after_mul_backward_through_add():
    """from test_autograd.py test_inplace: z.add_(2) breaks w = z * y, but only q = z + y is
    backpropagated, and add needs nothing saved."""
    x, y = _x(), _y()
    z = x * y
    q = z + y
    w = z * y
    z.add_(2.0)  # WRITE
    q.sum().backward()
    del w
    return grads(x=x, y=y)


@case(expect="fails")
def add_after_mul_backward_through_mul():
    """from test_autograd.py test_inplace: z.add_(2) after w = z * y saved z: w fails."""
    x, y = _x(), _y()
    z = x * y
    w = z * y
    z.add_(2.0)  # WRITE
    w.sum().backward()
    return grads(x=x, y=y)


@case(expect="ok")
def add_returns_the_new_version():
    """from test_autograd.py test_inplace: w = z.add_(y) is the last expression, so it backprops."""
    x, y = _x(), _y()
    z = x * y
    q = z * y
    r = z + y
    w = z.add_(y)  # WRITE
    (w.sum() + r.sum()).backward()
    del q  # saved z before the write: broken, never backpropagated
    return grads(x=x, y=y)


@case(expect="fails")
def add_on_tensor_a_later_mul_saved():
    """from test_autograd.py test_inplace: q = z * y saved z, then z.add_(y): q fails."""
    x, y = _x(), _y()
    z = x * y
    q = z * y
    z.add_(y)  # WRITE
    q.sum().backward()
    return grads(x=x, y=y)


def _exp_own_reference():
    x, y = _x(), _y()
    z = x / 2 + y / 8
    z.exp().sum().backward()
    return grads(x=x, y=y)


@case(expect="fails")
def add_between_two_backward_passes():
    """from test_autograd.py test_inplace: w.backward(retain_graph=True) runs, z.add_(2), and the
    second w.backward fails."""
    x, y = _x(), _y()
    z = x * y
    w = z * y
    w.sum().backward(retain_graph=True)
    z.add_(2.0)  # WRITE
    w.sum().backward()
    return grads(x=x, y=y)


@case(expect="ok")
def add_after_the_only_backward_freed_the_graph():
    """from test_autograd.py TestAllowMutationOnSaved.test_saved_but_not_anymore (without the
    context): out.backward() freed what out saved, then a.sin_()."""
    leaf = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], requires_grad=True)
    a = leaf.clone()
    out = (a**2).sum()
    out.backward()
    a.sin_()  # WRITE
    (a * 2.0).sum().backward()
    return grads(leaf=leaf)


@case(expect="ok", reference=_exp_own_reference)
def exp_inplace_backprops_through_its_own_output():
    """from test_autograd.py test_inplace: w = z.exp_() saves its own output; w runs."""
    x, y = _x(), _y()
    z = x / 2 + y / 8
    q = z * y
    w = z.exp_()  # WRITE
    w.sum().backward()
    del q  # saved z before exp_: broken, never backpropagated
    return grads(x=x, y=y)


@case(expect="fails")
def exp_inplace_breaks_an_earlier_mul():
    """from test_autograd.py test_inplace: q = z * y saved z before z.exp_(): q fails."""
    x, y = _x(), _y()
    z = x / 2 + y / 8
    q = z * y
    z.exp_()  # WRITE
    q.sum().backward()
    return grads(x=x, y=y)


@case(expect="ok", reference=exact(leaf=[[1.0, 1.0], [1.0, 1.0]]))
def clone_then_add_is_still_usable():
    """from test_autograd.py test_inplace: leaf.clone().add_(10) and then y = x + 2 backprops."""
    leaf = torch.ones(2, 2, requires_grad=True)
    x = leaf.clone()
    x.add_(10.0)  # WRITE
    y = x + 2.0
    y.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def clone_mul_then_add_breaks_the_mul():
    """from test_autograd.py test_inplace: z = x * y saved x (a clone), then x.add_(2)."""
    leaf = torch.ones(2, 2, requires_grad=True)
    x = leaf.clone()
    y = x + 2.0
    z = x * y
    x.add_(2.0)  # WRITE
    z.sum().backward()
    return grads(leaf=leaf)


@case(expect="fails")
def no_grad_write_to_a_saved_leaf():
    """from test_autograd.py test_no_grad_modifies_version: x *= 2 under no_grad, x saved."""
    x, y = _x(), _y()
    z = (x * y).sum()
    with torch.no_grad():
        x *= 2.0  # WRITE
    z.backward()
    return grads(x=x, y=y)


@case(expect="fails")
def detach_then_zero_a_saved_leaf():
    """from test_autograd.py test_detach_then_inplace_raises_in_autograd: x.detach().zero_()."""
    x = torch.tensor(1.5, requires_grad=True)
    y = x**2
    z = x.detach()
    z.zero_()  # WRITE
    y.backward()
    return grads(x=x)


@case(expect="fails")
def add_after_pow_under_grad():
    """from test_autograd.py test_anomaly_grad_warnings: d1 += 1 after d2 = d1 ** 2."""
    a = torch.tensor([0.5, -1.0, 2.0, 3.0, 0.25], requires_grad=True)
    d1 = a + 1.0
    d2 = d1**2
    d1 += 1.0  # WRITE
    (g,) = torch.autograd.grad(d2.sum(), a)
    return {"a": g}


@case(expect="fails")
def add_after_pow_under_anomaly_mode():
    """from test_autograd.py test_anomaly_grad_warnings, inside detect_anomaly()."""
    a = torch.tensor([0.5, -1.0, 2.0, 3.0, 0.25], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autograd.detect_anomaly():
            d1 = a + 1.0
            d2 = d1**2
            d1 += 1.0  # WRITE
            (g,) = torch.autograd.grad(d2.sum(), a)
    return {"a": g}


class _Clone(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g.clone()


@case(expect="fails")
def add_on_one_branch_beside_a_python_function():
    """from test_autograd.py test_pynode_destruction_deadlock: left1 += 1 after left1 ** 2."""
    inp = torch.tensor([0.5, 2.0], requires_grad=True)
    right = _Clone.apply(inp)
    left1 = inp.clone()
    left2 = left1**2
    left1 += 1.0  # WRITE
    out = left2 + right
    out.sum().backward()
    return grads(inp=inp)


@case(expect="fails")
def inference_mode_write_to_a_saved_normal_tensor():
    """from test_autograd.py test_inference_mode_existing_autograd_session: a.add_(2) inside."""
    s = ramp(1, 2, 3, grad=True)
    a = s.clone()
    out = a * a
    with torch.inference_mode():
        a.add_(2.0)  # WRITE
    out.backward(torch.ones_like(out))
    return grads(s=s)


@case(expect="fails")
def no_grad_add_to_a_saved_exp_output():
    """from test_autograd.py test_saved_variable_version_counter: b += 1 under no_grad."""
    a = torch.tensor([0.5, -0.5], requires_grad=True)
    b = torch.exp(a)
    with torch.no_grad():
        b += 1.0  # WRITE
    b.sum().backward()
    return grads(a=a)


@case(expect="ok", reference=exact(inp=[1.0, 1.0]))
def add_after_dense_sum_of_itself():
    """from test_autograd.py test_per_dispatch_key_input_saving: dense sum saves no input."""
    inp = torch.tensor([0.5, 2.0], requires_grad=True)
    x = inp.clone()
    res = x.sum(-1, keepdim=True)
    x.add_(x)  # WRITE
    res.backward()
    return grads(inp=inp)


@case(expect="ok", reference=exact(old=[2.0, 2.0], new=[1.0, 1.0]))
def mul_after_taking_a_gradient_edge():
    """from test_autograd.py test_grad_to_node_inplace: x *= 2 after get_gradient_edge(x)."""
    leaf = torch.tensor([1.5, -0.5], requires_grad=True)
    x = leaf.clone()
    edge = torch.autograd.graph.get_gradient_edge(x)
    x *= 2.0  # WRITE
    g_old, g_new = torch.autograd.grad(x.sum(), (edge, x))
    return {"old": g_old, "new": g_new}


@case(expect="ok", reference=exact(leaf=[2.0, 2.0], a=[1.0, 1.0]))
def mul_on_a_tensor_that_retains_grad():
    """from test_autograd.py test_retain_grad_inplace: a.retain_grad(); a.mul_(2)."""
    leaf = torch.tensor([1.0, 3.0], requires_grad=True)
    a = leaf.clone()
    a.retain_grad()
    a.mul_(2.0)  # WRITE
    a.sum().backward()
    assert a.grad is not None
    return {"leaf": grads(leaf=leaf)["leaf"], "a": a.grad}


@case(expect="ok", reference=exact(a=[8.0]))
def mul_between_two_tensor_hooks():
    """from test_autograd.py test_tensor_hooks_inplace: hooks before and after b.mul_(2)."""
    a = torch.tensor([1.0], requires_grad=True)
    b = a.clone()
    b.register_hook(lambda g: g * 2)
    b.mul_(2.0)  # WRITE
    b.register_hook(lambda g: g * 2)
    b.sum().backward()
    return grads(a=a)


@case(expect="ok")
def var_mean_output_scaled_in_place():
    """from test_autograd.py test_retains_grad_inplace_multiple_outputs: var.mul_(2)."""
    b = torch.tensor([[0.5, 1.0, -1.0], [2.0, 0.0, 1.0], [1.5, -0.5, 3.0]], requires_grad=True)
    var, mean = torch.var_mean(b, dim=0)
    var.mul_(2.0)  # WRITE
    (var + mean).sum().backward()
    return grads(b=b)


@case(expect="ok")
def copy_into_a_detached_buffer_each_step():
    """from test_autograd.py test_no_unnecessary_save: x.copy_(mu + i) each step; x * ft
    saves ft only."""
    mu = torch.ones(1, requires_grad=True)
    x = torch.empty(1)
    loss = torch.zeros(())
    for i in range(3):
        x.detach_()
        x.copy_(mu + i)  # WRITE
        ft = torch.tensor([float(i)])
        loss = loss + (x * ft).sum()
    loss.backward()
    return grads(mu=mu)


@case(expect="ok")
def masked_setitem_from_itself():
    """from test_autograd.py test_index_backward_does_not_save_tensor: t[m] = t[m]."""
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.zeros(3, requires_grad=True)
    tensor = b + 0
    tensor[a != 0] = tensor[a != 0]  # WRITE
    tensor.backward(torch.ones_like(tensor))
    return grads(b=b)


@case(expect="ok", reference=exact(x=[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
def setitem_on_an_add_output():
    """from test_autograd.py test_setitem: y = x + 2; y[1] = 2; the row gets no gradient."""
    x = torch.ones(3, 3, requires_grad=True)
    y = x + 2.0
    y[1] = 2.0  # WRITE
    y.backward(torch.ones(3, 3))
    return grads(x=x)


@case(expect="ok")
def setitem_a_grad_requiring_value():
    """from test_autograd.py test_setitem: y[[0, 1], [1, 0]] = value that requires grad."""
    x = torch.ones(3, 3, requires_grad=True)
    y = x + 2.0
    value = torch.full((2,), 7.0, requires_grad=True)
    y[[0, 1], [1, 0]] = value  # WRITE
    y.backward(torch.ones(3, 3))
    return grads(x=x, value=value)


@case(expect="ok")
def assign_leaves_into_a_plain_tensor():
    """from test_autograd.py test_leaf_assignment: x[0] = y; x[1] = 2 * z; x now requires grad."""
    x = torch.zeros(3, 4)
    y = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    z = torch.tensor([0.5, 0.5, -1.0, 2.0], requires_grad=True)
    x[0] = y  # WRITE
    x[1] = 2 * z
    x.sum().backward()
    return grads(y=y, z=z)


@case(expect="ok")
def no_grad_assignment_into_a_leaf():
    """from test_autograd.py test_no_grad_assignment: x[0] = y under no_grad, then x is used."""
    x = torch.ones(3, 2, requires_grad=True)
    with torch.no_grad():
        x[0] = torch.tensor([5.0, 6.0])  # WRITE
    (x * 2.0).sum().backward()
    return grads(x=x)


@case(expect="ok")
def inplace_relu_on_a_view_of_a_clone():
    """from test_autograd.py test_inplace_on_view_saved_output: relu(view, inplace=True)."""
    root = ramp(3, 3, grad=True)
    copy = root.clone()
    view = copy.view(9)
    torch.nn.functional.relu(view, inplace=True)  # WRITE
    copy.sum().backward()
    return grads(root=root)


@case(expect="ok")
def add_on_a_view_of_a_clone_replays_the_view():
    """from test_autograd.py test_view_replay_enabled: out = x.clone().view(-1); out.add_(1)."""
    x = torch.ones(2, 2, requires_grad=True)
    out = x.clone().view(-1)
    out.add_(1.0)  # WRITE
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    return grads(x=x)


@case(expect="ok")
def index_put_then_two_backward_passes():
    """from test_autograd.py test_backward_twice_retained_graph_with_saved_values."""
    b = torch.tensor([0.5, 1.5, -2.0], requires_grad=True)
    c = torch.zeros(3)
    c[[1, 2]] = b[[1, 1]]  # WRITE
    c.backward(torch.ones(3), retain_graph=True)
    c.backward(torch.ones(3))
    return grads(b=b)


def _preserved_reference():
    """The same doubling of sigmoid's output, out of place: the gradient it should get."""
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    s = x.clone().sigmoid() * 2.0
    s.sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_preserved_reference)
def write_under_a_preserved_version_counter():
    """from test_autograd.py test_unsafe_set_version_counter: mul_ inside
    _unsafe_preserve_version_counter on sigmoid's saved output: no error, wrong gradient."""
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    s = x.clone().sigmoid()
    with torch.autograd._unsafe_preserve_version_counter(s):
        s.mul_(2.0)  # WRITE
    s.sum().backward()
    return grads(x=x)


@case(expect="fails", failure="detached")
def detach_in_place_a_saved_input():
    """from test_autograd.py test_saved_variable_saved_original_inplace_detach: a.detach_()
    after b = a.sin() saved a."""
    leaf = torch.tensor(1.0, requires_grad=True)
    a = leaf.clone()
    b = a.sin()
    a.detach_()  # WRITE
    b.backward()
    return grads(leaf=leaf)


@case(expect="ok")
def detach_in_place_a_tensor_saved_as_output():
    """from test_autograd.py test_saved_variable_saved_original_inplace_detach: exp saved its
    output, so a.detach_() afterwards is fine."""
    leaf = torch.tensor(1.0, requires_grad=True)
    a = leaf.clone()
    b = a.exp()
    a.detach_()  # WRITE
    b.backward()
    return grads(leaf=leaf)


@case(expect="ok", reference=exact(a=[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
def add_before_the_tensor_requires_grad():
    """from test_autograd.py test_no_requires_grad_inplace: a.add_(5) while a does not require
    grad yet, then a.requires_grad = True."""
    a = torch.tensor([[0.5, 1.0, 2.0], [-1.0, 0.0, 3.0]])
    a.add_(5.0)  # WRITE
    a.requires_grad = True
    a.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="leaf")
def add_after_the_tensor_requires_grad():
    """from test_autograd.py test_no_requires_grad_inplace: a.add_(5) once a requires grad."""
    a = torch.tensor([[0.5, 1.0, 2.0], [-1.0, 0.0, 3.0]])
    a.requires_grad = True
    a.add_(5.0)  # WRITE
    a.sum().backward()
    return grads(a=a)


@case(expect="fails", failure="view-leaf")
def add_to_an_old_view_after_the_base_requires_grad():
    """from test_autograd.py test_no_requires_grad_inplace: b = a[:] taken before
    a.requires_grad = True, then b.add_(5)."""
    a = torch.tensor([[0.5, 1.0, 2.0], [-1.0, 0.0, 3.0]])
    b = a[:]
    a.requires_grad = True
    b.add_(5.0)  # WRITE
    a.sum().backward()
    return grads(a=a)


@case(expect="ok")
def add_a_grad_requiring_tensor_into_a_plain_one():
    """from test_autograd.py test_requires_grad_inplace: a += b makes a require grad."""
    a = torch.tensor([[0.5, 1.0], [2.0, -1.0]]) + 0
    b = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    a += b  # WRITE
    (a * a).sum().backward()
    return grads(b=b)


@case(expect="ok")
def scale_a_no_grad_view_of_a_leaf_under_no_grad():
    """from test_autograd.py test_autograd_print_tensor: b = a[:]; b *= 2, both under no_grad;
    a is then used normally."""
    a = torch.tensor([1.0, 3.0], requires_grad=True)
    with torch.no_grad():
        b = a[:]
        b *= 2.0  # WRITE
    (a * a).sum().backward()
    return grads(a=a)


@case(expect="ok")
def set_a_parameter_to_its_own_slice_under_no_grad():
    """from test_autograd.py test_parameter_resize: asd.set_(asd[1:]) under no_grad, twice."""
    asd = torch.nn.Parameter(torch.arange(1.0, 9.0))
    for _ in range(2):
        with torch.no_grad():
            asd.set_(asd[1:])  # WRITE
            asd.grad = None
        m = torch.cat((asd, asd))
        (m * m).sum().backward()
    return grads(asd=asd)


@case(expect="fails")
def resize_a_saved_tensor():
    """from test_autograd.py test_resize_version_bump: resize_ bumps the version; w * x saved x."""
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x = torch.tensor([0.5, 1.5, 2.5])
    y = w * x
    x.resize_(2)  # WRITE
    y.sum().backward()
    return grads(w=w)


@case(expect="fails", failure="negative-slope")
def leaky_relu_in_place_with_a_negative_slope():
    """from test_nn.py test_leaky_relu_inplace_with_neg_slope: in-place leaky_relu_ with a
    negative slope cannot be differentiated; PyTorch says so at backward."""
    a = torch.tensor([-1.0, 1.0], requires_grad=True)
    b = a * 1.0
    torch.nn.functional.leaky_relu_(b, -2.0)  # WRITE
    b.sum().backward()
    return grads(a=a)


@case(expect="ok")
def leaky_relu_in_place_with_a_positive_slope():
    """from test_nn.py test_leaky_relu_inplace_with_neg_slope, with a positive slope (0.1),
    which backward supports."""
    a = torch.tensor([-1.0, 1.0], requires_grad=True)
    b = a * 1.0
    torch.nn.functional.leaky_relu_(b, 0.1)  # WRITE
    b.sum().backward()
    return grads(a=a)


@case(expect="ok")
def break_a_branch_that_autograd_grad_does_not_need():
    """from test_autograd.py test_grad_unreachable / test_will_engine_execute_node: grad(loss, w)
    runs only the nodes on w's path; the broken sigmoid branch is never executed."""
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    s = x.clone().sigmoid()
    loss = (s * 1.5).sum() + (w * w).sum()
    s.mul_(2.0)  # WRITE
    (gw,) = torch.autograd.grad(loss, [w])
    return {"w": gw}


@case(expect="ok")
def break_a_branch_that_backward_with_inputs_skips():
    """from test_autograd.py test_backward_with_inputs: loss.backward(inputs=[w]) runs only the
    nodes on w's path; the broken sigmoid branch is never executed."""
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    s = x.clone().sigmoid()
    loss = (s * 1.5).sum() + (w * w).sum()
    s.mul_(2.0)  # WRITE
    loss.backward(inputs=[w])
    return grads(w=w)


@case(expect="fails")
def break_a_branch_that_backward_with_inputs_needs():
    """from test_autograd.py test_backward_with_inputs: backward(inputs=[x]) does run the broken
    sigmoid branch."""
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    s = x.clone().sigmoid()
    loss = (s * 1.5).sum() + (w * w).sum()
    s.mul_(2.0)  # WRITE
    loss.backward(inputs=[x])
    return grads(x=x)


@case(expect="ok")
def write_a_tensor_whose_saving_node_is_gone():
    """from test_autograd.py test_no_unnecessary_save's idea: t = a * w saved a, but t (and its
    node) is freed before a.mul_(2); nothing that saved a is left."""
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    a = x * 1.0
    t = a * w
    del t
    a.mul_(2.0)  # WRITE
    (a * 3.0).sum().backward()
    return grads(x=x)


@case(expect="ok")
def break_a_node_below_the_tensor_autograd_grad_stops_at():
    """from test_autograd.py test_grad_nonleaf / test_grad_to_node: grad(loss, h) stops at h;
    the broken sigmoid node below h is never run."""
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    s = x.clone().sigmoid()
    h = s + 1.0
    s.mul_(2.0)  # WRITE
    (gh,) = torch.autograd.grad((h * h).sum(), [h])
    return {"h": gh}


@case(expect="fails")
def write_between_a_gradient_and_its_gradient():
    """from test_autograd.py test_hessian_vector / test_grad: g = grad(x ** 3, create_graph=True)
    saved x in g's own graph; x.mul_(2) under no_grad breaks g.sum().backward()."""
    leaf = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    x = leaf.clone()
    y = x**3
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with torch.no_grad():
        x.mul_(2.0)  # WRITE
    g.sum().backward()
    return grads(leaf=leaf)


@case(expect="ok", reference=exact(leaf=[3.0, -6.0, 12.0]))
def write_after_the_gradient_of_the_gradient():
    """from test_autograd.py test_hessian_vector: the same write once g.sum().backward() ran:
    d/dx of 3x^2 is 6x."""
    leaf = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    x = leaf.clone()
    y = x**3
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    g.sum().backward()
    with torch.no_grad():
        x.mul_(2.0)  # WRITE
    return grads(leaf=leaf)


@case(expect="fails")
def add_after_pow_with_warnings_as_errors():
    """from test_autograd.py test_anomaly_grad_warnings (second half): the same write and
    grad with warnings.simplefilter("error"); PyTorch still raises its RuntimeError."""
    a = torch.tensor([0.5, -1.0, 2.0, 3.0, 0.25], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d1 = a + 1.0
        d2 = d1**2
        d1 += 1.0  # WRITE
        (g,) = torch.autograd.grad(d2.sum(), a)
    return {"a": g}


def _data_mul_reference():
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    torch.sigmoid(x).sum().backward()
    return grads(x=x)


@case(expect="silent", reference=_data_mul_reference)
def data_write_with_warnings_as_errors():
    """from test_autograd.py test_version_counter (a .data write keeps the version) run with
    warnings.simplefilter("error"), as test_anomaly_grad_warnings does: PyTorch runs on."""
    x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = torch.sigmoid(x)
        s.data.mul_(2.0)  # WRITE
        s.sum().backward()
    return grads(x=x)


@case(expect="fails")
def second_backward_accumulates_into_a_saved_grad():
    """from test_autograd.py test_accumulate_grad: without create_graph the second backward adds
    into x.grad in place; y = x.grad * w saved that tensor, so y's backward fails."""
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([0.5, 0.5], requires_grad=True)
    (x * x).sum().backward()
    y = x.grad * w
    (x * x).sum().backward()  # WRITE
    y.sum().backward()
    return grads(w=w)


@case(expect="fails")
def write_a_gradient_that_a_later_op_saved():
    """from test_autograd.py test_grad: gx = grad(z, x, create_graph=True); h = gx * gx saved gx;
    gx.mul_(2) under no_grad breaks h's backward."""
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    y = torch.tensor([2.0, 3.0], requires_grad=True)
    z = x**2 + y * x + y**2
    (gx,) = torch.autograd.grad(z.sum(), x, create_graph=True)
    h = gx * gx
    with torch.no_grad():
        gx.mul_(2.0)  # WRITE
    h.sum().backward()
    return grads(x=x, y=y)


@case(expect="ok")
def batch_norm_called_twice_before_backward():
    """from test_autograd.py test_hooks_cpp (a BatchNorm1d), here in training mode and called
    twice before one backward: each call updates running_mean/var in place."""
    bn = torch.nn.BatchNorm1d(3)
    a = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5], [2.0, 1.0, 0.0]], requires_grad=True)
    b = torch.tensor([[1.5, 0.0, -2.0], [0.5, 2.25, 1.5], [-1.0, 1.0, 3.0]], requires_grad=True)
    out_a = bn(a)
    out_b = bn(b)  # WRITE
    (out_a * out_b).sum().backward()
    return grads(a=a, b=b)


def _embedding(max_norm: float | None) -> torch.nn.Embedding:
    emb = torch.nn.Embedding(3, 5, max_norm=max_norm)
    with torch.no_grad():
        emb.weight.copy_(torch.arange(15.0).reshape(3, 5) / 4)
    return emb


@case(expect="fails")
def embedding_max_norm_renormalizes_a_saved_weight():
    """The nn.Embedding max_norm note (test_nn.py's test_embedding_max_norm cases): the lookup
    renormalizes rows of the weight in place, and weight @ W had saved the weight."""
    emb = _embedding(1.0)
    w = torch.arange(35.0).reshape(5, 7).div(10).requires_grad_()
    a = emb.weight @ w
    out = emb(torch.tensor([1, 2]))  # WRITE
    (a.sum() + out.sum()).backward()
    return grads(w=w)


@case(expect="ok")
def embedding_max_norm_after_cloning_the_weight():
    """The nn.Embedding max_norm note's fix (test_nn.py's test_embedding_max_norm cases): clone
    the weight before using it elsewhere."""
    emb = _embedding(1.0)
    w = torch.arange(35.0).reshape(5, 7).div(10).requires_grad_()
    a = emb.weight.clone() @ w
    out = emb(torch.tensor([1, 2]))  # WRITE
    (a.sum() + out.sum()).backward()
    return grads(w=w)
