"""Argument checks and small helpers shared by the nn.functional modules."""
import itertools
import numbers

from ... import dtypes
from ...tensor import Tensor


def check_tensor(x, name, what="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected {what} to be a Tensor, got {type(x).__name__}")


def check_floating(x, name, what="input"):
    check_tensor(x, name, what)
    if not dtypes.is_floating(x.dtype):
        raise TypeError(f"{name}: expected a floating-point {what}, got dtype {x.dtype}")


def check_one_dtype(name, input, weight, bias):
    """A layer computes in one dtype: a float32 input with float64 weights is refused, not widened."""
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        found = ", ".join(str(t.dtype) for t in (input, weight, bias) if t is not None)
        raise TypeError(f"{name}: input, weight and bias must have one dtype, got {found}")


def as_float(x, name):
    """x itself when floating, else cast to the default float dtype (as elementwise math does)."""
    check_tensor(x, name)
    return x if dtypes.is_floating(x.dtype) else Tensor(x.data.astype(dtypes.get_default_dtype()))


def as_tuple(value, n, name, what):
    """An int or a sequence of n ints as a tuple of n ints."""
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    value = tuple(value)
    if len(value) == 1:
        value = value * n
    if len(value) != n or not all(isinstance(v, numbers.Integral) for v in value):
        raise ValueError(f"{name}: {what} must be an int or {n} ints, got {value}")
    return tuple(int(v) for v in value)


def batched(input, spatial_dims, name):
    """(input with a batch axis, whether one was added): conv and pooling accept unbatched (C, *spatial)."""
    check_floating(input, name)
    nd = spatial_dims + 2
    if input.ndim not in (nd - 1, nd):
        raise ValueError(f"{name}: input must be {nd - 1}-D (unbatched) or {nd}-D (N, C, *spatial), got shape {input.shape}")
    return (input.reshape((1,) + input.shape), True) if input.ndim == nd - 1 else (input, False)


def unbatched(out, added):
    """Undo batched(): drop the batch axis it added."""
    return out.reshape(out.shape[1:]) if added else out


def broadcast_shape(a, b):
    """The shape a and b broadcast to, or None when they do not broadcast."""
    out = []
    for m, n in itertools.zip_longest(reversed(a), reversed(b), fillvalue=1):
        if m != n and 1 not in (m, n):
            return None
        out.append(m if n == 1 else n)
    return tuple(reversed(out))


_REDUCTIONS = ("mean", "sum", "none")


def legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated size_average/reduce flags, when given, override reduction."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is False:
        return "none"
    return "sum" if size_average is False else "mean"


def check_reduction(reduction, name, allowed=_REDUCTIONS):
    if reduction not in allowed:
        choices = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"{name}: reduction must be one of {choices}, got {reduction!r}")


def reduce_loss(loss, reduction):
    """Apply a (checked) reduction to elementwise losses."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()
