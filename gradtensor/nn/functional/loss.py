"""Losses, each with reduction 'mean' | 'sum' | 'none' (and PyTorch's legacy size_average / reduce).

cross_entropy is one fused Function: the loss comes from log-sum-exp and the logits' gradient is
softmax(z) * sum(q) - q (softmax(z) - y for a one-hot or probability target) computed directly.
(N, C) or (C,) logits with class indices, no class weights and no label smoothing (the common case)
take the softmax cross-entropy kernel's Function instead: loss and gradient in one pass over the
logits, no dense target (the kernel on the GPU, its array reference elsewhere; see gradtensor.fused).
"""
import math
import warnings

from ... import backend, fused, fused_reference, ops
from ...autograd.function import Function
from ...autograd.grad_mode import state
from ...tensor import Tensor
from ._util import broadcast_shape, check_floating, check_reduction, check_tensor, legacy_reduction, reduce_loss
from .activation import log_softmax, stable_softplus
from ...ops._autocast import autocast_op


def _check_pair(name, input, target, same_shape):
    check_floating(input, name)
    check_tensor(target, name, "target")
    if input.shape == target.shape:
        return
    if same_shape:
        raise ValueError(f"{name}: target of shape {target.shape} must have the input's shape {input.shape}")
    if broadcast_shape(input.shape, target.shape) is None:
        raise ValueError(f"{name}: input of shape {input.shape} and target of shape {target.shape} cannot be broadcast")
    warnings.warn(
        f"{name}: target shape {target.shape} differs from input shape {input.shape}; they are broadcast, "
        "which is often a mistake",
        stacklevel=3,
    )


def _weighted(name, loss, weight, reduction, mean_over_weight):
    """Elementwise loss times weight (same shape as the input), reduced as PyTorch does for weighted losses."""
    if weight is None:
        return reduce_loss(loss, reduction)
    if weight.shape != loss.shape:
        raise ValueError(f"{name}: weight of shape {weight.shape} must have the input's shape {loss.shape}")
    weight = weight.astype(loss.dtype)
    loss = loss * weight
    if reduction == "mean" and mean_over_weight:
        return loss.sum() / weight.sum()
    return reduce_loss(loss, reduction)


@autocast_op("mse_loss")
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """(input - target)^2; a weighted 'mean' divides by weight.sum()."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, "mse_loss")
    _check_pair("mse_loss", input, target, same_shape=False)
    diff = input - target
    return _weighted("mse_loss", diff * diff, weight, reduction, mean_over_weight=True)


@autocast_op("l1_loss")
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """|input - target|; a weighted 'mean' divides by weight.sum()."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, "l1_loss")
    _check_pair("l1_loss", input, target, same_shape=False)
    return _weighted("l1_loss", ops.abs(input - target), weight, reduction, mean_over_weight=True)


@autocast_op("huber_loss")
def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, else delta (|d| - delta / 2); a weighted 'mean' averages the products."""
    check_reduction(reduction, "huber_loss")
    _check_pair("huber_loss", input, target, same_shape=False)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    diff = input - target
    size = ops.abs(diff)
    loss = ops.where(size < delta, 0.5 * diff * diff, delta * (size - 0.5 * delta))
    return _weighted("huber_loss", loss, weight, reduction, mean_over_weight=False)


# --- binary cross-entropy ------------------------------------------------------------------

_LOG_FLOOR = -100.0  # PyTorch clamps the logs, so p = 0 or 1 gives a finite loss
_BCE_EPS = 1e-12


class _BinaryCrossEntropy(Function):
    """-(y log p + (1 - y) log(1 - p)), logs clamped at -100; PyTorch's gradient formula."""

    @staticmethod
    def forward(ctx, p, y):
        ctx.save_for_backward(p, y)
        return -(y.data * _clamped_log(p).data + (1 - y.data) * _clamped_log(1 - p).data)

    @staticmethod
    def backward(ctx, g):
        p, y = ctx.saved_tensors
        need_p, need_y = ctx.needs_input_grad
        gp = gy = None
        if need_p:
            gp = g * (p - y) / ops.maximum(p * (1 - p), _BCE_EPS)
        if need_y:
            gy = g * (_clamped_log(1 - p) - _clamped_log(p))
        return gp, gy


def _clamped_log(t):
    """max(log(t), -100) for t in [0, 1], never evaluating log(0) (no warning, no NaN gradient)."""
    positive = t > 0
    return ops.where(positive, ops.maximum(ops.log(ops.where(positive, t, 1.0)), _LOG_FLOOR), _LOG_FLOOR)


@autocast_op("binary_cross_entropy")
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """BCE between probabilities input in [0, 1] and targets; weight broadcasts against them."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, "binary_cross_entropy")
    _check_pair("binary_cross_entropy", input, target, same_shape=True)
    if input.size and backend.host_check((input.data.min() < 0) | (input.data.max() > 1)):
        raise ValueError("binary_cross_entropy: input values must be probabilities in [0, 1]; for logits use "
                         "binary_cross_entropy_with_logits")
    loss = _BinaryCrossEntropy.apply(input, target.astype(input.dtype))
    if weight is not None:
        loss = loss * weight.astype(input.dtype)
    return reduce_loss(loss, reduction)


@autocast_op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """BCE of sigmoid(input), as (1 - y) x + (1 + (pos_weight - 1) y) softplus(-x): finite for any logit."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, "binary_cross_entropy_with_logits")
    _check_pair("binary_cross_entropy_with_logits", input, target, same_shape=True)
    target = target.astype(input.dtype)
    log_weight = 1 if pos_weight is None else 1 + (pos_weight.astype(input.dtype) - 1) * target
    loss = (1 - target) * input + log_weight * stable_softplus(-input)
    if weight is not None:
        loss = loss * weight.astype(input.dtype)
    return reduce_loss(loss, reduction)


# --- cross-entropy and nll ----------------------------------------------------------------


def _logits_grad(g, log_probs, q, axis):
    """d loss / d logits of -sum(q log_softmax(z)) for the loss gradient g (class axis restored)."""
    return g * (log_probs.exp() * q.sum(axis=axis, keepdims=True) - q)


class _SoftmaxCrossEntropy(Function):
    """Per-sample -sum_c q_c log_softmax(z)_c along axis, for a (weighted) target distribution q."""

    @staticmethod
    def forward(ctx, logits, q, axis):
        ctx.axis = axis
        ctx.save_for_backward(logits, q)
        log_probs, ctx.lse = fused_reference.log_softmax_and_lse(logits.data, axis)  # keep only the small lse
        mod = backend.xp(log_probs)
        # where q = 0 the log-probability does not count, even when it is -inf
        return -(q.data * mod.where(q.data == 0, 0, log_probs)).sum(axis=axis)

    @staticmethod
    def backward(ctx, g):
        logits, q = ctx.saved_tensors
        need_logits, need_q = ctx.needs_input_grad[:2]
        g = ops.expand_dims(g, ctx.axis)
        if state.grad_enabled:  # double backward: rebuild log-probs on the tape
            log_probs = log_softmax(logits, axis=ctx.axis)
        else:  # first order: one exp of the saved logits, no graph
            log_probs = Tensor(logits.data - ctx.lse)
        g_logits = _logits_grad(g, log_probs, q, ctx.axis) if need_logits else None
        g_q = -g * log_probs if need_q else None
        return g_logits, g_q


class _SoftmaxCrossEntropyKernel(Function):
    """Cross-entropy of logits (N, C) with class indices `labels` (an integer array) from the fused kernel
    (gradtensor.fused.softmax_cross_entropy), reduced in the same node ('mean' divides by `count`, the
    rows not ignored): one node on the tape. Forward keeps only the logits (no (N, C) gradient kept
    from forward to backward), and backward runs the kernel again with each row's share of the
    incoming gradient as its scale."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, reduction, count):
        ctx.labels, ctx.ignore_index, ctx.reduction, ctx.count = labels, ignore_index, reduction, count
        ctx.save_for_backward(logits)
        loss, _ = fused.softmax_cross_entropy(logits.data, labels, ignore_index, with_grad=False)
        loss = loss.astype(logits.dtype, copy=False)  # float32 for float16 logits from the kernel
        if reduction == "none":
            return loss
        total = loss.sum()
        if reduction == "sum":
            return total
        # every row ignored: a NaN loss (as PyTorch; made, not divided, so NumPy does not warn), whose
        # gradient is zero (see _row_scale)
        mod = backend.xp(count)
        return mod.where(count > 0, total / mod.maximum(count, 1), mod.nan).astype(total.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (logits,) = ctx.saved_tensors
        scale = _row_scale(g, ctx.reduction, ctx.count)
        if state.grad_enabled:  # double backward: the composite gradient, on the tape
            q = Tensor(_one_hot(ctx.labels, ctx.labels != ctx.ignore_index, logits.shape[1], logits.dtype))
            rows = scale if scale.ndim else scale.broadcast_to(logits.shape[:1])
            return _logits_grad(ops.expand_dims(rows, 1), log_softmax(logits, axis=1), q, 1)
        _, grad = fused.softmax_cross_entropy(logits.data, ctx.labels, ctx.ignore_index, scale.data)
        return Tensor(grad)


def _row_scale(g, reduction, count):
    """The gradient reaching each row's loss: g itself (per row, or the sum's), or g / count for the
    mean (count 0 only when every row is ignored, whose gradients are zero whatever the scale)."""
    if reduction != "mean":
        return g
    return g / backend.xp(count).maximum(count, 1)


def _one_hot(labels, valid, classes, dtype):
    """(N, C) array: 1 at each valid sample's class, 0 elsewhere (labels must already be in range where valid)."""
    mod = backend.xp(labels)
    return ((mod.where(valid, labels, 0)[..., None] == mod.arange(classes)) & valid[..., None]).astype(dtype)


def _class_axis(input):
    return 0 if input.ndim == 1 else 1


def _checked_labels(name, input, target, ignore_index):
    """(labels, valid): the class-index array of target, checked against input, and where it is not ignore_index."""
    axis = _class_axis(input)
    classes = input.shape[axis]
    labels = target.data.copy()  # a copy: backward reads them, and target may be changed in place later
    expected = input.shape[:axis] + input.shape[axis + 1:]
    if labels.shape != expected:
        raise ValueError(
            f"{name}: target of shape {target.shape} does not match input of shape {input.shape} "
            f"(expected {expected} for class indices, or {input.shape} for class probabilities)"
        )
    valid = labels != ignore_index
    if backend.host_check((((labels < 0) | (labels >= classes)) & valid).any()):
        raise IndexError(f"{name}: target values must be in [0, {classes}) or ignore_index={ignore_index}")
    return labels, valid


def _class_target(name, input, target, weight, ignore_index, label_smoothing):
    """Integer targets as a weighted distribution q (shaped like input) and the 'mean' divisor.

    q puts (1 - s) w[y] on the target class plus s / C w[c] on every class; ignored samples get q = 0
    and do not count in the divisor sum(w[y]) (PyTorch's weighted mean).
    """
    axis = _class_axis(input)
    classes = input.shape[axis]
    labels, valid = _checked_labels(name, input, target, ignore_index)
    mod = backend.xp(input.data)
    safe = mod.where(valid, labels, 0)
    class_weight = mod.ones(classes, dtype=input.dtype) if weight is None else weight.data.astype(input.dtype)
    sample_weight = class_weight[safe] * valid
    q = _one_hot(labels, valid, classes, input.dtype) * ((1 - label_smoothing) * sample_weight[..., None])
    if label_smoothing:
        q = q + (label_smoothing / classes) * class_weight * valid[..., None]
    q = mod.moveaxis(q, -1, axis).astype(input.dtype)
    return Tensor(q), sample_weight.sum()


def _cross_entropy_kernel(name, input, target, ignore_index, reduction):
    """cross_entropy of (N, C) or (C,) logits with class indices through the fused kernel."""
    labels, valid = _checked_labels(name, input, target, ignore_index)
    rows = input.reshape((1,) + input.shape) if input.ndim == 1 else input
    count = valid.sum().astype(input.dtype) if reduction == "mean" else None
    loss = _SoftmaxCrossEntropyKernel.apply(rows, labels.reshape(rows.shape[:1]), int(ignore_index), reduction, count)
    return loss.reshape(labels.shape) if reduction == "none" else loss


def _check_class_input(name, input, weight):
    check_floating(input, name)
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have a class axis, (C,), (N, C) or (N, C, d1, ...), got shape ()")
    classes = input.shape[_class_axis(input)]
    if weight is not None and weight.shape != (classes,):
        raise ValueError(f"{name}: weight must have shape ({classes},) for input of shape {input.shape}, got {weight.shape}")


def _reduce_by(loss, reduction, divisor):
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    # every sample ignored (divisor 0): a NaN loss whose gradient is zero (not NaN), as PyTorch; chosen on
    # the device (where() sends no gradient to the branch it drops), so nothing is read back. (The
    # divisor is a weight sum: below 1 when class weights are, and then divided by as it is.)
    mod = backend.xp(total.data)
    divisor = mod.asarray(divisor, dtype=total.dtype)
    nonzero = divisor != 0
    return ops.where(nonzero, total / mod.where(nonzero, divisor, 1), math.nan)


@autocast_op("cross_entropy")
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits input (C,), (N, C) or (N, C, d1, ...) with class indices or class probabilities."""
    name = "cross_entropy"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, name)
    _check_class_input(name, input, weight)
    check_tensor(target, name, "target")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
    axis = _class_axis(input)
    classes = input.shape[axis]
    if target.dtype.kind in "iu" and weight is None and not label_smoothing and input.ndim <= 2:
        return _cross_entropy_kernel(name, input, target, ignore_index, reduction)
    if target.dtype.kind in "iu":
        q, divisor = _class_target(name, input, target, weight, ignore_index, label_smoothing)
    else:
        if target.shape != input.shape:
            raise ValueError(f"{name}: probability target of shape {target.shape} must have the input's shape {input.shape}")
        q = target.astype(input.dtype)
        if label_smoothing:
            q = q * (1 - label_smoothing) + label_smoothing / classes
        if weight is not None:
            q = q * weight.astype(input.dtype).reshape((classes,) + (1,) * (input.ndim - axis - 1))
        divisor = input.size // classes if classes else 0
    loss = _SoftmaxCrossEntropy.apply(input, q, axis)
    return _reduce_by(loss, reduction, divisor)


@autocast_op("nll_loss")
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """-weight[y] * input[y] for log-probabilities input (C,), (N, C) or (N, C, d1, ...) and class indices."""
    name = "nll_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, name)
    _check_class_input(name, input, weight)
    check_tensor(target, name, "target")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype}")
    q, divisor = _class_target(name, input, target, weight, ignore_index, 0.0)
    # only the target entries count: another class's -inf (a masked log-probability) times its zero
    # weight would make the loss NaN
    picked = ops.where(q.data != 0, input, 0.0)
    loss = -(picked * q).sum(axis=_class_axis(input))
    return _reduce_by(loss, reduction, divisor)


@autocast_op("kl_div")
def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise KL term target * (log target - input) for log-probabilities input; 'batchmean' divides by N."""
    name = "kl_div"
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction, name, ("mean", "batchmean", "sum", "none"))
    _check_pair(name, input, target, same_shape=False)
    if log_target:
        loss = ops.exp(target) * (target - input)
    else:  # xlogy(t, t): 0 where t == 0
        positive = target > 0
        loss = ops.where(positive, target * ops.log(ops.where(positive, target, 1.0)), 0.0) - target * input
    if reduction == "batchmean":
        total = loss.sum()
        return total / input.shape[0] if input.ndim else total
    return reduce_loss(loss, reduction)
