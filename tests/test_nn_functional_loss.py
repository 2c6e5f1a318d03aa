"""Losses: values against NumPy formulas, first and second order gradients for every reduction,
known values (softmax + cross-entropy gradient, BCE on a 2-2-1 sigmoid net), stability with logits
of +-1e4, and argument errors."""
import math

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F
from opcheck import OpCase, check_op

REDUCTIONS = ["mean", "sum", "none"]


def np_reduce(loss, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction](loss)


def np_log_softmax(x, axis):
    top = x.max(axis=axis, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=axis, keepdims=True))


def np_cross_entropy(x, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """PyTorch's definition, written directly: weighted nll plus the smoothing term, weighted mean."""
    axis = 0 if x.ndim == 1 else 1
    classes = x.shape[axis]
    logp = np.moveaxis(np_log_softmax(x, axis), axis, -1)
    w = np.ones(classes) if weight is None else weight
    if target.dtype.kind == "f":
        q = np.moveaxis(target, axis, -1) * (1 - label_smoothing) + label_smoothing / classes
        loss = -(q * logp * w).sum(-1)
        return loss.sum() / loss.size if reduction == "mean" else np_reduce(loss, reduction)
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    nll = -np.take_along_axis(logp, t[..., None], -1)[..., 0] * w[t] * valid
    smooth = -(logp * w).sum(-1) * valid
    loss = (1 - label_smoothing) * nll + label_smoothing / classes * smooth
    return loss.sum() / (w[t] * valid).sum() if reduction == "mean" else np_reduce(loss, reduction)


# --- regression losses --------------------------------------------------------------------

REGRESSION = [
    ("mse_loss", F.mse_loss, lambda d: d * d),
    ("l1_loss", F.l1_loss, np.abs),
    ("huber_loss", F.huber_loss, lambda d: np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,fn,pointwise", REGRESSION, ids=[r[0] for r in REGRESSION])
def test_regression_loss(name, fn, pointwise, reduction):
    # input - target stays away from the kinks (0, and +-1 for huber): x avoids them, the target is tiny
    check_op(OpCase(f"{name}({reduction})", lambda x, y: fn(x, y * 0.01, reduction=reduction),
                    lambda x, y: np_reduce(pointwise(x - y * 0.01), reduction), [(2, 3), (2, 3)],
                    away_from=[-1.0, 0.0, 1.0]))
    check_op(OpCase(f"{name}({reduction}) 0-d", lambda x, y: fn(x, y, reduction=reduction),
                    lambda x, y: np_reduce(pointwise(x - y), reduction), [(), ()], seed=3))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_regression_losses(reduction):
    x, y, w = np.array([1.0, -2.0, 0.5]), np.array([0.0, 0.0, 3.0]), np.array([1.0, 2.0, 0.5])
    for fn, pointwise, mean_by_weight in [(F.mse_loss, np.square(x - y), True), (F.l1_loss, np.abs(x - y), True),
                                          (F.huber_loss, np.array([0.5, 1.5, 2.0]), False)]:
        out = fn(gt.tensor(x), gt.tensor(y), reduction=reduction, weight=gt.tensor(w)).numpy()
        weighted = pointwise * w
        expected = weighted.sum() / w.sum() if reduction == "mean" and mean_by_weight else np_reduce(weighted, reduction)
        np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_huber_delta():
    out = F.huber_loss(gt.tensor([0.1, 2.0]), gt.tensor([0.0, 0.0]), reduction="none", delta=0.5)
    np.testing.assert_allclose(out.numpy(), [0.005, 0.5 * (2.0 - 0.25)], rtol=1e-6)


def test_broadcast_target_warns():
    with pytest.warns(UserWarning, match=r"mse_loss: target shape \(3,\) differs from input shape \(2, 3\)"):
        out = F.mse_loss(gt.zeros(2, 3), gt.ones(3))
    assert out.item() == 1.0


def test_legacy_size_average_and_reduce():
    x, y = gt.tensor([1.0, 3.0]), gt.tensor([0.0, 0.0])
    assert F.mse_loss(x, y, size_average=False).item() == 10.0
    assert F.l1_loss(x, y, reduce=False).shape == (2,)
    assert F.mse_loss(x, y, size_average=True, reduce=True).item() == 5.0


# --- binary cross-entropy -----------------------------------------------------------------


def np_bce(p, y):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(reduction):
    check_op(OpCase(f"bce({reduction})", lambda p, y: F.binary_cross_entropy(p, y, reduction=reduction),
                    lambda p, y: np_reduce(np_bce(p, y), reduction), [(2, 3), (2, 3)], domain=(0.05, 0.95)))
    check_op(OpCase(f"bce({reduction}, weight)", lambda p, y, w: F.binary_cross_entropy(p, y, w, reduction=reduction),
                    lambda p, y, w: np_reduce(np_bce(p, y) * w, reduction), [(2, 3), (2, 3), (3,)],
                    domain=(0.05, 0.95)))


def test_binary_cross_entropy_clamps_logs():
    p = gt.tensor([0.0, 1.0, 0.0, 1.0], dtype=gt.float64, requires_grad=True)
    y = gt.tensor([1.0, 0.0, 0.0, 1.0], dtype=gt.float64)
    loss = F.binary_cross_entropy(p, y, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [100.0, 100.0, 0.0, 0.0])
    loss.sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), [-1e12, 1e12, 0.0, 0.0])  # PyTorch's eps-clamped formula


def test_binary_cross_entropy_rejects_non_probabilities():
    with pytest.raises(ValueError, match="binary_cross_entropy: input values must be probabilities"):
        F.binary_cross_entropy(gt.tensor([1.5]), gt.tensor([1.0]))
    with pytest.raises(ValueError, match=r"binary_cross_entropy: target of shape \(2,\) must have the input's shape"):
        F.binary_cross_entropy(gt.tensor([0.5]), gt.tensor([1.0, 0.0]))


def np_bce_logits(x, y, pos_weight=1.0):
    p = 1 / (1 + np.exp(-x))
    return -(pos_weight * y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits(reduction):
    check_op(OpCase(f"bce_logits({reduction})",
                    lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
                    lambda x, y: np_reduce(np_bce_logits(x, y), reduction), [(2, 3), (2, 3)], domain=(-3, 3)))
    check_op(OpCase(f"bce_logits({reduction}, weight, pos_weight)",
                    lambda x, y, w, pw: F.binary_cross_entropy_with_logits(x, y, w, reduction=reduction, pos_weight=pw),
                    lambda x, y, w, pw: np_reduce(np_bce_logits(x, y, pw) * w, reduction),
                    [(2, 3), (2, 3), (2, 3), (3,)], domain=(0.1, 2.0)))


def test_bce_on_two_two_one_sigmoid_net():
    """x=[0.5, 0.3], y=1 through a 2-2-1 sigmoid net: y_hat ~ 0.677, loss ~ 0.39, both BCE forms agree."""
    x, y = gt.tensor([0.5, 0.3]), gt.tensor([1.0])
    w1 = gt.tensor([[0.1, 0.3], [0.2, 0.4]], requires_grad=True)
    b1 = gt.tensor([0.1, 0.2], requires_grad=True)
    w2 = gt.tensor([[0.5, 0.6]], requires_grad=True)
    b2 = gt.tensor([0.1], requires_grad=True)
    hidden = F.sigmoid(F.linear(x, w1, b1))
    logit = F.linear(hidden, w2, b2)
    y_hat = F.sigmoid(logit)
    loss = F.binary_cross_entropy(y_hat, y)
    h = 1 / (1 + np.exp(-np.array([0.24, 0.42])))
    expected_y_hat = 1 / (1 + np.exp(-(0.5 * h[0] + 0.6 * h[1] + 0.1)))
    np.testing.assert_allclose(y_hat.item(), expected_y_hat, rtol=1e-6)
    assert abs(y_hat.item() - 0.677) < 1e-3 and abs(loss.item() - 0.3895) < 1e-3
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(logit, y).item(), loss.item(), rtol=1e-6)
    loss.backward()
    delta = expected_y_hat - 1.0  # dL/dlogit of BCE after a sigmoid
    np.testing.assert_allclose(b2.grad.numpy(), [delta], rtol=1e-5)
    np.testing.assert_allclose(w2.grad.numpy(), [delta * h], rtol=1e-5)
    np.testing.assert_allclose(b1.grad.numpy(), delta * np.array([0.5, 0.6]) * h * (1 - h), rtol=1e-5)


@pytest.mark.parametrize("dtype", [gt.float32, gt.float64])
def test_bce_with_logits_stable_at_extreme_logits(dtype):
    x = gt.tensor([1e4, -1e4, 1e4, -1e4], dtype=dtype, requires_grad=True)
    y = gt.tensor([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.0, 0.0, 1e4, 1e4])
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 1.0, -1.0])


# --- cross-entropy, nll -------------------------------------------------------------------

CE_OPTIONS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.2),
    dict(ignore_index=1),
    dict(weight=np.array([0.5, 2.0, 1.0])),
    dict(weight=np.array([0.5, 2.0, 1.0]), ignore_index=1, label_smoothing=0.3),
    dict(weight=np.array([0.5, 2.0, 1.0]), label_smoothing=0.1, reduction="none"),
]
TARGETS = {(4, 3): np.array([0, 2, 1, 2]), (2, 3, 2): np.array([[1, 0], [2, 1]]), (3,): np.array(2)}


def _gt_kwargs(kw):
    return {k: gt.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}


@pytest.mark.parametrize("kw", CE_OPTIONS, ids=str)
@pytest.mark.parametrize("shape", list(TARGETS), ids=str)
def test_cross_entropy_class_indices(shape, kw):
    target = TARGETS[shape]
    check_op(OpCase(f"cross_entropy({kw})", lambda x: F.cross_entropy(x, gt.tensor(target), **_gt_kwargs(kw)),
                    lambda x: np_cross_entropy(x, target, **kw), [shape]))


@pytest.mark.parametrize("kw", [dict(), dict(label_smoothing=0.2, reduction="sum"),
                                dict(weight=np.array([0.5, 2.0, 1.0]), reduction="none")], ids=str)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)], ids=str)
def test_cross_entropy_probabilities(shape, kw):
    """Gradients flow to the logits and to the target distribution."""
    check_op(OpCase(f"cross_entropy(probs, {kw})", lambda x, t: F.cross_entropy(x, t, **_gt_kwargs(kw)),
                    lambda x, t: np_cross_entropy(x, t, **kw), [shape, shape], domain=(0.05, 1.0)))


@pytest.mark.parametrize("kw", [dict(), dict(reduction="none"), dict(ignore_index=0, reduction="sum"),
                                dict(weight=np.array([0.5, 2.0, 1.0]))], ids=str)
@pytest.mark.parametrize("shape", list(TARGETS), ids=str)
def test_nll_loss(shape, kw):
    target = TARGETS[shape]

    def ref(x):  # nll of log-probabilities: cross_entropy of logits that are already normalised
        axis = 0 if x.ndim == 1 else 1
        return np_cross_entropy(np_log_softmax(x, axis), target, **kw)

    check_op(OpCase(f"nll_loss({kw})", lambda x: F.nll_loss(F.log_softmax(x, axis=0 if x.ndim == 1 else 1),
                                                            gt.tensor(target), **_gt_kwargs(kw)), ref, [shape]))


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_weighted_mean_divides_by_a_weight_sum_below_one(loss):
    """'mean' with class weights divides by sum(w[y]) also when it is below 1 (it was taken as 1)."""
    x = np.array([[0.3, -1.2], [0.1, 0.4]])
    y, w = np.array([0, 1]), np.array([0.25, 0.5])
    inputs = gt.tensor(x, requires_grad=True)
    out = getattr(F, loss)(inputs, gt.tensor(y), gt.tensor(w))
    logp = np_log_softmax(x, 1) if loss == "cross_entropy" else x
    picked = -logp[[0, 1], y] * w[y]
    np.testing.assert_allclose(out.item(), picked.sum() / 0.75, rtol=1e-12)
    out.backward()
    expected = np.zeros_like(x)
    expected[[0, 1], y] = -w[y] / 0.75
    if loss == "cross_entropy":
        expected += np.exp(logp) * (w[y] / 0.75)[:, None]
    np.testing.assert_allclose(inputs.grad.numpy(), expected, rtol=1e-12)


def test_nll_loss_ignores_minus_infinity_in_other_classes():
    """A masked class's -inf log-probability does not reach the loss (0 * -inf would be NaN)."""
    x = gt.tensor([[0.0, -math.inf], [-math.inf, -0.5]], requires_grad=True)
    out = F.nll_loss(x, gt.tensor([0, 1]))
    assert out.item() == 0.25
    out.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[-0.5, 0.0], [0.0, -0.5]])


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot():
    rng = np.random.default_rng(0)
    logits = gt.tensor(rng.standard_normal((5, 4)), requires_grad=True)
    labels = np.array([0, 3, 1, 1, 2])
    F.cross_entropy(logits, gt.tensor(labels), reduction="sum").backward()
    probs = np.exp(np_log_softmax(logits.numpy(), 1))
    np.testing.assert_allclose(logits.grad.numpy(), probs - np.eye(4)[labels], rtol=1e-12, atol=1e-15)
    logits.grad = None
    F.cross_entropy(logits, gt.tensor(labels)).backward()  # mean: divided by the batch size
    np.testing.assert_allclose(logits.grad.numpy(), (probs - np.eye(4)[labels]) / 5, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [gt.float32, gt.float64])
def test_cross_entropy_stable_at_extreme_logits(dtype):
    logits = gt.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]], dtype=dtype, requires_grad=True)
    loss = F.cross_entropy(logits, gt.tensor([1, 1]), reduction="none")
    np.testing.assert_allclose(loss.numpy(), [2e4, 0.0])
    loss.sum().backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    assert logits.grad.dtype == dtype


def test_cross_entropy_with_minus_inf_logit_ignored_by_the_target():
    logits = gt.tensor([[0.0, -math.inf, 0.0]], dtype=gt.float64, requires_grad=True)
    loss = F.cross_entropy(logits, gt.tensor([0]))
    np.testing.assert_allclose(loss.item(), math.log(2))
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), [[-0.5, 0.0, 0.5]])


def test_cross_entropy_all_ignored_gives_nan_loss_and_zero_gradient():
    logits = gt.tensor([[1.0, 2.0], [0.5, 0.0]], requires_grad=True)
    loss = F.cross_entropy(logits, gt.tensor([-100, -100]))
    assert math.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(logits.grad.numpy(), 0.0)


def test_cross_entropy_float32_stays_float32():
    logits = gt.randn(3, 4, requires_grad=True)
    loss = F.cross_entropy(logits, gt.tensor([0, 1, 3]), weight=gt.tensor([1.0, 2.0, 1.0, 1.0]), label_smoothing=0.1)
    assert loss.dtype == gt.float32
    loss.backward()
    assert logits.grad.dtype == gt.float32


@pytest.mark.parametrize("call,error,match", [
    (lambda: F.cross_entropy(gt.zeros(2, 3), gt.tensor([0, 3])), IndexError, r"cross_entropy: target values must be in \[0, 3\)"),
    (lambda: F.cross_entropy(gt.zeros(2, 3), gt.tensor([0, 1, 2])), ValueError,
     r"cross_entropy: target of shape \(3,\) does not match input of shape \(2, 3\)"),
    (lambda: F.cross_entropy(gt.zeros(2, 3), gt.zeros(2, 4)), ValueError, "cross_entropy: probability target"),
    (lambda: F.cross_entropy(gt.zeros(2, 3), gt.tensor([0, 1]), weight=gt.ones(2)), ValueError,
     r"cross_entropy: weight must have shape \(3,\)"),
    (lambda: F.cross_entropy(gt.zeros(2, 3), gt.tensor([0, 1]), reduction="avg"), ValueError, "cross_entropy: reduction"),
    (lambda: F.nll_loss(gt.zeros(2, 3), gt.zeros(2)), TypeError, "nll_loss: target must hold integer class indices"),
    (lambda: F.mse_loss(gt.zeros(2, 3), gt.zeros(4)), ValueError, r"mse_loss: input of shape \(2, 3\) and target"),
    (lambda: F.kl_div(gt.zeros(2), gt.zeros(2), reduction="batch"), ValueError, "kl_div: reduction"),
])
def test_loss_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- kl_div -------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    def ref(x, t):
        pointwise = np.exp(t) * (t - x) if log_target else t * (np.log(t) - x)
        return pointwise.sum() / x.shape[0] if reduction == "batchmean" else np_reduce(pointwise, reduction)

    domain = (-2.0, -0.1) if log_target else (0.1, 1.0)
    check_op(OpCase(f"kl_div({reduction}, {log_target})",
                    lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target), ref, [(3, 2), (3, 2)],
                    domain=domain))


def test_kl_div_zero_target_contributes_nothing():
    x = gt.tensor([-1.0, -2.0], dtype=gt.float64, requires_grad=True)
    t = gt.tensor([0.0, 0.5], dtype=gt.float64, requires_grad=True)
    loss = F.kl_div(x, t, reduction="sum")
    np.testing.assert_allclose(loss.item(), 0.5 * (math.log(0.5) + 2.0))
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, -0.5])
    assert np.isfinite(t.grad.numpy()).all()
