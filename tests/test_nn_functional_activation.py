"""nn.functional activations, softmax and log_softmax: values against NumPy, first and second order
gradients, stability at +-1e4, in-place variants."""
import math

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor.autograd import gradcheck
from opcheck import OpCase, check_op

_erf = np.vectorize(math.erf)


def np_softmax(a, axis=-1):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_gelu_tanh(a):
    return 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))


def np_softplus(a, beta=1.0, threshold=20.0):
    return np.where(a * beta > threshold, a, np.log1p(np.exp(a * beta)) / beta)


SHAPES = [(2, 3), (4,), (), (1, 3, 1)]

ELEMENTWISE = [
    ("relu", F.relu, lambda a: np.maximum(a, 0), [0.0]),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda a: np.where(a > 0, a, 0.1 * a), [0.0]),
    ("elu", lambda x: F.elu(x, alpha=0.7), lambda a: np.where(a > 0, a, 0.7 * np.expm1(a)), [0.0]),
    ("gelu", F.gelu, lambda a: 0.5 * a * (1 + _erf(a / math.sqrt(2))), None),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), np_gelu_tanh, None),
    ("silu", F.silu, lambda a: a / (1 + np.exp(-a)), None),
    ("softplus", F.softplus, np_softplus, None),
    ("softplus_beta", lambda x: F.softplus(x, beta=2.0, threshold=1.0),
     lambda a: np_softplus(a, 2.0, 1.0), [0.5]),  # the switch to x at beta x = threshold
    ("sigmoid", F.sigmoid, lambda a: 1 / (1 + np.exp(-a)), None),
    ("tanh", F.tanh, np.tanh, None),
]

CASES = [
    OpCase(name, fn, ref, [shape], away_from=kinks)
    for name, fn, ref, kinks in ELEMENTWISE
    for shape in SHAPES
] + [
    OpCase(f"softmax(axis={axis})", lambda x, axis=axis: F.softmax(x, axis=axis),
           lambda a, axis=axis: np_softmax(a, axis), [shape])
    for shape, axis in [((2, 3), -1), ((2, 3), 0), ((2, 1, 3), 1), ((4,), 0)]
] + [
    OpCase(f"log_softmax(axis={axis})", lambda x, axis=axis: F.log_softmax(x, axis=axis),
           lambda a, axis=axis: np.log(np_softmax(a, axis)), [shape])
    for shape, axis in [((2, 3), -1), ((3, 2), 0), ((2, 1, 3), 2), ((4,), -1)]
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_activation(case):
    check_op(case)


@pytest.mark.parametrize("fn", [F.relu, F.gelu, F.silu, F.softplus, F.elu, F.softmax, F.log_softmax])
def test_empty_input(fn):
    x = gt.zeros(0, 3, requires_grad=True)
    out = fn(x)
    assert out.shape == (0, 3)
    out.sum().backward()
    assert x.grad.shape == (0, 3)


def test_softmax_of_0d_is_one():
    x = gt.tensor(3.0, requires_grad=True)
    assert F.softmax(x).item() == 1.0
    assert F.log_softmax(x).item() == 0.0


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_stable_at_large_inputs(fn):
    x = gt.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=gt.float64, requires_grad=True)
    out = fn(x)
    expected = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    if fn is F.log_softmax:
        expected = np.array([[0.0, -2e4, -1e4], [-math.log(3)] * 3])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-300)
    (out * gt.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=gt.float64)).sum().backward()
    assert np.isfinite(x.grad.numpy()).all()


def test_softmax_float32_at_large_inputs():
    x = gt.tensor([[1e4, 0.0, -1e4]], requires_grad=True)
    out = F.log_softmax(x)
    assert out.dtype == gt.float32
    np.testing.assert_allclose(out.numpy(), [[0.0, -1e4, -2e4]])
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[-2.0, 1.0, 1.0]])


def test_softmax_dtype_argument():
    x = gt.tensor([1.0, 2.0])
    assert F.softmax(x, dtype=gt.float64).dtype == gt.float64
    assert F.softmax(x).dtype == gt.float32


def test_softmax_bad_axis():
    with pytest.raises(ValueError, match="softmax"):
        F.softmax(gt.zeros(2, 3), axis=2)


def test_softplus_large_inputs_finite():
    x = gt.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=gt.float64, requires_grad=True)
    out = F.softplus(x)
    np.testing.assert_allclose(out.numpy(), [0.0, math.log1p(math.exp(-50)), math.log(2), 50.0, 1e4], rtol=1e-12)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 1 / (1 + math.exp(50)), 0.5, 1.0, 1.0], rtol=1e-12, atol=1e-300)


def test_elu_gradient_finite_for_large_inputs():
    x = gt.tensor([1000.0, -1000.0, 0.0], dtype=gt.float64, requires_grad=True)
    F.elu(x, alpha=2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 0.0, 2.0])  # slope alpha at 0, as PyTorch


def test_leaky_relu_slope_at_zero():
    x = gt.tensor([0.0, 2.0, -2.0], dtype=gt.float64, requires_grad=True)
    F.leaky_relu(x, negative_slope=0.25).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.25, 1.0, 0.25])


def test_gelu_second_order_through_dedicated_function():
    x = gt.tensor([-1.5, 0.3, 2.0], dtype=gt.float64, requires_grad=True)
    for approximate in ("none", "tanh"):
        assert gradcheck(lambda t: gt.autograd.grad(F.gelu(t, approximate=approximate).sum(), t,
                                                    create_graph=True)[0], (x,))


def test_gelu_bad_approximate():
    with pytest.raises(ValueError, match="gelu"):
        F.gelu(gt.zeros(2), approximate="fast")


@pytest.mark.parametrize("fn", [F.relu, F.leaky_relu, F.elu, F.silu])
def test_inplace_writes_into_input(fn):
    data = np.array([-1.0, 0.5, 2.0], dtype=np.float32)
    x = gt.tensor(data)
    expected = fn(gt.tensor(data)).numpy()
    out = fn(x, inplace=True)
    assert out is x
    np.testing.assert_allclose(x.numpy(), expected)


INPLACE_ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": lambda x, inplace: F.leaky_relu(x, 0.1, inplace),
    "elu": F.elu,
    "silu": F.silu,
    "dropout": lambda x, inplace: F.dropout(x, 0.5, True, inplace),
}


@pytest.mark.parametrize("name", list(INPLACE_ACTIVATIONS))
def test_inplace_in_a_graph_continues_the_history(name):
    """y = act(w * x, inplace=True): y is the product tensor itself, now the activation's output, and
    the gradients are those of the out-of-place form (the same dropout mask: same seed)."""
    fn = INPLACE_ACTIVATIONS[name]
    data = np.array([[-1.5, -0.2, 0.0, 0.3], [2.0, -3.0, 0.7, -0.01]])
    grads = []
    for inplace in (False, True):
        gt.manual_seed(0)
        w = gt.tensor(data, requires_grad=True)
        h = w * 2.0
        y = fn(h, inplace=inplace)
        assert (y is h) == inplace
        (y * gt.tensor(data + 1)).sum().backward()
        grads.append((y.numpy(), w.grad.numpy()))
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-12)
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-12)
    assert np.any(grads[1][1] != 0)


def test_inplace_module_trains_like_the_out_of_place_one():
    gt.manual_seed(0)
    twins = [gt.nn.Sequential(gt.nn.Linear(3, 4), gt.nn.ReLU(inplace=inplace), gt.nn.Linear(4, 1))
             for inplace in (False, True)]
    twins[1].load_state_dict(twins[0].state_dict())
    x = gt.randn(5, 3)
    for model in twins:
        model(x).sum().backward()
    for p, q in zip(twins[0].parameters(), twins[1].parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
    assert repr(twins[1][1]) == "ReLU(inplace=True)"


def test_inplace_refusals_and_stale_saved_values():
    x = gt.tensor([1.0, -1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"relu\(inplace=True\): the tensor \(shape \(2,\)\) is a leaf"):
        F.relu(x, inplace=True)
    base = x * 2
    view = base.reshape(2, 1)
    with pytest.raises(RuntimeError, match=r"silu\(inplace=True\): .* shares its memory"):
        F.silu(view, inplace=True)
    # a node that saved the old values (the product saved h) raises at backward, as in PyTorch
    h = x * 3
    product = h * h
    F.relu(h, inplace=True)
    with pytest.raises(RuntimeError, match="modified in place"):
        (product + h).sum().backward()
    # without a graph in the way, inplace writes as before (also into a leaf, under no_grad)
    with gt.no_grad():
        assert F.relu(x, inplace=True) is x
    np.testing.assert_array_equal(x.numpy(), [1.0, 0.0])


def test_inplace_moves_retain_grad_to_the_new_value_and_keeps_the_dtype():
    x = gt.tensor(np.array([-1.0, 2.0]), requires_grad=True)
    h = x * 1
    h.retain_grad()
    F.leaky_relu(h, 0.1, inplace=True)
    h.retain_grad()  # a second call keeps one .grad, not two
    (h * gt.tensor([3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(h.grad.numpy(), [3.0, 4.0])  # the gradient of the activation's output
    np.testing.assert_allclose(x.grad.numpy(), [0.3, 4.0], rtol=1e-15)
    with gt.amp.autocast("cpu", dtype=gt.float16):
        h = gt.nn.Linear(3, 3)(gt.ones(2, 3))
        assert h.dtype == gt.float16
        assert F.elu(h, inplace=True).dtype == gt.float16  # autocast computes expm1 in float32
    h.astype(gt.float32).sum().backward()


def test_inplace_matches_torch():
    torch = pytest.importorskip("torch")
    data = np.array([-1.0, 0.5, 2.0, -0.25])
    ours = gt.tensor(data, requires_grad=True)
    theirs = torch.tensor(data, requires_grad=True)
    y = F.silu(ours * 1.5, inplace=True)
    (y * y).sum().backward()
    z = torch.nn.functional.silu(theirs * 1.5, inplace=True)
    (z * z).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)


def test_integer_inputs_become_float():
    out = F.gelu(gt.tensor([0, 1]))
    assert out.dtype == gt.float32
    np.testing.assert_allclose(out.numpy(), [0.0, 0.5 * (1 + math.erf(1 / math.sqrt(2)))], rtol=1e-6)
