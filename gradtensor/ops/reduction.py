"""Reductions over axes; backward broadcasts the gradient back over the reduced axes."""
from .. import backend, dtypes
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_axes

__all__ = ["sum", "mean"]


def _expand_reduced(g, in_shape, axes, keepdims):
    """Put the reduced axes back as size 1 so g broadcasts against the input."""
    if not keepdims and axes:
        shape = list(in_shape)
        for a in axes:
            shape[a] = 1
        g = g.reshape(tuple(shape))
    return g


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.in_shape, ctx.axes, ctx.keepdims = x.shape, axes, keepdims
        return x.data.sum(axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand_reduced(g, ctx.in_shape, ctx.axes, ctx.keepdims).broadcast_to(ctx.in_shape)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    axes = normalize_axes(axis, x.ndim, "sum")
    if x.dtype.kind in "bi" and x.dtype != dtypes.int64:
        x = Tensor(x.data.astype(dtypes.int64))  # as NumPy: small ints and bools sum as int64
    return Sum.apply(x, axes, keepdims)


def mean(x, axis=None, keepdims=False):
    axes = normalize_axes(axis, x.ndim, "mean")
    count = 1
    for a in axes:
        count *= x.shape[a]
    if x.dtype.kind in "biu":
        x = Tensor(x.data.astype(dtypes.get_default_dtype()))
    return sum(x, axes, keepdims) / count if count else Tensor(backend.xp(x.data).full(
        tuple(n for i, n in enumerate(x.shape) if i not in axes or keepdims), float("nan"), x.dtype))
