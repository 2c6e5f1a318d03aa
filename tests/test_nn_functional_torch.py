"""gt.nn.functional against PyTorch's torch.nn.functional (CPU, float64): values and gradients.

Skipped when torch is not installed.
"""
import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _inputs(arrays):
    ours = [gt.tensor(a, requires_grad=a.dtype.kind == "f") if isinstance(a, np.ndarray) else a for a in arrays]
    theirs = [
        torch.tensor(a, requires_grad=a.dtype.kind == "f") if isinstance(a, np.ndarray) else a for a in arrays
    ]
    return ours, theirs


def assert_matches_torch(ours_fn, torch_fn, *arrays, seed=0, atol=1e-10, rtol=1e-7):
    """Same outputs, and the same input gradients for one random upstream gradient."""
    ours, theirs = _inputs(arrays)
    out, expected = ours_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), atol=atol, rtol=rtol)
    assert out.shape == tuple(expected.shape)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(gt.tensor(upstream))
    expected.backward(torch.tensor(upstream))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(b, torch.Tensor) and b.requires_grad:
            assert a.grad is not None, f"input {i}: no gradient"
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=atol, rtol=rtol, err_msg=f"input {i}")


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, shape)


# --- activations --------------------------------------------------------------------------

ACTIVATIONS = [
    ("relu", F.relu, TF.relu),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    ("elu", lambda x: F.elu(x, alpha=1.5), lambda x: TF.elu(x, alpha=1.5)),
    ("gelu", F.gelu, TF.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    ("silu", F.silu, TF.silu),
    ("softplus", F.softplus, TF.softplus),
    ("softplus_beta", lambda x: F.softplus(x, beta=3, threshold=2), lambda x: TF.softplus(x, beta=3, threshold=2)),
    ("sigmoid", F.sigmoid, torch.sigmoid),
    ("tanh", F.tanh, torch.tanh),
    ("softmax", lambda x: F.softmax(x, axis=0), lambda x: TF.softmax(x, dim=0)),
    ("log_softmax", F.log_softmax, lambda x: TF.log_softmax(x, dim=-1)),
]


@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations(name, ours, theirs):
    x = rand(3, 4)
    x[0, :3] = [0.0, 30.0, -30.0]  # a kink and saturated values
    assert_matches_torch(ours, theirs, x)


# --- linear, conv, pooling ----------------------------------------------------------------


def test_linear():
    assert_matches_torch(F.linear, TF.linear, rand(2, 3, 4), rand(5, 4, seed=1), rand(5, seed=2))
    assert_matches_torch(F.linear, TF.linear, rand(4), rand(5, 4, seed=1))


CONV2D = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(padding=(2, 0), stride=(1, 2)),
    dict(dilation=2, padding=2),
    dict(groups=2),
    dict(groups=2, stride=2, padding=1, dilation=(1, 2)),
    dict(padding="same"),
    dict(padding="same", dilation=2),
    dict(padding="valid"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # PyTorch's note on its own copy
@pytest.mark.parametrize("kw", CONV2D, ids=str)
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3)])
def test_conv2d(kw, kernel):
    groups = kw.get("groups", 1)
    x, w, b = rand(2, 4, 7, 6), rand(6, 4 // groups, *kernel, seed=1), rand(6, seed=2)
    assert_matches_torch(lambda x, w, b: F.conv2d(x, w, b, **kw), lambda x, w, b: TF.conv2d(x, w, b, **kw), x, w, b)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(dilation=2, groups=3), dict(padding="same")],
                         ids=str)
def test_conv1d(kw):
    groups = kw.get("groups", 1)
    x, w = rand(2, 3, 9), rand(6, 3 // groups, 4, seed=1)
    assert_matches_torch(lambda x, w: F.conv1d(x, w, **kw), lambda x, w: TF.conv1d(x, w, **kw), x, w)


def test_conv2d_unbatched():
    assert_matches_torch(F.conv2d, TF.conv2d, rand(2, 5, 5), rand(3, 2, 2, 2, seed=1))


POOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
]


@pytest.mark.parametrize("kw", POOL + [dict(kernel_size=2, dilation=2), dict(kernel_size=3, dilation=2, padding=1)],
                         ids=str)
def test_max_pool2d(kw):
    assert_matches_torch(lambda x: F.max_pool2d(x, **kw), lambda x: TF.max_pool2d(x, **kw), rand(2, 3, 7, 6))


def test_max_pool2d_indices_and_ties():
    x = np.zeros((1, 2, 4, 4))  # all ties: the first element of each window wins, as PyTorch
    x[0, 1] = rand(4, 4)
    out, idx = F.max_pool2d(gt.tensor(x), 3, stride=1, padding=1, return_indices=True)
    t_out, t_idx = TF.max_pool2d(torch.tensor(x), 3, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), t_idx.numpy())
    assert idx.dtype == gt.int64
    assert_matches_torch(lambda x: F.max_pool2d(x, 2), lambda x: TF.max_pool2d(x, 2), x)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("kw", POOL, ids=str)
def test_avg_pool2d(kw, include_pad):
    assert_matches_torch(lambda x: F.avg_pool2d(x, count_include_pad=include_pad, **kw),
            lambda x: TF.avg_pool2d(x, count_include_pad=include_pad, **kw), rand(2, 3, 7, 6))


def test_avg_pool2d_divisor_override():
    assert_matches_torch(lambda x: F.avg_pool2d(x, 2, divisor_override=3), lambda x: TF.avg_pool2d(x, 2, divisor_override=3),
            rand(1, 2, 4, 5))


@pytest.mark.parametrize("size", [1, (2, 3), (3, None), (5, 4), 7])
def test_adaptive_avg_pool2d(size):
    assert_matches_torch(lambda x: F.adaptive_avg_pool2d(x, size), lambda x: TF.adaptive_avg_pool2d(x, size), rand(2, 3, 7, 5))


# --- normalization ------------------------------------------------------------------------


def test_layer_norm():
    assert_matches_torch(lambda x, w, b: F.layer_norm(x, (3, 4), w, b), lambda x, w, b: TF.layer_norm(x, (3, 4), w, b),
            rand(2, 3, 4), rand(3, 4, seed=1), rand(3, 4, seed=2))
    assert_matches_torch(lambda x: F.layer_norm(x, 4, eps=1e-3), lambda x: TF.layer_norm(x, (4,), eps=1e-3), rand(5, 4))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(shape, training):
    stats = [rand(3, seed=3), rand(3, seed=4, low=0.5)]
    ours_stats = [gt.tensor(s) for s in stats]
    theirs_stats = [torch.tensor(s) for s in stats]
    assert_matches_torch(lambda x, w, b: F.batch_norm(x, *ours_stats, w, b, training=training, momentum=0.3),
            lambda x, w, b: TF.batch_norm(x, *theirs_stats, w, b, training=training, momentum=0.3),
            rand(*shape), rand(3, seed=1), rand(3, seed=2))
    for a, b in zip(ours_stats, theirs_stats):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


# --- embedding ----------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(), dict(padding_idx=1), dict(scale_grad_by_freq=True),
                                dict(padding_idx=-1, scale_grad_by_freq=True)], ids=str)
def test_embedding(kw):
    idx = np.array([[1, 3, 1], [0, 4, 1]])
    assert_matches_torch(lambda w: F.embedding(gt.tensor(idx), w, **kw), lambda w: TF.embedding(torch.tensor(idx), w, **kw),
            rand(5, 3))


def test_embedding_max_norm():
    idx = np.array([0, 2, 2])
    w = rand(4, 3) * 3
    ours, theirs = gt.tensor(w), torch.tensor(w)
    out = F.embedding(gt.tensor(idx), ours, max_norm=1.0)
    expected = TF.embedding(torch.tensor(idx), theirs, max_norm=1.0)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


def test_one_hot():
    idx = np.array([[0, 3], [2, 2]])
    np.testing.assert_array_equal(F.one_hot(gt.tensor(idx)).numpy(), TF.one_hot(torch.tensor(idx)).numpy())
    np.testing.assert_array_equal(F.one_hot(gt.tensor(idx), 6).numpy(), TF.one_hot(torch.tensor(idx), 6).numpy())


# --- attention ----------------------------------------------------------------------------


def _sdpa(**kw):
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kw),
            lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, **kw))


@pytest.mark.parametrize("kw", [dict(), dict(is_causal=True), dict(scale=0.3)], ids=str)
def test_attention(kw):
    assert_matches_torch(*_sdpa(**kw), rand(2, 3, 4, 5), rand(2, 3, 6, 5, seed=1), rand(2, 3, 6, 2, seed=2))


def test_attention_masks():
    bool_mask = rand(4, 6, seed=3) > 0
    bool_mask[1] = False  # a query that attends nothing: zeros (PyTorch's safe softmax)
    float_mask = rand(3, 4, 6, seed=4)
    q, k, v = rand(2, 3, 4, 5), rand(2, 3, 6, 5, seed=1), rand(2, 3, 6, 2, seed=2)
    ours, theirs = _sdpa(attn_mask=gt.tensor(bool_mask))
    assert_matches_torch(ours, lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(bool_mask)),
            q, k, v)
    assert_matches_torch(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
            lambda q, k, v, m: TF.scaled_dot_product_attention(q, k, v, attn_mask=m), q, k, v, float_mask)


def test_attention_gqa():
    assert_matches_torch(*_sdpa(enable_gqa=True), rand(1, 4, 3, 2), rand(1, 2, 5, 2, seed=1), rand(1, 2, 5, 3, seed=2))


# --- losses -------------------------------------------------------------------------------

REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
def test_regression_losses(name, reduction):
    ours, theirs = getattr(F, name), getattr(TF, name)
    x, y, w = rand(3, 4), rand(3, 4, seed=1), rand(3, 4, seed=2, low=0.1)
    assert_matches_torch(lambda x, y: ours(x, y, reduction=reduction), lambda x, y: theirs(x, y, reduction=reduction), x, y)
    assert_matches_torch(lambda x, y, w: ours(x, y, reduction=reduction, weight=w),
            lambda x, y, w: theirs(x, y, reduction=reduction, weight=w), x, y, w)


def test_huber_delta():
    assert_matches_torch(lambda x, y: F.huber_loss(x, y, delta=0.5), lambda x, y: TF.huber_loss(x, y, delta=0.5),
            rand(3, 4), rand(3, 4, seed=1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(reduction):
    p, y, w = rand(3, 4, low=0.05, high=0.95), rand(3, 4, seed=1, low=0, high=1), rand(4, seed=2, low=0.1)
    assert_matches_torch(lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
            lambda p, y: TF.binary_cross_entropy(p, y, reduction=reduction), p, y)
    assert_matches_torch(lambda p: F.binary_cross_entropy(p, gt.tensor(y), gt.tensor(w), reduction=reduction),
            lambda p: TF.binary_cross_entropy(p, torch.tensor(y), torch.tensor(w), reduction=reduction), p)


def test_binary_cross_entropy_at_zero_and_one():
    p, y = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0])
    assert_matches_torch(lambda p: F.binary_cross_entropy(p, gt.tensor(y)),
            lambda p: TF.binary_cross_entropy(p, torch.tensor(y)), p, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits(reduction):
    x, y = rand(3, 4) * 5, rand(3, 4, seed=1, low=0, high=1)
    w, pw = rand(3, 4, seed=2, low=0.1), rand(4, seed=3, low=0.1)
    assert_matches_torch(lambda x, y: F.binary_cross_entropy_with_logits(x, y, gt.tensor(w), reduction=reduction,
                                                            pos_weight=gt.tensor(pw)),
            lambda x, y: TF.binary_cross_entropy_with_logits(x, y, torch.tensor(w), reduction=reduction,
                                                             pos_weight=torch.tensor(pw)),
            x, y)
    assert_matches_torch(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
            lambda x, y: TF.binary_cross_entropy_with_logits(x, y, reduction=reduction), x, y)


CE_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.2),
    dict(ignore_index=2),
    dict(weight=True),
    dict(weight=True, ignore_index=2, label_smoothing=0.1),
    dict(weight=True, ignore_index=2, label_smoothing=0.1, reduction="none"),
    dict(weight=True, label_smoothing=0.3, reduction="sum"),
]


def _with_weight(kw, lib):
    kw = dict(kw)
    if kw.pop("weight", False):
        kw["weight"] = lib.tensor(rand(5, seed=9, low=0.2))
    return kw


@pytest.mark.parametrize("kw", CE_CASES, ids=str)
@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 3), (5,)], ids=str)
def test_cross_entropy_indices(kw, shape):
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    target = np.random.default_rng(1).integers(0, 5, target_shape)
    ours_kw, theirs_kw = _with_weight(kw, gt), _with_weight(kw, torch)
    assert_matches_torch(lambda x: F.cross_entropy(x, gt.tensor(target), **ours_kw),
            lambda x: TF.cross_entropy(x, torch.tensor(target), **theirs_kw), rand(*shape))
    if "label_smoothing" not in kw:
        assert_matches_torch(lambda x: F.nll_loss(x, gt.tensor(target), **ours_kw),
                lambda x: TF.nll_loss(x, torch.tensor(target), **theirs_kw), rand(*shape))


@pytest.mark.parametrize("kw", [dict(), dict(label_smoothing=0.2), dict(weight=True, reduction="sum"),
                                dict(weight=True, reduction="none"), dict(weight=True, label_smoothing=0.1)], ids=str)
@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 3)], ids=str)
def test_cross_entropy_probabilities(kw, shape):
    target = rand(*shape, seed=1, low=0, high=1)
    target = target / target.sum(axis=1, keepdims=True)
    assert_matches_torch(lambda x, t: F.cross_entropy(x, t, **_with_weight(kw, gt)),
            lambda x, t: TF.cross_entropy(x, t, **_with_weight(kw, torch)), rand(*shape), target)


@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.filterwarnings("ignore:reduction. 'mean':UserWarning")  # PyTorch's advice to use batchmean
def test_kl_div(reduction, log_target):
    x = np.log(rand(3, 4, low=0.1, high=1))
    t = rand(3, 4, seed=1, low=0.1, high=1)
    if log_target:
        t = np.log(t)
    assert_matches_torch(lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target),
            lambda x, t: TF.kl_div(x, t, reduction=reduction, log_target=log_target), x, t)


def test_kl_div_zero_target():
    """A zero target probability contributes nothing (0 log 0 = 0)."""
    x, t = np.log(rand(2, 3, low=0.1, high=1)), rand(2, 3, seed=1, low=0, high=1)
    t[0, 0] = 0.0
    assert_matches_torch(lambda x: F.kl_div(x, gt.tensor(t), reduction="sum"),
            lambda x: TF.kl_div(x, torch.tensor(t), reduction="sum"), x)
