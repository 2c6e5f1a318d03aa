"""The autograd engine: backward, grad, hooks, grad modes, custom Functions, checks and memory."""
import gc
import weakref

import numpy as np
import pytest

import gradtensor as gt
from gradtensor.autograd import Function, GradcheckError, gradcheck, gradgradcheck


def leaf(values):
    return gt.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def assert_close(t, expected):
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-10, atol=1e-12)


# --- backward on chains and DAGs ----------------------------------------------------------------


def test_backward_through_a_chain():
    x = leaf([0.3, -1.2, 2.0])
    gt.exp(gt.sin(x)).sum().backward()
    v = x.numpy()
    assert_close(x.grad, np.exp(np.sin(v)) * np.cos(v))


def test_backward_through_a_diamond_dag():
    x = leaf([1.5, -2.0])
    a = x * 2.0
    b = x * 3.0
    (a * b + a).sum().backward()  # 6x^2 + 2x
    assert_close(x.grad, 12 * x.numpy() + 2)


def test_a_tensor_used_several_times_gets_the_sum_of_its_gradients():
    x = leaf([0.5, 2.0])
    (x * x * x + x).sum().backward()
    assert_close(x.grad, 3 * x.numpy() ** 2 + 1)

def test_a_node_runs_once_with_every_consumers_gradient_however_late_they_were_recorded():
    # `a` feeds a mul at once and an add 40 ops later, and is itself a second root below the first:
    # its node must wait for both consumers and the seed, and run once (the hook sees the total).
    x = leaf([0.7, -1.1])
    a = x * 2.0
    seen = []
    a.register_hook(lambda g: seen.append(g.numpy().copy()))
    b = a * 1.5
    for _ in range(40):
        b = b * 1.01
    c = (b + a).sum()
    (gx,) = gt.autograd.grad([c, a], [x], grad_outputs=[None, gt.tensor([10.0, 20.0], dtype=gt.float64)])
    da = 1.5 * 1.01**40 + 1.0
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [da + 10.0, da + 20.0], rtol=1e-12)
    assert_close(gx, 2.0 * np.array([da + 10.0, da + 20.0]))
    # a leaf that entered an earlier graph (its node made then) still runs after this graph's nodes
    w = leaf([3.0])
    (w * 1.0).sum().backward()
    w.grad = None
    h = w * x
    (h * h + w).sum().backward()
    assert_close(w.grad, [2 * 3.0 * (0.7**2 + 1.1**2) + 2.0])



def test_grad_accumulates_across_two_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    assert_close(x.grad, [5.0, 5.0])


def test_retain_graph_allows_a_second_backward_that_accumulates():
    x = leaf([1.0, -2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert_close(x.grad, 4 * x.numpy())


def test_second_backward_through_a_freed_graph_raises():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_a_10000_op_chain_backpropagates_without_recursion():
    x = leaf(1.0)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** 10_000, rtol=1e-9)


def test_float32_leaves_get_float32_gradients():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_backward_with_an_explicit_gradient():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).backward(gt.tensor(np.array([1.0, 0.0, -1.0])))
    assert_close(x.grad, [2.0, 0.0, -6.0])


def test_backward_on_a_non_scalar_without_grad_says_what_to_pass():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*pass grad") as info:
        (x * 2.0).backward()
    assert "ones_like" in str(info.value)


def test_backward_on_a_tensor_that_does_not_require_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gt.tensor([1.0, 2.0]).sum().backward()


# --- higher order ---------------------------------------------------------------------------------


def _derivatives(fn, x, order):
    """[f'(x), f''(x), ...] by repeated autograd.grad with create_graph=True."""
    out, result = fn(x), []
    for _ in range(order):
        (out,) = gt.autograd.grad(out, x, create_graph=True)
        result.append(out.item())
    return result


def test_create_graph_gives_second_and_third_derivatives_of_a_cube():
    x = leaf(0.7)
    np.testing.assert_allclose(_derivatives(lambda t: t ** 3, x, 3), [3 * 0.49, 6 * 0.7, 6.0], rtol=1e-12)


def test_create_graph_gives_second_and_third_derivatives_of_sin():
    x = leaf(0.7)
    expected = [np.cos(0.7), -np.sin(0.7), -np.cos(0.7)]
    np.testing.assert_allclose(_derivatives(gt.sin, x, 3), expected, rtol=1e-12)


def test_backward_with_create_graph_makes_grad_differentiable():
    x = leaf(1.3)
    (x ** 3).backward(create_graph=True)
    first = x.grad
    assert first.requires_grad and first.grad_fn is not None
    x.grad = None
    first.backward()
    np.testing.assert_allclose(x.grad.item(), 6 * 1.3)


def test_without_create_graph_grads_are_plain_tensors():
    x = leaf(1.3)
    (x ** 3).backward()
    assert not x.grad.requires_grad and x.grad.grad_fn is None


# --- retain_grad and hooks ------------------------------------------------------------------------


def test_retain_grad_keeps_the_gradient_of_a_non_leaf():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    y.retain_grad()
    z = x * 2.0
    (y * y + z).sum().backward()
    assert_close(y.grad, 2 * y.numpy())
    assert z.grad is None  # not retained


def test_hook_on_a_leaf_modifies_its_gradient_until_removed():
    x = leaf([1.0, 2.0])
    handle = x.register_hook(lambda g: g * 2.0)
    (x * 3.0).sum().backward()
    assert_close(x.grad, [6.0, 6.0])
    handle.remove()
    x.grad = None
    (x * 3.0).sum().backward()
    assert_close(x.grad, [3.0, 3.0])


def test_hook_on_a_leaf_used_several_times_sees_the_sum_once():
    x = leaf([1.0, 2.0])
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy()) or g * 10.0)
    (x * 3.0 + x * x + x.exp()).sum().backward()
    total = 3.0 + 2 * x.numpy() + np.exp(x.numpy())
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], total, rtol=1e-12)
    assert_close(x.grad, 10 * total)


@pytest.mark.parametrize("hook,what", [(lambda g: g.sum(), r"shape \(2,\), dtype float64 to shape \(\)"),
                                       (lambda g: g.astype("float32"), "shape .2,., dtype float64 to shape .2,., dtype float32")])
def test_a_hook_may_not_change_the_gradients_shape_or_dtype(hook, what):
    for x in (leaf([1.0, 2.0]), leaf([1.0, 2.0]) * 1.0):
        x.register_hook(hook)
        with pytest.raises(RuntimeError, match=f"backward: hook '<lambda>' changed the gradient from {what}"):
            (x * x).sum().backward()


def test_hook_on_a_non_leaf_modifies_the_gradient_flowing_on():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy()))  # returns None: observes only
    y.register_hook(lambda g: g * 10.0)
    y.retain_grad()  # .grad sees the gradient after the hooks registered before it
    (y * y).sum().backward()
    np.testing.assert_allclose(seen[0], 2 * y.numpy())
    assert_close(y.grad, 20 * y.numpy())
    assert_close(x.grad, 3 * 20 * y.numpy())


def test_removed_hook_on_a_non_leaf_no_longer_runs():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    handle = y.register_hook(lambda g: g * 0.0)
    handle.remove()
    (y * 1.0).sum().backward()
    assert_close(x.grad, [3.0, 3.0])


def test_gradients_that_hooks_kept_do_not_share_memory_with_grad():
    """.grad is written in place (zero_grad, GradScaler.unscale_): what retain_grad or a hook kept
    must not change with it."""
    x = leaf([[1.0, 2.0]])
    r = x.reshape(-1)
    r.retain_grad()
    kept = []
    x.register_hook(lambda g: kept.append(g))
    (r * 3.0).sum().backward()
    x.grad.data[...] = 0.0
    assert_close(r.grad, [3.0, 3.0])
    assert_close(kept[0], [[3.0, 3.0]])


def test_create_graph_gives_each_leaf_a_gradient_of_its_own():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    seed = gt.tensor([1.0, 1.0])
    (a + b).backward(seed, create_graph=True)
    assert a.grad is not b.grad
    assert not np.shares_memory(a.grad.data, b.grad.data) and not np.shares_memory(a.grad.data, seed.data)
    assert_close(a.grad, [1.0, 1.0])


def test_register_hook_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="register_hook"):
        gt.tensor([1.0]).register_hook(lambda g: g)


# --- detach and requires_grad_ ----------------------------------------------------------------------


def test_detach_shares_data_and_stops_gradients():
    x = leaf([2.0, 3.0])
    d = x.detach()
    assert d.is_leaf and not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.data, x.data)
    (d * x).sum().backward()
    assert_close(x.grad, [2.0, 3.0])  # d counted as a constant


def test_requires_grad_on_a_leaf():
    x = gt.tensor([1.0, 2.0])
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad


def test_requires_grad_on_a_non_leaf_raises():
    y = leaf([1.0]) * 2.0
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_requires_grad_on_an_int_tensor_raises_type_error():
    with pytest.raises(TypeError, match="int64"):
        gt.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError):
        gt.tensor([1, 2], requires_grad=True)


# --- grad modes ----------------------------------------------------------------------------------------


def test_no_grad_context_records_nothing_and_enable_grad_reenables():
    x = leaf([1.0])
    with gt.no_grad():
        y = x * 2.0
        assert not gt.is_grad_enabled()
        with gt.enable_grad():
            z = x * 2.0
            assert gt.is_grad_enabled()
        assert not gt.is_grad_enabled()
    assert gt.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None


def test_grad_mode_decorators():
    @gt.no_grad()
    def off():
        return gt.is_grad_enabled()

    @gt.enable_grad()
    def on():
        return gt.is_grad_enabled()

    @gt.set_grad_enabled(False)
    def set_off():
        return gt.is_grad_enabled()

    assert gt.is_grad_enabled()  # decorating changed nothing
    assert off() is False and gt.is_grad_enabled()
    assert set_off() is False and gt.is_grad_enabled()
    with gt.no_grad():
        assert on() is True
        assert not gt.is_grad_enabled()


def test_set_grad_enabled_as_context_manager_restores_the_previous_mode():
    with gt.set_grad_enabled(False):
        assert not gt.is_grad_enabled()
        with gt.set_grad_enabled(True):
            assert gt.is_grad_enabled()
        assert not gt.is_grad_enabled()
    assert gt.is_grad_enabled()


def test_set_grad_enabled_as_a_plain_call_applies_at_once():
    try:
        gt.set_grad_enabled(False)
        assert not gt.is_grad_enabled()
        assert not (leaf([1.0]) * 2.0).requires_grad
    finally:
        gt.set_grad_enabled(True)
    assert gt.is_grad_enabled()


def test_grad_mode_is_restored_when_the_block_raises():
    with pytest.raises(ValueError):
        with gt.no_grad():
            raise ValueError("inside")
    assert gt.is_grad_enabled()


# --- autograd.grad ---------------------------------------------------------------------------------------


def test_grad_with_grad_outputs():
    x = leaf([1.0, 2.0, 3.0])
    (g,) = gt.autograd.grad(x * x, x, grad_outputs=gt.tensor(np.array([1.0, -1.0, 0.5])))
    assert_close(g, [2.0, -4.0, 3.0])


def test_grad_of_several_outputs_and_inputs():
    x, w = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    gx, gw = gt.autograd.grad([(x * w).sum(), (x * x).sum()], [x, w])
    assert_close(gx, w.numpy() + 2 * x.numpy())
    assert_close(gw, x.numpy())


def test_grad_allow_unused():
    x, unused = leaf([1.0]), leaf([2.0])
    y = (x * 3.0).sum()
    with pytest.raises(RuntimeError, match="allow_unused"):
        gt.autograd.grad(y, [x, unused], retain_graph=True)
    gx, gu = gt.autograd.grad(y, [x, unused], allow_unused=True)
    assert_close(gx, [3.0])
    assert gu is None


def test_grad_with_respect_to_a_non_leaf():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    z = (y * y).sum()
    (gy,) = gt.autograd.grad(z, y)
    assert_close(gy, 2 * y.numpy())


def test_grad_does_not_touch_dot_grad():
    x, w = leaf([1.0, 2.0]), leaf([0.5, 0.5])
    w.grad = gt.tensor(np.array([7.0, 7.0]))
    gt.autograd.grad((x * w).sum(), [x, w])
    assert x.grad is None
    assert_close(w.grad, [7.0, 7.0])


# --- custom Functions ---------------------------------------------------------------------------------------


class ScaledMul(Function):
    """scale * a * b, recording which inputs backward was asked for."""

    calls = []

    @staticmethod
    def forward(ctx, a, b, scale):
        ctx.save_for_backward(a, b)
        ctx.scale = scale
        return a.data * b.data * scale

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[:2]
        ScaledMul.calls.append(tuple(ctx.needs_input_grad))
        return (g * b * ctx.scale if need_a else None, g * a * ctx.scale if need_b else None)


def test_custom_function_forward_backward_and_needs_input_grad():
    ScaledMul.calls.clear()
    a, b = leaf([1.0, 2.0]), gt.tensor(np.array([3.0, 4.0]))
    out = ScaledMul.apply(a, b, 0.5)
    assert_close(out, [1.5, 4.0])
    assert out.grad_fn.name() == "ScaledMulBackward"
    out.sum().backward()
    assert_close(a.grad, [1.5, 2.0])
    assert b.grad is None
    assert ScaledMul.calls == [(True, False, False)]


def test_custom_function_used_twice_accumulates():
    a, b = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    y = ScaledMul.apply(a, b, 2.0)
    z = ScaledMul.apply(y, b, 1.0)  # 2 a b^2
    z.sum().backward()
    assert_close(a.grad, 2 * b.numpy() ** 2)
    assert_close(b.grad, 4 * a.numpy() * b.numpy())


class MaskedScale(Function):
    """x * mask; no gradient for the mask even when it requires one."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x.data * mask.data

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None


def test_custom_function_returning_none_for_a_non_differentiable_input():
    x, mask = leaf([1.0, 2.0, 3.0]), leaf([1.0, 0.0, 1.0])
    MaskedScale.apply(x, mask).sum().backward()
    assert_close(x.grad, [1.0, 0.0, 1.0])
    assert mask.grad is None


class SplitHalves(Function):
    """Two outputs: the first and second half of a vector."""

    @staticmethod
    def forward(ctx, x):
        n = x.shape[0] // 2
        return x.data[:n].copy(), x.data[n:].copy()

    @staticmethod
    def backward(ctx, g_first, g_second):
        xp = gt.backend.xp(g_first.data)
        return gt.Tensor(xp.concatenate([g_first.data, g_second.data]))


def test_custom_function_with_an_unused_output_gets_zeros_for_it():
    x = leaf([1.0, 2.0, 3.0, 4.0])
    first, _ = SplitHalves.apply(x)
    (first * 2.0).sum().backward()
    assert_close(x.grad, [2.0, 2.0, 0.0, 0.0])


class DoubleAndExp(Function):
    """Two outputs; backward uses the second, kept with save_output."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x.data, ctx.save_output(np.exp(x.data))

    @staticmethod
    def backward(ctx, g_double, g_exp):
        return g_double * 2 + g_exp * ctx.saved_output()


def test_saved_output_of_a_later_output_differentiates_as_that_output():
    """saved_output() is output 1 here: the second derivative goes through exp, not through 2x."""
    x = leaf([0.5])
    _, y = DoubleAndExp.apply(x)
    (g,) = gt.autograd.grad(y.sum(), [x], create_graph=True)
    (h,) = gt.autograd.grad(g.sum(), [x])
    assert_close(g, np.exp([0.5]))
    assert_close(h, np.exp([0.5]))


class WrongShape(Function):
    @staticmethod
    def forward(ctx, x):
        return x.data.sum()

    @staticmethod
    def backward(ctx, g):
        return g  # should be broadcast to the input's shape


def test_custom_function_returning_a_wrongly_shaped_gradient_raises():
    with pytest.raises(RuntimeError, match=r"WrongShapeBackward.*\(\).*\(3,\)"):
        WrongShape.apply(leaf([1.0, 2.0, 3.0])).backward()


class SecondGradientWrong(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a.data * b.data

    @staticmethod
    def backward(ctx, g):
        return g, g.sum()


class OneGradientForTwo(Function):
    @staticmethod
    def forward(ctx, a, b, scale):
        return a.data * b.data * scale

    @staticmethod
    def backward(ctx, g):
        return g  # b's gradient is missing


def test_backward_errors_name_the_input_and_count_the_gradients():
    x = leaf([1.0, 2.0])
    # the same tensor twice: the message names the position of the wrong gradient, not the first equal edge
    with pytest.raises(RuntimeError, match=r"SecondGradientWrongBackward: .* shape \(\) for input 1 of shape \(2,\)"):
        SecondGradientWrong.apply(x, x).sum().backward()
    with pytest.raises(RuntimeError, match=r"OneGradientForTwoBackward: backward returned 1 gradients but the forward took 3"):
        OneGradientForTwo.apply(x, leaf([3.0, 4.0]), 2.0).sum().backward()
    # a missing gradient for an input that needs none (the number) is fine
    y = OneGradientForTwo.apply(x, gt.tensor([3.0, 4.0]), 2.0)
    y.sum().backward()
    assert_close(x.grad, [1.0, 1.0])


# --- in-place writes and the version counter --------------------------------------------------------------


def test_setitem_on_a_tensor_requiring_grad_raises():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"__setitem__.*\(2,\)"):
        x[0] = 5.0


def test_setitem_of_a_value_requiring_grad_raises():
    """The write is not recorded: the value's gradient would be lost without a word."""
    x = leaf([1.0, 2.0])
    b = gt.zeros(2, dtype=gt.float64)
    with pytest.raises(RuntimeError, match=r"__setitem__: the value \(shape \(2,\)\) requires grad"):
        b[:] = x * 2
    b[:] = (x * 2).detach()
    assert_close(b, [2.0, 4.0])


def test_setitem_under_no_grad_writes_and_bumps_the_version():
    x = leaf([1.0, 2.0])
    with gt.no_grad():
        x[0] = 5.0
    assert_close(x, [5.0, 2.0])
    assert x._version[0] == 1


def test_modifying_a_saved_input_under_no_grad_makes_backward_raise():
    a, w = gt.tensor(np.array([1.0, 2.0, 3.0])), leaf([1.0, 1.0, 1.0])
    out = (a * w).sum()
    a[0] = 9.0  # a does not require grad: writing is allowed, but MulBackward saved it
    with pytest.raises(RuntimeError, match=r"MulBackward.*\(3,\)"):
        out.backward()


def test_a_view_of_a_later_operand_shares_its_version_counter():
    h = gt.tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))
    v = gt.einsum("ij->ji", h)  # a view of h, which is not the first argument
    assert v.data.base is h.data
    w = leaf([[1.0, 1.0], [1.0, 1.0]])
    out = (w * v).sum()
    h[0, 0] = 9.0  # changes v, which MulBackward saved
    with pytest.raises(RuntimeError, match=r"MulBackward.*\(2, 2\)"):
        out.backward()


def test_modifying_a_saved_tensor_through_a_detached_alias_makes_backward_raise():
    w = leaf([1.0, 1.0, 1.0])
    h = w * 2.0
    out = (h * w).sum()
    h.detach()[0] = 3.0  # the alias shares h's version counter
    with pytest.raises(RuntimeError, match=r"MulBackward.*\(3,\)"):
        out.backward()


def test_modifying_a_tensor_no_node_saved_is_fine():
    a, w = gt.tensor(np.array([1.0, 2.0])), leaf([1.0, 1.0])
    out = (a + w).sum()  # add saves nothing
    a[0] = 9.0
    out.backward()
    assert_close(w.grad, [1.0, 1.0])


# --- memory: tape release, no cycles, .grad ownership ---------------------------------------------------------


def test_the_tape_releases_saved_tensors_after_backward():
    x = leaf([1.0, 2.0])
    mid = gt.sin(x)  # saved by the Mul below
    mid_ref = weakref.ref(mid)
    out = (mid * mid).sum()
    del mid
    assert mid_ref() is not None  # the graph keeps it for backward
    out.backward()
    assert mid_ref() is None  # out is still alive, but the tape let go


def test_the_tape_releases_saved_output_arrays_after_backward():
    x = leaf([1.0, 2.0])
    e = gt.exp(x)  # Exp keeps its output array for backward
    array_ref = weakref.ref(e.data)
    out = e.sum()
    del e
    assert array_ref() is not None
    out.backward()
    assert array_ref() is None


@pytest.mark.parametrize("run_backward", [False, True], ids=["no_backward", "after_backward"])
def test_no_reference_cycles_keep_a_graph_alive(run_backward):
    gc.disable()
    try:
        x = leaf([1.0, 2.0])
        mid = gt.exp(x) * x
        out = (gt.sin(mid) * mid).sum()
        refs = [weakref.ref(mid), weakref.ref(out), weakref.ref(out.grad_fn), weakref.ref(mid.grad_fn)]
        if run_backward:
            out.backward()
        del mid, out
        assert all(r() is None for r in refs)  # freed by reference counting alone
        leaf_ref, node_ref = weakref.ref(x), weakref.ref(x._get_accumulator())
        del x
        assert leaf_ref() is None and node_ref() is None  # the leaf and its AccumulateGrad node too
    finally:
        gc.enable()


def test_a_leaf_keeps_one_accumulate_node_across_graphs():
    x = leaf([1.0, 2.0])
    first = (x * x).sum()
    second = (x * 3.0).sum()
    assert first.grad_fn.next_edges[0][0].next_edges[0][0] is x._get_accumulator()
    assert second.grad_fn.next_edges[0][0].next_edges[0][0] is x._get_accumulator()
    first.backward()
    second.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0 + 3.0, 4.0 + 3.0])


def test_graph_that_outlives_its_leaf_still_runs_backward():
    x = leaf([1.0, 2.0])
    y = leaf([3.0, 4.0])
    out = (x + 2.0 * y).sum()  # add saves nothing: the graph holds x only through its node, weakly
    x_ref = weakref.ref(x)
    del x
    assert x_ref() is None  # nobody can read x.grad any more; y's gradient still arrives
    out.backward()
    np.testing.assert_allclose(y.grad.numpy(), [2.0, 2.0])


def test_leaf_grads_own_their_memory():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (x + y).sum().backward()
    assert not np.shares_memory(x.grad.data, y.grad.data)
    x.grad.data += 1.0  # optimizers update .grad in place
    assert_close(y.grad, [1.0, 1.0])


def test_leaf_grad_of_a_sum_is_writeable():
    x = leaf([1.0, 2.0, 3.0])
    x.sum().backward()
    assert x.grad.data.flags.writeable
    x.grad.data[0] = 5.0
    assert_close(x.grad, [5.0, 1.0, 1.0])


def test_leaf_grad_does_not_alias_the_gradient_passed_to_backward():
    x = leaf([1.0, 2.0])
    seed = gt.tensor(np.array([1.0, 1.0]))
    x.reshape(1, 2).backward(seed.reshape(1, 2))
    assert not np.shares_memory(x.grad.data, seed.data)


def test_gradients_summed_in_place_leave_the_seed_gradient_alone():
    # the seed reaches x's slot twice through the adds (the same array each time); the engine sums into
    # an array of its own, never into the caller's
    x = leaf([1.0, 2.0])
    seed = gt.tensor(np.array([1.0, 10.0]))
    ((x + x) + x).backward(seed)
    assert_close(x.grad, [3.0, 30.0])
    assert_close(seed, [1.0, 10.0])


def test_a_weight_used_at_every_step_gathers_the_sum_of_its_gradients():
    w = leaf([[0.5, -0.2], [0.1, 0.3]])
    h = gt.tensor(np.array([1.0, -1.0]))
    states = []
    for _ in range(5):
        h = (w @ h).tanh()
        states.append(h)
    sum(s.sum() for s in states).backward()
    expected = gt.autograd.grad(sum(s.sum() for s in _unrolled(w, 5)), w, create_graph=True)[0]
    assert_close(w.grad, expected.numpy())


def _unrolled(w, steps):
    h = gt.tensor(np.array([1.0, -1.0]))
    for _ in range(steps):
        h = (w @ h).tanh()
        yield h


@pytest.mark.parametrize("twice", [False, True], ids=["one_backward", "two_backwards"])
def test_gradients_of_a_0d_leaf_are_arrays_an_optimizer_can_update(twice):
    # NumPy sums 0-d arrays into scalars; a .grad must stay an array (optimizers write into it)
    w = gt.tensor(2.0, requires_grad=True)
    (w * 3.0 + w * 4.0).backward()
    if twice:
        (w * 1.0).backward()
    assert isinstance(w.grad.data, np.ndarray)
    assert_close(w.grad, 8.0 if twice else 7.0)
    gt.optim.SGD([w], lr=0.5, momentum=0.9).step()
    assert_close(w, 2.0 - 0.5 * (8.0 if twice else 7.0))


# --- gradcheck ----------------------------------------------------------------------------------------------------


class Cube(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.data ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3.0 * x * x


class WrongCube(Cube):
    """Cube with a backward that is 10% off at element 1 and 50% off at element 2."""

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3.0 * x * x * gt.tensor(np.array([1.0, 1.1, 1.5]))


def test_gradcheck_and_gradgradcheck_pass_for_a_correct_function():
    x = leaf([0.5, -1.0, 2.0])
    assert gradcheck(Cube.apply, (x,)) is True
    assert gradgradcheck(Cube.apply, (x,)) is True


def test_gradcheck_names_the_worst_element_of_a_wrong_function():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(GradcheckError) as info:
        gradcheck(WrongCube.apply, (x,))
    message = str(info.value)
    assert message.count("(2,)") >= 2 and "(1,)" not in message  # output 2 / input 2, not element 1
    assert "40.5" in message and "27" in message  # analytic 1.5 * 3 * 3^2 vs numerical 3 * 3^2


def test_gradcheck_error_is_a_runtime_error():
    assert issubclass(GradcheckError, RuntimeError)


# --- detect_anomaly -------------------------------------------------------------------------------------------------


class NanGrad(Function):
    """A backward that hands the engine a NaN gradient directly (no op inside backward makes it)."""

    @staticmethod
    def forward(ctx, x):
        return x.data * 2.0

    @staticmethod
    def backward(ctx, g):
        return gt.Tensor(gt.backend.xp(g.data).full(g.shape, float("nan")))


def test_detect_anomaly_names_the_forward_op_that_made_a_nan():
    x = leaf([-1.0, 1.0])
    with gt.autograd.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(RuntimeError, match=r"Log.*NaN"):
            gt.log(x)


def test_detect_anomaly_names_the_backward_node_of_a_nan_gradient():
    x = leaf([0.0, 1.0])
    with gt.autograd.detect_anomaly(), np.errstate(invalid="ignore", divide="ignore"):
        out = (gt.sqrt(x) * 0.0).sum()  # forward is finite; d sqrt / dx at 0 gives 0 / 0
        with pytest.raises(RuntimeError, match=r"SqrtBackward.*Sqrt") as info:
            out.backward()
    assert "NaN" in str(info.value)


def test_detect_anomaly_names_a_custom_function_returning_a_nan_gradient():
    x = leaf([1.0, 2.0])
    with gt.autograd.detect_anomaly():
        out = NanGrad.apply(x).sum()
        with pytest.raises(RuntimeError, match=r"NanGradBackward.*NanGrad.*NaN"):
            out.backward()


def test_detect_anomaly_as_a_decorator():
    @gt.autograd.detect_anomaly()
    def run():
        NanGrad.apply(leaf([1.0])).sum().backward()

    with pytest.raises(RuntimeError, match="NanGradBackward"):
        run()


def test_without_detect_anomaly_nans_pass_silently():
    x = leaf([0.0, 1.0])
    with np.errstate(invalid="ignore", divide="ignore"):
        (gt.sqrt(x) * 0.0).sum().backward()
        y = gt.log(leaf([-1.0]))
    assert np.isnan(x.grad.numpy()[0]) and x.grad.numpy()[1] == 0.0
    assert np.isnan(y.item())
    z = leaf([1.0])
    NanGrad.apply(z).sum().backward()
    assert np.isnan(z.grad.item())
