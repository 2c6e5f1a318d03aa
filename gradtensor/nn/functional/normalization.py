"""layer_norm and batch_norm, composed of differentiable ops (so every derivative order works)."""
import numbers

from ... import ops
from ._util import check_floating, write_in_place
from ...ops._autocast import autocast_op


def _normalize(x, axes, eps):
    """(x - mean) / sqrt(biased var + eps) over axes; also the mean and variance."""
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=axes, keepdims=True)
    return centered * ops.rsqrt(var + eps), mean, var


def _affine(y, weight, bias, shape):
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


@autocast_op("layer_norm")
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing normalized_shape axes, then scale by weight and shift by bias."""
    check_floating(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: input of shape {input.shape} does not end with normalized_shape {shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"layer_norm: {name} must have shape {shape}, got {t.shape}")
    y, _, _ = _normalize(input, tuple(range(input.ndim - k, input.ndim)), eps)
    return _affine(y, weight, bias, shape)


@autocast_op("batch_norm", keep=("running_mean", "running_var"))
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel (axis 1) of (N, C, *) input.

    training: batch statistics, and running_mean / running_var (when given) are updated in place:
    running = (1 - momentum) * running + momentum * batch statistic, the variance unbiased (as PyTorch).
    Otherwise the running statistics normalise.
    """
    check_floating(input, "batch_norm")
    if input.ndim < 2:
        raise ValueError(f"batch_norm: input must be at least 2-D (N, C, *), got shape {input.shape}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} must have shape ({channels},) for input of shape {input.shape}, got {t.shape}")
    shape = (1, channels) + (1,) * (input.ndim - 2)
    if training:
        axes = (0,) + tuple(range(2, input.ndim))
        count = input.size // channels if channels else 0
        if count <= 1:
            raise ValueError(
                f"batch_norm: expected more than 1 value per channel when training, got input of shape {input.shape}"
            )
        y, mean, var = _normalize(input, axes, eps)
        if running_mean is not None:
            new = (1 - momentum) * running_mean.data + momentum * mean.data.reshape(channels)
            write_in_place(running_mean, new)
        if running_var is not None:
            unbiased = var.data.reshape(channels) * (count / (count - 1))
            write_in_place(running_var, (1 - momentum) * running_var.data + momentum * unbiased)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are required when training=False")
        mean, var = (t.astype(input.dtype).reshape(shape) for t in (running_mean, running_var))
        y = (input - mean) * ops.rsqrt(var + eps)  # in the input's dtype, whatever the statistics' dtype
    return _affine(y, weight, bias, shape)
