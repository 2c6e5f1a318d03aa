"""Shape ops: views and rearrangements of the same elements; backward rearranges the gradient back."""
from .. import backend, dtypes
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_axis

__all__ = ["reshape", "transpose", "permute_dims", "swapaxes", "broadcast_to", "astype", "to", "clone"]


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        try:
            return x.data.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} (size {x.size}) into shape {shape}") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


def reshape(x, *shape):
    """x.reshape(2, -1) or reshape(x, (2, -1))."""
    if len(shape) == 1 and not isinstance(shape[0], int):
        shape = shape[0]
    shape = tuple(int(s) for s in shape)
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return x.data.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.axes)
        for i, a in enumerate(ctx.axes):
            inverse[a] = i
        return g.transpose(tuple(inverse))


def transpose(x, *axes):
    """Permute axes (all reversed by default), as numpy.transpose."""
    if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], int)):
        axes = axes[0]
    if axes is None or axes == ():
        axes = tuple(range(x.ndim - 1, -1, -1))
    axes = tuple(normalize_axis(int(a), x.ndim, "transpose") for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Transpose.apply(x, axes)


def permute_dims(x, axes):
    return transpose(x, tuple(axes))


def swapaxes(x, axis1, axis2):
    a1 = normalize_axis(axis1, x.ndim, "swapaxes")
    a2 = normalize_axis(axis2, x.ndim, "swapaxes")
    axes = list(range(x.ndim))
    axes[a1], axes[a2] = axes[a2], axes[a1]
    return Transpose.apply(x, tuple(axes))


class BroadcastTo(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        try:
            return backend.xp(x.data).broadcast_to(x.data, shape)
        except ValueError:
            raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}") from None

    @staticmethod
    def backward(ctx, g):
        from ._util import sum_to

        return sum_to(g, ctx.in_shape)


def broadcast_to(x, shape):
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if shape == x.shape:
        return x
    return BroadcastTo.apply(x, shape)


class AsType(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return x.data.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.in_dtype)


def astype(x, dtype):
    """Cast to dtype; differentiable between floating dtypes (the gradient is cast back)."""
    dtype = dtypes.as_dtype(dtype)
    if dtype == x.dtype:
        return x
    return AsType.apply(x, dtype)


class ToDevice(Function):
    @staticmethod
    def forward(ctx, x, device):
        ctx.in_device = x.device
        return backend.to_device(x.data, device)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.in_device)


def to(x, device=None, dtype=None):
    """Move to a device and/or cast to a dtype (no copy when nothing changes); differentiable."""
    if isinstance(device, (str, backend.Device)) or device is None:
        device = backend.as_device(device)
    else:  # x.to(gt.float64): a dtype in the first position
        device, dtype = None, device
    out = x
    if device is not None and device != x.device:
        out = ToDevice.apply(out, device)
    if dtype is not None:
        out = astype(out, dtype)
    return out


class Clone(Function):
    @staticmethod
    def forward(ctx, x):
        return x.data.copy()

    @staticmethod
    def backward(ctx, g):
        return g


def clone(x):
    """A copy with its own memory; gradients flow through."""
    return Clone.apply(x)
