"""Property tests: for random broadcast-compatible shapes (up to 4 dims, sides 0..3), the gradients of
add, sub, mul, div, maximum and where have their inputs' shapes and equal NumPy's reduced gradients."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import gradtensor as gt

SETTINGS = settings(max_examples=50, deadline=None)


def _shapes(num_shapes):
    return mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=0, max_dims=4, min_side=0, max_side=3)


def reduce_to(full, shape):
    """The adjoint of np.broadcast_to: each input element gets the sum of the output elements it fed.

    Written with bincount over broadcast indices, independently of gradtensor's sum_to.
    """
    size = int(np.prod(shape))
    index = np.broadcast_to(np.arange(size).reshape(shape), full.shape)
    return np.bincount(index.ravel(), weights=full.ravel(), minlength=size).reshape(shape)


def _away_from_zero(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)


# name: (gradtensor op, NumPy forward, NumPy partial derivatives (d/da, d/db) at the broadcast shape)
BINARY = {
    "add": (gt.add, np.add, lambda a, b: (np.ones_like(a * b), np.ones_like(a * b))),
    "sub": (gt.sub, np.subtract, lambda a, b: (np.ones_like(a * b), -np.ones_like(a * b))),
    "mul": (gt.mul, np.multiply, lambda a, b: (b + 0 * a, a + 0 * b)),
    "div": (gt.div, np.divide, lambda a, b: (1 / b + 0 * a, -a / b**2)),
    "maximum": (gt.maximum, np.maximum,
                lambda a, b: ((a > b) + 0.5 * (a == b) + 0 * b, (b > a) + 0.5 * (a == b) + 0 * a)),
}


def _check_grads(tensors, arrays, partials, g):
    for t, a, d in zip(tensors, arrays, partials):
        assert t.grad.shape == a.shape and t.grad.dtype == gt.float64
        np.testing.assert_allclose(t.grad.numpy(), reduce_to(g * d, a.shape), rtol=1e-12, atol=1e-12)


@st.composite
def binary_problem(draw, op_names=tuple(BINARY)):
    name = draw(st.sampled_from(op_names))
    shapes = draw(_shapes(2))
    seed = draw(st.integers(0, 2**32 - 1))
    return name, shapes, seed


@SETTINGS
@given(binary_problem())
def test_binary_gradients_reduce_over_broadcast_axes(problem):
    name, (input_shapes, out_shape), seed = problem
    op, forward, partials = BINARY[name]
    rng = np.random.default_rng(seed)
    if name == "maximum":  # few distinct values: many ties, where the gradient splits evenly
        a, b = (rng.integers(-2, 3, size=s).astype(np.float64) for s in input_shapes)
    else:
        a = rng.uniform(-2.0, 2.0, size=input_shapes[0])
        b = _away_from_zero(rng, input_shapes[1]) if name == "div" else rng.uniform(-2.0, 2.0, size=input_shapes[1])
    g = rng.standard_normal(out_shape)

    ta, tb = gt.tensor(a, requires_grad=True), gt.tensor(b, requires_grad=True)
    out = op(ta, tb)
    assert out.shape == out_shape
    np.testing.assert_allclose(out.numpy(), forward(a, b), rtol=1e-15)
    out.backward(gt.tensor(g))
    _check_grads((ta, tb), (a, b), partials(a, b), g)


@SETTINGS
@given(_shapes(3), st.integers(0, 2**32 - 1))
def test_where_gradients_reduce_over_broadcast_axes(shapes, seed):
    (cond_shape, a_shape, b_shape), out_shape = shapes
    rng = np.random.default_rng(seed)
    cond = rng.random(cond_shape) < 0.5
    a, b = rng.uniform(-2.0, 2.0, size=a_shape), rng.uniform(-2.0, 2.0, size=b_shape)
    g = rng.standard_normal(out_shape)

    ta, tb = gt.tensor(a, requires_grad=True), gt.tensor(b, requires_grad=True)
    out = gt.where(gt.tensor(cond), ta, tb)
    assert out.shape == out_shape
    np.testing.assert_array_equal(out.numpy(), np.where(cond, a, b))
    out.backward(gt.tensor(g))
    full = np.broadcast_to(cond, out_shape)
    _check_grads((ta, tb), (a, b), (full * 1.0, ~full * 1.0), g)


@SETTINGS
@given(binary_problem(("add", "mul", "maximum")))
def test_float32_gradients_keep_shape_and_dtype(problem):
    name, (input_shapes, out_shape), seed = problem
    rng = np.random.default_rng(seed)
    ta, tb = (gt.tensor(rng.uniform(-2.0, 2.0, size=s).astype(np.float32), requires_grad=True) for s in input_shapes)
    out = BINARY[name][0](ta, tb)
    assert out.dtype == gt.float32 and out.shape == out_shape
    out.backward(gt.ones_like(out))
    for t in (ta, tb):
        assert t.grad.shape == t.shape and t.grad.dtype == gt.float32
