"""conv1d / conv2d: im2col (Unfold) feeding one batched matmul per call.

Backward needs nothing special: matmul's backward gives the column gradient and Unfold's
backward (col2im) folds it into the input gradient; both are differentiable, so double
backward works too.
"""
import math

from ._util import as_tuple, batched, check_floating, check_one_dtype, unbatched
from ._window import Unfold, make_window
from ...ops._autocast import autocast_op


def _padding(name, padding, kernel, stride, dilation, nd):
    """(pad_lo, pad_hi) per spatial axis from an int, a tuple, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride {stride}")
            total = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
            lo = tuple(t // 2 for t in total)
            return lo, tuple(t - a for t, a in zip(total, lo))  # the odd one goes to the end, as PyTorch
        raise ValueError(f"{name}: padding must be an int, a tuple, 'valid' or 'same', got {padding!r}")
    pad = as_tuple(padding, nd, name, "padding")
    return pad, pad


def _conv(name, nd, input, weight, bias, stride, padding, dilation, groups):
    input, added = batched(input, nd, name)
    check_floating(weight, name, "weight")
    if weight.ndim != nd + 2:
        raise ValueError(f"{name}: weight must be {nd + 2}-D (out_channels, in_channels/groups, *kernel), got shape {weight.shape}")
    n, c = input.shape[:2]
    c_out, c_group = weight.shape[:2]
    if groups < 1 or c_out % groups:
        raise ValueError(f"{name}: groups={groups} must be positive and divide out_channels of weight shape {weight.shape}")
    if c != c_group * groups:
        raise ValueError(
            f"{name}: input of shape {input.shape} has {c} channels, but weight of shape {weight.shape} with "
            f"groups={groups} expects {c_group * groups}"
        )
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"{name}: bias must have shape ({c_out},), got {bias.shape}")
    check_one_dtype(name, input, weight, bias)

    kernel = weight.shape[2:]
    stride = as_tuple(stride, nd, name, "stride")
    dilation = as_tuple(dilation, nd, name, "dilation")
    pad_lo, pad_hi = _padding(name, padding, kernel, stride, dilation, nd)
    window = make_window(name, input.shape[2:], kernel, stride, dilation, pad_lo, pad_hi)

    taps = c_group * math.prod(kernel)
    positions = math.prod(window.out_size)
    cols = Unfold.apply(input, window).reshape(n, groups, taps, positions)
    w = weight.reshape(groups, c_out // groups, taps)
    out = (w @ cols).reshape((n, c_out) + window.out_size)  # (G, Co/G, taps) @ (N, G, taps, L)
    if bias is not None:
        out = out + bias.reshape((c_out,) + (1,) * nd)
    return unbatched(out, added)


@autocast_op("conv1d")
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation over (N, C_in, L) (or unbatched (C_in, L)); weight (C_out, C_in/groups, K)."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


@autocast_op("conv2d")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation over (N, C_in, H, W) (or unbatched); weight (C_out, C_in/groups, KH, KW)."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)
