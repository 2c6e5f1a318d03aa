"""Reductions over axes (NumPy semantics); backward broadcasts the gradient back over the reduced axes."""
import math
import numbers

from .. import backend, dtypes
from ..autograd.function import Function
from ..tensor import Tensor
from ._autocast import cast_inputs
from ._util import expand_to, normalize_axes, normalize_axis
from .elementwise import abs, exp, sign, where  # noqa: A004 - shadows builtins, as sum/max/min/all/any do
from .linalg import singular_values
from .shape import moveaxis

__all__ = [
    "sum", "mean", "var", "std", "prod", "max", "min", "logsumexp", "norm",
    "argmax", "argmin", "all", "any",
]


# --- shared helpers -------------------------------------------------------------------------------


def _check_tensor(x, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")


def _autocast(x, op):
    """x in the dtype autocast gives op (float32 for these accuracy-critical reductions), else x."""
    (x,) = cast_inputs(op, x)
    return x


def _reduction_axes(x, axis, op):
    """Sorted non-negative axes; a 0-d tensor accepts axis 0 / -1 (as PyTorch) and reduces nothing."""
    _check_tensor(x, op)
    axes = normalize_axes(axis, x.ndim, op)
    return axes if x.ndim else ()


def _count(shape, axes):
    return math.prod(shape[a] for a in axes)


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _reduced_shape(shape, axes, keepdims):
    return _kept_shape(shape, axes) if keepdims else tuple(n for i, n in enumerate(shape) if i not in axes)


def _expand_reduced(g, in_shape, axes, keepdims):
    """Put the reduced axes back as size 1 so g broadcasts against the input (g: Tensor or array)."""
    if keepdims or g.ndim == 0:  # a 0-d g (a full reduction) broadcasts as it is
        return g
    return g.reshape(_kept_shape(in_shape, axes))


def _floating(x):
    """Means, variances and norms of integers are taken in the default float dtype."""
    return Tensor(x.data.astype(dtypes.get_default_dtype())) if x.dtype.kind in "biu" else x


def _accumulating(x):
    """As NumPy, bools and small integers sum and multiply in int64 (unsigned ones in uint64)."""
    kind = x.dtype.kind
    if kind not in "biu":
        return x
    wide = "uint64" if kind == "u" else "int64"
    return Tensor(x.data.astype(wide)) if x.dtype != wide else x


def _nonzero_or_one(t):
    """t with its zeros replaced by 1: a safe divisor where the quotient is taken as 0 anyway."""
    return where(t.data == 0, 1.0, t)


def _check_nonempty(x, axes, op):
    if _count(x.shape, axes) == 0:
        raise ValueError(
            f"{op}: cannot reduce a size-0 axis (shape {x.shape}, axes {axes}): the result would be undefined"
        )


# --- sums and moments -----------------------------------------------------------------------------


class Sum(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.axes, ctx.keepdims = axes, keepdims
        return backend.reduce_sum(x.data, axes, keepdims)

    @staticmethod
    def backward(ctx, g):
        shape = ctx.input_shape(0)
        return expand_to(_expand_reduced(g, shape, ctx.axes, ctx.keepdims), shape)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over axes (all by default); integers and bools sum in int64 as NumPy, 0 over an empty axis."""
    axes = _reduction_axes(x, axis, "sum")
    return Sum.apply(_accumulating(_autocast(x, "sum")), axes, keepdims)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over axes; integers give the default float dtype, an empty axis NaN."""
    axes = _reduction_axes(x, axis, "mean")
    x = _floating(_autocast(x, "mean"))
    count = _count(x.shape, axes)
    total = sum(x, axes, keepdims)
    return total / count if count else total * math.nan  # as NumPy: the mean of nothing is NaN


def _degrees_of_freedom(x, axes, ddof):
    dof = _count(x.shape, axes) - ddof
    return dof if dof > 0 else 0  # as NumPy: no degrees of freedom left gives inf / NaN


def _centered(x, axes):
    return x - mean(x, axes, keepdims=True)


class Var(Function):
    @staticmethod
    def forward(ctx, x, axes, ddof, keepdims):
        ctx.save_for_backward(x)
        ctx.axes, ctx.ddof, ctx.keepdims = axes, ddof, keepdims
        return backend.xp(x.data).var(x.data, axis=axes, ddof=ddof, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        dof = _degrees_of_freedom(x, ctx.axes, ctx.ddof)
        g = _expand_reduced(g, x.shape, ctx.axes, ctx.keepdims)
        return g * _centered(x, ctx.axes) * (2 / dof if dof else math.inf)


class Std(Function):
    @staticmethod
    def forward(ctx, x, axes, ddof, keepdims):
        ctx.save_for_backward(x)
        ctx.axes, ctx.ddof, ctx.keepdims = axes, ddof, keepdims
        return ctx.save_output(backend.xp(x.data).std(x.data, axis=axes, ddof=ddof, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        dof = _degrees_of_freedom(x, ctx.axes, ctx.ddof)
        g = _expand_reduced(g, x.shape, ctx.axes, ctx.keepdims)
        out = _expand_reduced(ctx.saved_output(), x.shape, ctx.axes, ctx.keepdims)
        # a constant slice (std 0) gets the subgradient 0 rather than 0/0
        return g * _centered(x, ctx.axes) / (_nonzero_or_one(out) * dof)


def var(x, axis=None, keepdims=False, *, ddof=0):
    """Variance, sum((x - mean)^2) / (N - ddof), as numpy.var (ddof=0 by default)."""
    axes = _reduction_axes(x, axis, "var")
    return Var.apply(_floating(_autocast(x, "var")), axes, ddof, keepdims)


def std(x, axis=None, keepdims=False, *, ddof=0):
    """Standard deviation, sqrt(var(x, ddof=ddof)); gradient 0 (not NaN) where it is 0."""
    axes = _reduction_axes(x, axis, "std")
    return Std.apply(_floating(_autocast(x, "std")), axes, ddof, keepdims)


# --- products -------------------------------------------------------------------------------------


class Prod(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.save_for_backward(x)
        ctx.axes, ctx.keepdims = axes, keepdims
        return ctx.save_output(x.data.prod(axis=axes, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        out = _expand_reduced(ctx.saved_output(), x.shape, ctx.axes, ctx.keepdims)
        return _expand_reduced(g, x.shape, ctx.axes, ctx.keepdims) * _products_of_others(x, ctx.axes, out)


def _products_of_others(x, axes, out):
    """For each element, the product of the other elements of its slice (d prod / d x), also at zeros.

    The nonzero elements and the zeros of a slice contribute separate factors, written so that the
    derivative of this expression is exact as well: prod's second derivative is exact everywhere,
    and every higher one in slices with at most two zeros.
    """
    is_zero = x.data == 0
    # the shortcut needs a host read: a captured CUDA graph takes the general path, exact either way
    if not backend.capturing() and not backend.host_check(is_zero.any()):
        return out / x
    zeros_in_slice = is_zero.sum(axis=axes, keepdims=True)
    nonzeros = where(is_zero, 1.0, x)
    others_nonzero = prod(nonzeros, axes, keepdims=True) / nonzeros
    zeros = where(is_zero, x, 1.0)
    # For a zero element, the product of the other zeros of its slice: 1 when it is alone, the other
    # zero when there are two (as sum - self, exact as a polynomial), and 0 from three on (exact to
    # first order only: at least two zero factors remain).
    sum_of_zeros = sum(where(is_zero, x, 0.0), axes, keepdims=True)
    other_zeros = where(zeros_in_slice == 1, 1.0, where(zeros_in_slice == 2, sum_of_zeros - x, 0.0))
    return others_nonzero * where(is_zero, other_zeros, prod(zeros, axes, keepdims=True))


def prod(x, axis=None, keepdims=False):
    """Product over axes (1 for an empty one); the gradient is exact also where x has zeros."""
    axes = _reduction_axes(x, axis, "prod")
    return Prod.apply(_accumulating(_autocast(x, "prod")), axes, keepdims)


# --- extrema --------------------------------------------------------------------------------------


def _extremum_forward(ctx, x, axes, keepdims, reduce):
    ctx.save_for_backward(x)
    ctx.axes, ctx.keepdims = axes, keepdims
    return ctx.save_output(getattr(x.data, reduce)(axis=axes, keepdims=keepdims))


def _extremum_backward(ctx, g):
    """The gradient goes to the elements equal to the extremum, split evenly among ties (as PyTorch's amax)."""
    (x,) = ctx.saved_tensors
    out = _expand_reduced(ctx.saved_output().data, x.shape, ctx.axes, ctx.keepdims)
    mod = backend.xp(x.data)
    # a NaN is the extremum of its slice (NumPy propagates it), but NaN != NaN
    share = mod.asarray((x.data == out) | mod.isnan(x.data), dtype=g.dtype)
    share /= share.sum(axis=ctx.axes, keepdims=True)
    return _expand_reduced(g, x.shape, ctx.axes, ctx.keepdims) * Tensor(share)


class Max(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        return _extremum_forward(ctx, x, axes, keepdims, "max")

    backward = staticmethod(_extremum_backward)


class Min(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        return _extremum_forward(ctx, x, axes, keepdims, "min")

    backward = staticmethod(_extremum_backward)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Largest element over axes (NumPy's amax); ties share the gradient evenly."""
    axes = _reduction_axes(x, axis, "max")
    _check_nonempty(x, axes, "max")
    return Max.apply(x, axes, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    """Smallest element over axes (NumPy's amin); ties share the gradient evenly."""
    axes = _reduction_axes(x, axis, "min")
    _check_nonempty(x, axes, "min")
    return Min.apply(x, axes, keepdims)


class LogSumExp(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdims):
        ctx.save_for_backward(x)
        ctx.axes, ctx.keepdims = axes, keepdims
        mod = backend.xp(x.data)
        if _count(x.shape, axes):
            # shifting by the max keeps exp() from overflowing; an infinite max shifts by 0 instead
            shift = x.data.max(axis=axes, keepdims=True)
            shift = mod.where(mod.isfinite(shift), shift, 0)
        else:
            shift = mod.zeros(_kept_shape(x.shape, axes), x.dtype)
        ctx.shift = shift
        total = mod.exp(x.data - shift).sum(axis=axes, keepdims=True)
        # an empty or all -inf slice gives -inf, without log(0) warnings
        out = mod.where(total == 0, -mod.inf, mod.log(mod.where(total == 0, 1, total))) + shift
        return out if keepdims else out.reshape(_reduced_shape(x.shape, axes, False))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # softmax from the shifted input: exp(x - out) would lose float32 digits when |out| is large
        e = exp(x - Tensor(ctx.shift))
        softmax = e / _nonzero_or_one(sum(e, ctx.axes, keepdims=True))
        return _expand_reduced(g, x.shape, ctx.axes, ctx.keepdims) * softmax


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) over axes, computed without overflow (-inf over an empty axis)."""
    axes = _reduction_axes(x, axis, "logsumexp")
    return LogSumExp.apply(_floating(_autocast(x, "logsumexp")), axes, keepdims)


# --- norms ----------------------------------------------------------------------------------------


class VectorNorm(Function):
    """(sum |x|^p)^(1/p) over axes, for p not in {0, 1, inf, -inf} (those are built from other ops)."""

    @staticmethod
    def forward(ctx, x, p, axes, keepdims):
        ctx.save_for_backward(x)
        ctx.p, ctx.axes, ctx.keepdims = p, axes, keepdims
        mod = backend.xp(x.data)
        if p == 2:
            out = mod.sqrt((x.data * x.data).sum(axis=axes, keepdims=keepdims))
        else:
            out = (mod.abs(x.data) ** p).sum(axis=axes, keepdims=keepdims) ** (1 / p)
        return ctx.save_output(out)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        p = ctx.p
        g = _expand_reduced(g, x.shape, ctx.axes, ctx.keepdims)
        out = _expand_reduced(ctx.saved_output(), x.shape, ctx.axes, ctx.keepdims)
        # Where the norm is 0 the subgradient 0 is taken (no 0/0); inputs are masked before any
        # power so that no inf appears even in the branches where() discards.
        if p == 2:
            return g * x / _nonzero_or_one(out)
        flows = (x.data != 0) & (out.data != 0)
        magnitude = where(flows, abs(x), 1.0) ** (p - 1)
        return where(flows, g * sign(x) * magnitude / _nonzero_or_one(out) ** (p - 1), 0.0)


def _vector_norm(x, ord, axes, keepdims):  # noqa: A002 - NumPy's keyword
    if isinstance(ord, str) or not isinstance(ord, numbers.Real):
        raise ValueError(f"norm: invalid order {ord!r} for vectors; use a number, inf or -inf")
    if ord == 2:
        return VectorNorm.apply(x, 2, axes, keepdims)
    if ord == math.inf or ord == -math.inf:
        _check_nonempty(x, axes, "norm")
        return (max if ord > 0 else min)(abs(x), axes, keepdims)
    if ord == 0:  # the number of nonzero elements: piecewise constant, no gradient
        return Tensor(backend.xp(x.data).asarray((x.data != 0).astype(x.dtype).sum(axis=axes, keepdims=keepdims)))
    if ord == 1:
        return sum(abs(x), axes, keepdims)
    return VectorNorm.apply(x, float(ord), axes, keepdims)


def _matrix_norm(x, ord, row_axis, col_axis, keepdims):  # noqa: A002
    if ord == "fro":
        return VectorNorm.apply(x, 2, tuple(sorted((row_axis, col_axis))), keepdims)
    if ord in ("nuc", 2, -2):  # the sum, the largest or the smallest singular value
        _check_nonempty(x, (row_axis, col_axis), "norm")
        values = singular_values(moveaxis(x, (row_axis, col_axis), (-2, -1)))
        out = sum(values, -1) if ord == "nuc" else (max if ord == 2 else min)(values, -1)
        return out.reshape(_reduced_shape(x.shape, (row_axis, col_axis), keepdims))
    if ord not in (1, -1, math.inf, -math.inf):
        raise ValueError(f"norm: invalid order {ord!r} for matrices; use 'fro', 'nuc', 1, -1, 2, -2, inf or -inf")
    # 1: largest column sum of |x|; inf: largest row sum (the negative orders take the smallest)
    summed, extreme = (row_axis, col_axis) if ord in (1, -1) else (col_axis, row_axis)
    _check_nonempty(x, (extreme,), "norm")
    out = (max if ord > 0 else min)(sum(abs(x), summed, keepdims=True), extreme, keepdims=True)
    return out if keepdims else out.reshape(_reduced_shape(x.shape, (row_axis, col_axis), False))


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002
    """Vector or matrix norm, as numpy.linalg.norm.

    axis None: the 2-norm of all elements when ord is None, else a vector (1-D) or matrix (2-D) norm;
    an int axis: vector norms (ord None/2, 1, inf, -inf, 0 = count of nonzeros, any real p);
    a pair of axes: matrix norms (ord None/'fro', 'nuc', 1, -1, 2, -2, inf, -inf; 'nuc' and +-2 from the
    singular values, whose gradient needs them distinct beyond first order).
    The gradient at x = 0 is a subgradient, never NaN: 0, except for 'nuc' and +-2, whose gradient
    comes from the SVD's singular vectors there too (as PyTorch's).
    """
    _check_tensor(x, "norm")
    x = _floating(_autocast(x, "norm"))
    if axis is None:
        if ord is None:
            return VectorNorm.apply(x, 2, tuple(range(x.ndim)), keepdims)
        if x.ndim not in (1, 2):
            raise ValueError(f"norm: ord={ord!r} needs a 1-D or 2-D tensor or an explicit axis, got shape {x.shape}")
        axis = tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    axes = tuple(normalize_axis(int(a), x.ndim, "norm") for a in axes)
    if len(axes) == 1:
        return _vector_norm(x, 2 if ord is None else ord, axes if x.ndim else (), keepdims)
    if len(axes) == 2:
        if axes[0] == axes[1]:
            raise ValueError(f"norm: the two matrix axes are the same ({axis!r}) for shape {x.shape}")
        return _matrix_norm(x, "fro" if ord is None else ord, axes[0], axes[1], keepdims)
    raise ValueError(f"norm: axis must be an int or a pair of ints, got {axis!r} for shape {x.shape}")


# --- non-differentiable reductions ----------------------------------------------------------------


def _arg_extremum(x, axis, keepdims, reduce):
    _check_tensor(x, reduce)
    if axis is not None:
        axis = normalize_axis(axis, x.ndim, reduce) if x.ndim else None
    empty = x.size == 0 if axis is None else x.shape[axis] == 0
    if empty:
        raise ValueError(f"{reduce}: cannot take it over a size-0 axis (shape {x.shape}, axis {axis})")
    mod = backend.xp(x.data)
    return Tensor(mod.asarray(getattr(mod, reduce)(x.data, axis=axis, keepdims=keepdims), dtype=dtypes.int64))


def argmax(x, axis=None, keepdims=False):
    """Index of the largest element (of the flattened tensor when axis is None); int64, no gradient."""
    return _arg_extremum(x, axis, keepdims, "argmax")


def argmin(x, axis=None, keepdims=False):
    """Index of the smallest element (of the flattened tensor when axis is None); int64, no gradient."""
    return _arg_extremum(x, axis, keepdims, "argmin")


def all(x, axis=None, keepdims=False):  # noqa: A001
    """True where every element over axes is nonzero; a bool tensor, no gradient."""
    axes = _reduction_axes(x, axis, "all")
    return Tensor(backend.xp(x.data).asarray(x.data.all(axis=axes, keepdims=keepdims)))


def any(x, axis=None, keepdims=False):  # noqa: A001
    """True where some element over axes is nonzero; a bool tensor, no gradient."""
    axes = _reduction_axes(x, axis, "any")
    return Tensor(backend.xp(x.data).asarray(x.data.any(axis=axes, keepdims=keepdims)))
