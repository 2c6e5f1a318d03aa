import numpy as np
import pytest

import gradtensor as gt
from gradtensor.autograd import gradcheck, gradgradcheck
from gradtensor.autograd.graph import saved_nbytes


def _noisy_layers(weights, keep=0.7):
    """tanh layers with a dropout-like random mask: recomputation must replay the same mask."""

    def layer(w):
        def run(h):
            h = (h @ w).tanh()
            mask = gt.rand(*h.shape, dtype=h.dtype) < keep
            return h * mask / keep

        return run

    return [layer(w) for w in weights]


def _grads(tensors):
    return [t.grad.numpy().copy() for t in tensors]


def _clear(tensors):
    for t in tensors:
        t.grad = None


@pytest.fixture
def net():
    gt.manual_seed(0)
    weights = [gt.randn(8, 8, dtype=gt.float64, requires_grad=True) for _ in range(6)]
    x = gt.randn(4, 8, dtype=gt.float64, requires_grad=True)
    return weights, x


@pytest.mark.parametrize("segments", [1, 2, 3, 6])
def test_checkpoint_sequential_gradients_are_bitwise_identical(net, segments):
    weights, x = net
    layers = _noisy_layers(weights)
    gt.manual_seed(1)
    h = x
    for f in layers:
        h = f(h)
    plain_loss = (h * h).sum()
    plain_loss.backward()
    plain = _grads(weights + [x])
    _clear(weights + [x])

    gt.manual_seed(1)
    loss = (gt.checkpoint_sequential(layers, segments, x) ** 2).sum()
    loss.backward()
    assert loss.item() == plain_loss.item()
    for got, want in zip(_grads(weights + [x]), plain):
        np.testing.assert_array_equal(got, want)


def test_checkpoint_keeps_fewer_saved_arrays(net):
    weights, x = net
    layers = _noisy_layers(weights)
    h = x
    for f in layers:
        h = f(h)
    plain = saved_nbytes(h)
    checked = saved_nbytes(gt.checkpoint_sequential(layers, 2, x))
    # plain keeps every layer's activations; checkpointed only the segment inputs (here: x, a leaf, and one boundary)
    assert plain >= 6 * 4 * 8 * 8
    assert checked == 4 * 8 * 8


def test_parameters_read_inside_get_gradients_when_input_needs_none():
    w = gt.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=gt.float64, requires_grad=True)
    x = gt.tensor([[1.0, -1.0]], dtype=gt.float64)
    out = gt.checkpoint(lambda t: (t @ w).sin(), x)
    assert out.grad_fn is not None
    out.sum().backward()
    expected = x.numpy().T @ np.cos(x.numpy() @ w.numpy())
    np.testing.assert_allclose(w.grad.numpy(), expected)


def test_region_with_nothing_to_differentiate_is_not_recorded():
    x = gt.tensor([1.0, 2.0])
    out = gt.checkpoint(lambda t: t * 2, x)
    assert out.grad_fn is None and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), [2.0, 4.0])


def test_keyword_arguments_and_tuple_outputs():
    x = gt.tensor([0.5, 1.5], dtype=gt.float64, requires_grad=True)

    def fn(t, scale=1.0):
        return t * scale, (t * t).sum()

    a, b = gt.checkpoint(fn, x, scale=3.0)
    (a.sum() + b).backward()
    np.testing.assert_allclose(x.grad.numpy(), 3.0 + 2 * x.numpy())


def test_only_one_output_used():
    x = gt.tensor([0.5, 1.5], dtype=gt.float64, requires_grad=True)
    a, _ = gt.checkpoint(lambda t: (t.exp(), t * 5), x)
    a.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x.numpy()))


def test_nested_checkpoints():
    x = gt.tensor([0.3, -0.7], dtype=gt.float64, requires_grad=True)
    inner = lambda t: (t * t).sin()  # noqa: E731
    outer = lambda t: gt.checkpoint(inner, t).exp()  # noqa: E731
    gt.checkpoint(outer, x).sum().backward()
    xv = x.numpy()
    expected = np.exp(np.sin(xv * xv)) * np.cos(xv * xv) * 2 * xv
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_create_graph_through_checkpoint():
    x = gt.tensor([0.5, -1.0, 2.0], dtype=gt.float64, requires_grad=True)
    y = gt.checkpoint(lambda t: (t**3).sum(), x)
    (g,) = gt.autograd.grad(y, x, create_graph=True)
    (gg,) = gt.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), 6 * x.numpy())


def test_gradcheck_and_gradgradcheck_through_checkpoint():
    w = gt.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=gt.float64, requires_grad=True)
    x = gt.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=gt.float64, requires_grad=True)
    fn = lambda a, b: gt.checkpoint(lambda u, v: (u @ v).tanh() * u, a, b)  # noqa: E731
    assert gradcheck(fn, (x, w))
    assert gradgradcheck(fn, (x, w))


def test_second_backward_through_checkpoint_raises():
    x = gt.tensor([1.0, 2.0], dtype=gt.float64, requires_grad=True)
    y = gt.checkpoint(lambda t: (t * t).sum(), x)
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_non_tensor_result_is_a_clear_error():
    x = gt.tensor([1.0], requires_grad=True)
    with pytest.raises(TypeError, match="checkpoint"):
        gt.checkpoint(lambda t: 3, x)


def test_under_no_grad_checkpoint_is_a_plain_call():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    with gt.no_grad():
        out = gt.checkpoint(lambda t: t * 3, x)
    assert out.grad_fn is None
    np.testing.assert_array_equal(out.numpy(), [3.0, 6.0])
