"""layer_norm and batch_norm, composed of differentiable ops (so every derivative order works).

On the GPU (see gradtensor.fused.available_for) layer_norm runs the fused kernels instead: one pass
for the forward with fp32 statistics, one for the input gradient and one for the parameters'; under
create_graph its backward falls back to the composite ops, so higher derivatives still work.
"""
import math
import numbers

from ... import fused, ops
from ...autograd.function import Function
from ...autograd.grad_mode import state
from ...tensor import Tensor
from ...ops.inplace import write_in_place
from ._util import check_floating
from .activation import composite_vjp
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
    if _layer_norm_kernel_applies(input, weight, bias):
        return _layer_norm_kernel(input, weight, bias, shape, eps)
    return _layer_norm_composite(input, weight, bias, shape, eps)


def _layer_norm_composite(input, weight, bias, shape, eps):
    y, _, _ = _normalize(input, tuple(range(input.ndim - len(shape), input.ndim)), eps)
    return _affine(y, weight, bias, shape)


def _layer_norm_kernel_applies(input, weight, bias):
    # weight and bias in the input's dtype: mixed dtypes promote in the composite, not in the kernel
    return fused.available_for(input.data, *(t.data for t in (weight, bias) if t is not None))


class _LayerNormKernel(Function):
    """layer_norm over the last axis of x (rows, C), weight and bias (C,) or None, by the fused kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        ctx.eps = eps
        ctx.save_for_backward(x, weight, bias)
        y, ctx.mean, ctx.rstd = fused.layer_norm_forward(x.data, _data(weight), _data(bias), eps)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, bias = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if state.grad_enabled:  # create_graph: differentiate the composite on the tape
            composite = lambda x, w, b: _layer_norm_composite(x, w, b, x.shape[-1:], ctx.eps)  # noqa: E731
            return composite_vjp(composite, (x, weight, bias), needs, g)
        grads = fused.layer_norm_backward(g.data, x.data, _data(weight), ctx.mean, ctx.rstd)
        return tuple(Tensor(a) if need else None for a, need in zip(grads, needs))


def _data(t):
    return None if t is None else t.data


def _layer_norm_kernel(input, weight, bias, shape, eps):
    """The kernels normalise one axis: the normalized axes are flattened into it (a view), and back."""
    features = math.prod(shape)
    flat = input.reshape(input.shape[:input.ndim - len(shape)] + (features,))
    y = _LayerNormKernel.apply(flat, *(None if t is None else t.reshape(features) for t in (weight, bias)),
                               float(eps))
    return y.reshape(input.shape)


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
