"""linear, dropout, embedding, one_hot, layer_norm and batch_norm: values, first and second order
gradients, running statistics, seeded dropout masks, and argument errors."""
import math

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor.autograd import gradcheck, gradgradcheck
from opcheck import OpCase, check_op


def np_linear(x, w, b=None):
    return x @ w.T + (0 if b is None else b)


def np_normalize(x, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


# --- linear -------------------------------------------------------------------------------


@pytest.mark.parametrize("shapes", [[(3, 4), (2, 4), (2,)], [(2, 1, 3), (2, 3), (2,)], [(3,), (2, 3)], [(0, 3), (2, 3)]],
                         ids=str)
def test_linear(shapes):
    check_op(OpCase("linear", F.linear, np_linear, shapes))


def test_linear_accepts_parameters():
    weight, bias = gt.nn.Parameter(gt.ones(2, 3)), gt.nn.Parameter(gt.zeros(2))
    out = F.linear(gt.tensor([[1.0, 2.0, 3.0]]), weight, bias)
    np.testing.assert_array_equal(out.numpy(), [[6.0, 6.0]])
    out.sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), [[1.0, 2.0, 3.0]] * 2)
    np.testing.assert_array_equal(bias.grad.numpy(), [1.0, 1.0])


def test_linear_errors():
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 3\) does not match weight of shape \(4, 5\)"):
        F.linear(gt.zeros(2, 3), gt.zeros(4, 5))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(4,\)"):
        F.linear(gt.zeros(2, 5), gt.zeros(4, 5), gt.zeros(5))
    with pytest.raises(TypeError, match="linear: input, weight and bias must have one dtype, got float64, float32"):
        F.linear(gt.zeros(2, 5, dtype=gt.float64), gt.zeros(4, 5))
    with pytest.raises(ValueError, match="linear: weight must be 2-D"):
        F.linear(gt.zeros(2, 5), gt.zeros(5))


# --- dropout ------------------------------------------------------------------------------


def test_dropout_scales_kept_elements_and_zeroes_the_rest():
    x = gt.ones(200, 50, requires_grad=True)
    out = F.dropout(x, p=0.3)
    values = out.numpy()
    kept = values != 0
    np.testing.assert_allclose(values[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.02  # 10,000 draws: the standard error is 0.0046
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), values)  # the gradient uses the same mask and scale


def test_dropout_reproducible_with_manual_seed():
    x = gt.ones(4, 5)
    gt.manual_seed(7)
    first = F.dropout(x, 0.5).numpy()
    second = F.dropout(x, 0.5).numpy()
    gt.manual_seed(7)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), second)
    assert not np.array_equal(first, second)


def test_dropout_identity_and_extremes():
    x = gt.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), 0.0)
    assert F.dropout(x, 0.5).dtype == gt.float32
    with pytest.raises(ValueError, match=r"dropout: probability p must be in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5)


def test_dropout_second_order():
    x = gt.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)

    def fn(t):
        gt.manual_seed(0)  # the same mask on every call
        return F.dropout(t * t, 0.4)

    assert (fn(x).numpy() == 0).any()  # some elements are dropped
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def test_dropout_inplace():
    x = gt.ones(3, 4)
    gt.manual_seed(1)
    expected = F.dropout(gt.ones(3, 4), 0.5).numpy()
    gt.manual_seed(1)
    assert F.dropout(x, 0.5, inplace=True) is x
    np.testing.assert_array_equal(x.numpy(), expected)


# --- embedding and one_hot -----------------------------------------------------------------


def test_embedding_values_and_scatter_add_gradient():
    weight = gt.tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    idx = gt.tensor([[0, 2, 0], [3, 0, 2]])
    out = F.embedding(idx, weight)
    np.testing.assert_array_equal(out.numpy(), np.arange(12.0).reshape(4, 3)[idx.numpy()])
    out.sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), [[3.0] * 3, [0.0] * 3, [2.0] * 3, [1.0] * 3])


def test_embedding_padding_idx_and_scale_grad_by_freq():
    weight = gt.tensor(np.ones((4, 2)), requires_grad=True)
    idx = gt.tensor([1, 1, 2, 3, 3, 3])
    F.embedding(idx, weight, padding_idx=3).sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), [[0, 0], [2, 2], [1, 1], [0, 0]])
    weight.grad = None
    F.embedding(idx, weight, scale_grad_by_freq=True).sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), [[0, 0], [1, 1], [1, 1], [1, 1]])


def test_embedding_gradcheck():
    idx = gt.tensor([[1, 0, 1]])
    check_op(OpCase("embedding", lambda w: F.embedding(idx, w) ** 2, lambda a: a[idx.numpy()] ** 2, [(3, 2)]))


def test_embedding_max_norm_renormalizes_rows_in_place():
    weight = gt.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    out = F.embedding(gt.tensor([0, 1, 0]), weight, max_norm=1.0)  # a repeated row is scaled once
    np.testing.assert_allclose(out.numpy(), [[0.6, 0.8], [0.3, 0.4], [0.6, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(weight.numpy(), [[0.6, 0.8], [0.3, 0.4], [6.0, 8.0]], rtol=1e-6)  # row 2 unused


@pytest.mark.parametrize("norm_type,norm", [(1.0, 7.0), (math.inf, 4.0), (3.0, 91.0 ** (1 / 3))])
def test_embedding_max_norm_takes_any_norm_type(norm_type, norm):
    weight = gt.tensor([[3.0, -4.0]], dtype=gt.float64)
    out = F.embedding(gt.tensor([0]), weight, max_norm=1.0, norm_type=norm_type)
    np.testing.assert_allclose(out.numpy(), [[3.0 / norm, -4.0 / norm]], rtol=1e-6)


def test_embedding_errors():
    weight = gt.zeros(4, 2)
    with pytest.raises(IndexError, match=r"embedding: indices must be in \[0, 4\)"):
        F.embedding(gt.tensor([0, 4]), weight)
    with pytest.raises(TypeError, match="embedding: expected integer indices"):
        F.embedding(gt.tensor([0.0, 1.0]), weight)
    with pytest.raises(ValueError, match="embedding: weight must be 2-D"):
        F.embedding(gt.tensor([0]), gt.zeros(4))


def test_one_hot():
    out = F.one_hot(gt.tensor([[0, 2], [1, 2]]))
    assert out.dtype == gt.int64 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.numpy(), [[[1, 0, 0], [0, 0, 1]], [[0, 1, 0], [0, 0, 1]]])
    np.testing.assert_array_equal(F.one_hot(gt.tensor([1]), num_classes=4).numpy(), [[0, 1, 0, 0]])
    with pytest.raises(ValueError, match=r"one_hot: class values must be in \[0, 2\)"):
        F.one_hot(gt.tensor([2]), num_classes=2)
    with pytest.raises(TypeError, match="one_hot"):
        F.one_hot(gt.tensor([1.0]))


# --- layer_norm ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape,normalized", [((2, 3), (3,)), ((2, 2, 3), (2, 3)), ((4,), 4), ((2, 1), (1,))], ids=str)
def test_layer_norm(shape, normalized):
    ns = (normalized,) if isinstance(normalized, int) else normalized
    axes = tuple(range(len(shape) - len(ns), len(shape)))
    check_op(OpCase(f"layer_norm{ns}", lambda x, w, b: F.layer_norm(x, normalized, w, b),
                    lambda x, w, b: np_normalize(x, axes, 1e-5) * w + b, [shape, ns, ns]))
    check_op(OpCase(f"layer_norm{ns} no affine", lambda x: F.layer_norm(x, normalized, eps=0.1),
                    lambda x: np_normalize(x, axes, 0.1), [shape]))


def test_layer_norm_errors():
    with pytest.raises(ValueError, match=r"layer_norm: input of shape \(2, 3\) does not end with normalized_shape \(2,\)"):
        F.layer_norm(gt.zeros(2, 3), (2,))
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(3,\)"):
        F.layer_norm(gt.zeros(2, 3), (3,), gt.zeros(2))


# --- batch_norm ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 2), (2, 2, 3), (2, 2, 2, 2)], ids=str)
def test_batch_norm_training_grad(shape):
    axes = (0,) + tuple(range(2, len(shape)))
    bshape = (1, 2) + (1,) * (len(shape) - 2)
    check_op(OpCase("batch_norm(training)", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                    lambda x, w, b: np_normalize(x, axes, 1e-5) * w.reshape(bshape) + b.reshape(bshape),
                    [shape, (2,), (2,)]))


def test_batch_norm_eval_grad():
    mean, var = gt.tensor([0.5, -1.0], dtype=gt.float64), gt.tensor([2.0, 0.5], dtype=gt.float64)
    check_op(OpCase("batch_norm(eval)", lambda x, w, b: F.batch_norm(x, mean, var, w, b, eps=0.0),
                    lambda x, w, b: (x - mean.numpy()[:, None]) / np.sqrt(var.numpy()[:, None]) * w[:, None]
                    + b[:, None], [(3, 2, 2), (2,), (2,)]))


def test_batch_norm_updates_running_stats_in_place():
    x = np.random.default_rng(0).standard_normal((4, 3, 2))
    running_mean, running_var = gt.zeros(3, dtype=gt.float64), gt.ones(3, dtype=gt.float64)
    mean_before = running_mean
    F.batch_norm(gt.tensor(x), running_mean, running_var, training=True, momentum=0.2)
    assert running_mean is mean_before
    np.testing.assert_allclose(running_mean.numpy(), 0.2 * x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(running_var.numpy(), 0.8 + 0.2 * x.var(axis=(0, 2), ddof=1), rtol=1e-12)
    # eval mode reads them and leaves them alone
    out = F.batch_norm(gt.tensor(x), running_mean, running_var, training=False)
    expected = (x - running_mean.numpy()[:, None]) / np.sqrt(running_var.numpy()[:, None] + 1e-5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(running_mean.numpy(), 0.2 * x.mean(axis=(0, 2)), rtol=1e-12)


def test_batch_norm_running_stats_keep_float32():
    running_mean, running_var = gt.zeros(2), gt.ones(2)
    F.batch_norm(gt.randn(5, 2), running_mean, running_var, training=True)
    assert running_mean.dtype == gt.float32 and running_var.dtype == gt.float32


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="batch_norm: expected more than 1 value per channel"):
        F.batch_norm(gt.zeros(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean must have shape \(3,\)"):
        F.batch_norm(gt.zeros(2, 3), gt.zeros(2), gt.ones(3))
    with pytest.raises(ValueError, match="batch_norm: running_mean and running_var are required"):
        F.batch_norm(gt.zeros(2, 3), None, None, training=False)
