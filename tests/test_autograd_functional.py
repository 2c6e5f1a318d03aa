"""gt.autograd.functional: vjp, jvp, hvp, vhp, jacobian, hessian against closed forms and finite differences."""
import numpy as np
import pytest

import gradtensor as gt
from gradtensor.autograd.functional import hessian, hvp, jacobian, jvp, vhp, vjp

RNG = np.random.default_rng(0)
A = RNG.standard_normal((2, 3))


def t64(values, requires_grad=False):
    return gt.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


def assert_close(t, expected, rtol=1e-10, atol=1e-12):
    assert isinstance(t, gt.Tensor)
    np.testing.assert_allclose(t.numpy(), expected, rtol=rtol, atol=atol)


def numeric_jacobian(fn, x, eps=1e-6):
    """d fn(x) / d x by central differences, shaped fn(x).shape + x.shape (fn maps arrays to arrays)."""
    x = np.asarray(x, dtype=np.float64)
    out_shape = np.shape(fn(x))
    jac = np.zeros(out_shape + x.shape)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = eps
        jac[(Ellipsis,) + idx] = (np.asarray(fn(x + step)) - np.asarray(fn(x - step))) / (2 * eps)
    return jac


def on_arrays(fn):
    """fn (on tensors) as a function of NumPy arrays, evaluated without a tape."""
    def run(a):
        with gt.no_grad():
            return fn(t64(a)).numpy()

    return run


def nonlinear(x):
    """A 2x2 -> 3 map mixing elementwise ops, a reduction and a matmul."""
    return gt.sin(x @ t64([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0]])).sum(axis=0) * gt.exp(x).sum()


X22 = np.array([[0.3, -0.7], [1.1, 0.4]])


# --- vjp ---------------------------------------------------------------------------------------------


def test_vjp_of_a_matmul_is_the_transposed_matrix_times_v():
    x, v = t64([1.0, 2.0, -1.0], requires_grad=True), t64([0.5, -2.0])
    out, product = vjp(lambda x: t64(A) @ x, x, v)
    assert_close(out, A @ x.numpy())
    assert_close(product, A.T @ v.numpy())
    assert not out.requires_grad and not product.requires_grad and x.grad is None


def test_vjp_against_finite_differences():
    v = t64(RNG.standard_normal(3))
    _, product = vjp(nonlinear, t64(X22), v)
    expected = np.tensordot(v.numpy(), numeric_jacobian(on_arrays(nonlinear), X22), axes=1)
    assert_close(product, expected, rtol=1e-6, atol=1e-8)


def test_vjp_with_tuple_inputs_and_outputs():
    x, y = t64([1.0, 2.0]), t64([3.0, -1.0])
    v1, v2 = t64([1.0, -1.0]), t64([0.5, 2.0])
    (prod, total), (gx, gy) = vjp(lambda a, b: (a * b, a + b), (x, y), (v1, v2))
    assert_close(prod, [3.0, -2.0])
    assert_close(total, [4.0, 1.0])
    assert_close(gx, v1.numpy() * y.numpy() + v2.numpy())
    assert_close(gy, v1.numpy() * x.numpy() + v2.numpy())


def test_vjp_v_may_be_omitted_for_a_single_element_output():
    out, product = vjp(lambda x: (x * x).sum(), t64([1.0, -3.0]))
    assert_close(out, 10.0)
    assert_close(product, [2.0, -6.0])


def test_vjp_v_is_required_for_larger_outputs():
    with pytest.raises(RuntimeError, match=r"pass v.*\(2,\)"):
        vjp(lambda x: x * 2.0, t64([1.0, 2.0]))


def test_vjp_rejects_a_v_of_the_wrong_shape_or_length():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        vjp(lambda x: x * 2.0, t64([1.0, 2.0]), t64([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="2 tensors"):
        vjp(lambda x: x * 2.0, t64([1.0, 2.0]), (t64([1.0, 1.0]), t64([1.0, 1.0])))


def test_vjp_gives_zeros_for_an_unused_input_unless_strict():
    x, unused = t64([1.0, 2.0]), t64([[5.0, 6.0]])
    _, (gx, gu) = vjp(lambda a, b: (a * a).sum(), (x, unused))
    assert_close(gx, [2.0, 4.0])
    assert_close(gu, [[0.0, 0.0]])
    with pytest.raises(RuntimeError, match="input 1"):
        vjp(lambda a, b: (a * a).sum(), (x, unused), strict=True)


def test_vjp_of_an_output_off_the_graph_is_zero_unless_strict():
    x = t64([1.0, 2.0])
    _, product = vjp(lambda a: t64([3.0]), x, t64([1.0]))
    assert_close(product, [0.0, 0.0])
    with pytest.raises(RuntimeError, match="output 0"):
        vjp(lambda a: t64([3.0]), x, t64([1.0]), strict=True)


def test_vjp_with_create_graph_is_differentiable():
    x = t64([0.5, -1.5], requires_grad=True)
    out, product = vjp(lambda a: a ** 3, x, t64([1.0, 1.0]), create_graph=True)
    assert_close(product, 3 * x.numpy() ** 2)
    assert out.requires_grad and product.requires_grad
    product.sum().backward()
    assert_close(x.grad, 6 * x.numpy())


def test_vjp_works_under_no_grad():
    with gt.no_grad():
        _, product = vjp(lambda a: (a * a).sum(), t64([2.0]))
    assert_close(product, [4.0])


def test_functional_checks_its_arguments():
    with pytest.raises(TypeError, match="inputs"):
        vjp(lambda a: a, [1.0, 2.0])
    with pytest.raises(TypeError, match="int64"):
        jacobian(lambda a: a * 2, gt.tensor([1, 2]))
    with pytest.raises(TypeError, match="output of func"):
        jvp(lambda a: a.numpy(), t64([1.0]))


# --- jvp ---------------------------------------------------------------------------------------------


def test_jvp_of_a_matmul_is_the_matrix_times_v():
    x, v = t64([1.0, 2.0, -1.0]), t64([0.5, -2.0, 1.0])
    out, product = jvp(lambda x: t64(A) @ x, x, v)
    assert_close(out, A @ x.numpy())
    assert_close(product, A @ v.numpy())
    assert product.shape == (2,) and not product.requires_grad


def test_jvp_against_finite_differences():
    v = t64(RNG.standard_normal((2, 2)))
    _, product = jvp(nonlinear, t64(X22), v)
    numeric = np.tensordot(numeric_jacobian(on_arrays(nonlinear), X22), v.numpy(), axes=2)
    assert_close(product, numeric, rtol=1e-6, atol=1e-8)


def test_jvp_with_tuple_inputs_and_outputs():
    x, y = t64([1.0, 2.0]), t64([3.0, -1.0])
    vx, vy = t64([1.0, 0.5]), t64([-1.0, 2.0])
    (prod, square), (dprod, dsquare) = jvp(lambda a, b: (a * b, a * a), (x, y), (vx, vy))
    assert_close(prod, x.numpy() * y.numpy())
    assert_close(dprod, vx.numpy() * y.numpy() + x.numpy() * vy.numpy())
    assert_close(dsquare, 2 * x.numpy() * vx.numpy())


def test_jvp_single_input_tuple_output_and_default_v():
    (a, b), (da, db) = jvp(lambda x: (x * x, gt.sin(x)), t64(0.5))
    assert_close(a, 0.25)
    assert_close(da, 1.0)
    assert_close(db, np.cos(0.5))


def test_jvp_of_an_output_independent_of_the_inputs_is_zero_unless_strict():
    fn = lambda a: (a * 2.0, t64([1.0, 1.0, 1.0]))  # noqa: E731
    _, (d_used, d_const) = jvp(fn, t64([1.0]), t64([1.0]))
    assert_close(d_used, [2.0])
    assert_close(d_const, [0.0, 0.0, 0.0])
    with pytest.raises(RuntimeError, match="output 1"):
        jvp(fn, t64([1.0]), t64([1.0]), strict=True)


def test_jvp_ignores_an_unused_input_unless_strict():
    x, unused = t64([1.0, 2.0]), t64([3.0])
    _, product = jvp(lambda a, b: a * 2.0, (x, unused), (t64([1.0, -1.0]), t64([5.0])))
    assert_close(product, [2.0, -2.0])
    with pytest.raises(RuntimeError, match="input 1"):
        jvp(lambda a, b: a * 2.0, (x, unused), (t64([1.0, -1.0]), t64([5.0])), strict=True)


def test_jvp_with_create_graph_is_differentiable():
    x = t64([0.5, -1.5], requires_grad=True)
    _, product = jvp(lambda a: a ** 3, x, t64([1.0, 2.0]), create_graph=True)
    assert_close(product, 3 * x.numpy() ** 2 * [1.0, 2.0])
    product.sum().backward()
    assert_close(x.grad, 6 * x.numpy() * [1.0, 2.0])


# --- hvp and vhp ---------------------------------------------------------------------------------------


def cubic(x):
    return (x ** 3).sum()


def mixed(x, y):
    """sum(x^2 y): H_xx = diag(2y), H_xy = H_yx = diag(2x), H_yy = 0."""
    return (x * x * y).sum()


@pytest.mark.parametrize("product_fn", [hvp, vhp], ids=["hvp", "vhp"])
def test_hessian_vector_products_of_a_sum_of_cubes(product_fn):
    x, v = t64([1.0, -2.0, 0.5]), t64([1.0, 3.0, -1.0])
    out, product = product_fn(cubic, x, v)
    assert_close(out, 1.0 - 8.0 + 0.125)
    assert_close(product, 6 * x.numpy() * v.numpy())
    assert product.shape == (3,) and not product.requires_grad


@pytest.mark.parametrize("product_fn", [hvp, vhp], ids=["hvp", "vhp"])
def test_hessian_vector_products_default_v_for_a_single_element_input(product_fn):
    out, product = product_fn(lambda a: gt.sin(a).sum(), t64([0.5]))
    assert_close(out, np.sin(0.5))
    assert_close(product, [-np.sin(0.5)])


@pytest.mark.parametrize("product_fn", [hvp, vhp], ids=["hvp", "vhp"])
def test_hessian_vector_products_with_tuple_inputs(product_fn):
    x, y = t64([1.0, 2.0]), t64([-1.0, 0.5])
    vx, vy = t64([0.5, 1.0]), t64([2.0, -1.0])
    _, (px, py) = product_fn(mixed, (x, y), (vx, vy))
    xs, ys = x.numpy(), y.numpy()
    assert_close(px, 2 * ys * vx.numpy() + 2 * xs * vy.numpy())
    assert_close(py, 2 * xs * vx.numpy())


@pytest.mark.parametrize("product_fn", [hvp, vhp], ids=["hvp", "vhp"])
def test_hessian_vector_products_against_finite_differences_of_the_gradient(product_fn):
    fn = lambda x: nonlinear(x).sum()  # noqa: E731
    v = t64(RNG.standard_normal((2, 2)))

    def gradient(a):
        return vjp(fn, t64(a))[1].numpy()

    _, product = product_fn(fn, t64(X22), v)
    assert_close(product, np.tensordot(numeric_jacobian(gradient, X22), v.numpy(), axes=2), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("product_fn", [hvp, vhp], ids=["hvp", "vhp"])
def test_hessian_vector_products_need_a_single_element_output(product_fn):
    x, v = t64([1.0, 2.0]), t64([1.0, 1.0])
    with pytest.raises(RuntimeError, match=r"single-element.*\(2,\)"):
        product_fn(lambda a: a * a, x, v)
    with pytest.raises(RuntimeError, match="tuple"):
        product_fn(lambda a: (a.sum(), a.sum()), x, v)


@pytest.mark.parametrize("product_fn", [hvp, vhp], ids=["hvp", "vhp"])
def test_hessian_vector_products_with_create_graph_are_differentiable(product_fn):
    x, v = t64([1.0, -2.0], requires_grad=True), t64([1.0, 3.0])
    _, product = product_fn(cubic, x, v, create_graph=True)
    product.sum().backward()  # d/dx sum(6 x v) = 6 v
    assert_close(x.grad, 6 * v.numpy())


def test_hessian_vector_products_of_a_linear_function_are_zero_unless_strict():
    linear = lambda x: (x * 2.0).sum()  # noqa: E731
    x, v = t64([1.0, 2.0]), t64([1.0, 1.0])
    assert_close(hvp(linear, x, v)[1], [0.0, 0.0])
    assert_close(vhp(linear, x, v)[1], [0.0, 0.0])
    with pytest.raises(RuntimeError, match="input 0"):
        vhp(linear, x, v, strict=True)


# --- jacobian ---------------------------------------------------------------------------------------------


STRATEGIES = ["reverse-mode", "forward-mode"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jacobian_of_a_matmul_is_the_matrix(strategy):
    jac = jacobian(lambda x: t64(A) @ x, t64([1.0, 2.0, 3.0]), strategy=strategy)
    assert_close(jac, A)
    assert not jac.requires_grad


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jacobian_of_an_elementwise_cube_is_diagonal(strategy):
    x = t64([1.0, -2.0, 0.5])
    assert_close(jacobian(lambda a: a ** 3, x, strategy=strategy), np.diag(3 * x.numpy() ** 2))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jacobian_against_finite_differences_with_2d_input(strategy):
    jac = jacobian(nonlinear, t64(X22), strategy=strategy)
    assert jac.shape == (3, 2, 2)
    assert_close(jac, numeric_jacobian(on_arrays(nonlinear), X22), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jacobian_structure_for_tuple_inputs_and_outputs(strategy):
    x, y = t64([1.0, 2.0]), t64(np.array([[3.0, -1.0, 0.5]]))

    def fn(a, b):
        return a.sum() * b, a * a

    ((d0_dx, d0_dy), (d1_dx, d1_dy)) = jacobian(fn, (x, y), strategy=strategy)
    assert (d0_dx.shape, d0_dy.shape, d1_dx.shape, d1_dy.shape) == ((1, 3, 2), (1, 3, 1, 3), (2, 2), (2, 1, 3))
    assert_close(d0_dx, np.repeat(y.numpy()[..., None], 2, axis=-1))
    assert_close(d0_dy, 3.0 * np.eye(3).reshape(1, 3, 1, 3))
    assert_close(d1_dx, np.diag(2 * x.numpy()))
    assert_close(d1_dy, np.zeros((2, 1, 3)))

    single_in = jacobian(lambda a: (a * 2.0, a.sum()), x, strategy=strategy)
    assert isinstance(single_in, tuple) and len(single_in) == 2
    assert_close(single_in[0], 2 * np.eye(2))
    assert_close(single_in[1], [1.0, 1.0])

    single_out = jacobian(lambda a, b: a * b, (x, t64([4.0, 5.0])), strategy=strategy)
    assert isinstance(single_out, tuple) and len(single_out) == 2
    assert_close(single_out[0], np.diag([4.0, 5.0]))
    assert_close(single_out[1], np.diag(x.numpy()))


def test_jacobian_vectorize_gives_the_same_result():
    x = t64(X22)
    assert_close(jacobian(nonlinear, x, vectorize=True), jacobian(nonlinear, x).numpy())


def test_jacobian_of_size_zero_tensors():
    assert jacobian(lambda a: a * 2.0, t64(np.zeros(0))).shape == (0, 0)
    empty_out = jacobian(lambda a: a.sum() * t64(np.zeros(0)), t64([1.0, 2.0, 3.0]))
    assert empty_out.shape == (0, 3) and empty_out.dtype == np.float64


def test_jacobian_of_an_unused_input_is_zero_unless_strict():
    x, unused = t64([1.0, 2.0]), t64([3.0])
    _, d_unused = jacobian(lambda a, b: a * 2.0, (x, unused))
    assert_close(d_unused, np.zeros((2, 1)))
    with pytest.raises(RuntimeError, match="input 1"):
        jacobian(lambda a, b: a * 2.0, (x, unused), strict=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_jacobian_with_create_graph_is_differentiable(strategy):
    x = t64([0.5, -1.0, 2.0], requires_grad=True)
    jac = jacobian(lambda a: a ** 3, x, create_graph=True, strategy=strategy)
    assert jac.requires_grad
    jac.sum().backward()  # sum of diag(3 x^2)
    assert_close(x.grad, 6 * x.numpy())


def test_jacobian_rejects_an_unknown_strategy():
    with pytest.raises(ValueError, match="strategy"):
        jacobian(lambda a: a, t64([1.0]), strategy="sideways")


# --- hessian ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hessian_of_a_sum_of_cubes_is_diag_6x(strategy):
    x = t64([1.0, -2.0, 0.5])
    hess = hessian(cubic, x, outer_jacobian_strategy=strategy)
    assert_close(hess, np.diag(6 * x.numpy()))
    assert not hess.requires_grad


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hessian_with_tuple_inputs(strategy):
    x, y = t64([1.0, 2.0]), t64([-1.0, 0.5])
    (hxx, hxy), (hyx, hyy) = hessian(mixed, (x, y), outer_jacobian_strategy=strategy)
    assert_close(hxx, np.diag(2 * y.numpy()))
    assert_close(hxy, np.diag(2 * x.numpy()))
    assert_close(hyx, np.diag(2 * x.numpy()))
    assert_close(hyy, np.zeros((2, 2)))


def test_hessian_of_a_2d_input_against_finite_differences_of_the_gradient():
    fn = lambda x: nonlinear(x).sum()  # noqa: E731
    hess = hessian(fn, t64(X22))
    assert hess.shape == (2, 2, 2, 2)
    numeric = numeric_jacobian(lambda a: vjp(fn, t64(a))[1].numpy(), X22)
    assert_close(hess, numeric, rtol=1e-6, atol=1e-8)
    flat = hess.numpy().reshape(4, 4)
    np.testing.assert_allclose(flat, flat.T, rtol=1e-12, atol=1e-12)


def test_hessian_with_create_graph_is_differentiable():
    x = t64([1.0, -2.0], requires_grad=True)
    hess = hessian(cubic, x, create_graph=True)
    assert hess.requires_grad
    hess.sum().backward()  # sum of diag(6x)
    assert_close(x.grad, [6.0, 6.0])


def test_hessian_needs_a_single_element_output():
    with pytest.raises(RuntimeError, match=r"single-element.*\(2,\)"):
        hessian(lambda a: a * a, t64([1.0, 2.0]))


def test_hessian_of_a_linear_function_is_zero_unless_strict():
    linear = lambda x: (x * 3.0).sum()  # noqa: E731
    assert_close(hessian(linear, t64([1.0, 2.0])), np.zeros((2, 2)))
    with pytest.raises(RuntimeError, match="input 0"):
        hessian(linear, t64([1.0, 2.0]), strict=True)


# --- PyTorch as an oracle (skipped without torch) ------------------------------------------------------------


def test_functional_matches_torch():
    torch = pytest.importorskip("torch")
    tf = torch.autograd.functional
    w = RNG.standard_normal((3, 2))
    x = RNG.standard_normal((2, 3))
    v_out = RNG.standard_normal((2, 2))
    v_in = RNG.standard_normal((2, 3))

    def ours(a):
        return gt.tanh(a @ t64(w)) * gt.exp(a).sum()

    def theirs(a):
        return torch.tanh(a @ torch.from_numpy(w)) * torch.exp(a).sum()

    tx = torch.from_numpy(x)
    assert_close(jacobian(ours, t64(x)), tf.jacobian(theirs, tx).numpy(), rtol=1e-10)
    assert_close(vjp(ours, t64(x), t64(v_out))[1], tf.vjp(theirs, tx, torch.from_numpy(v_out))[1].numpy())
    assert_close(jvp(ours, t64(x), t64(v_in))[1], tf.jvp(theirs, tx, torch.from_numpy(v_in))[1].numpy())
    scalar_ours = lambda a: ours(a).sum()  # noqa: E731
    scalar_theirs = lambda a: theirs(a).sum()  # noqa: E731
    assert_close(hessian(scalar_ours, t64(x)), tf.hessian(scalar_theirs, tx).numpy(), rtol=1e-10)
    assert_close(hvp(scalar_ours, t64(x), t64(v_in))[1], tf.hvp(scalar_theirs, tx, torch.from_numpy(v_in))[1].numpy())
    assert_close(vhp(scalar_ours, t64(x), t64(v_in))[1], tf.vhp(scalar_theirs, tx, torch.from_numpy(v_in))[1].numpy())
