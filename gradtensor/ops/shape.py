"""Shape ops: views and rearrangements of the same elements; backward rearranges the gradient back.

Most ops here are compositions of a few Functions (reshape, transpose, broadcast_to, concatenate,
split, flip, constant pad, and the gather of indexing.py), so their double backward comes for free.
"""
import math
import numbers
import operator

from .. import backend, dtypes
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import as_tensor_like, normalize_axis, sum_to
from .indexing import GetItem, IndexScatter, check_bounds, index_array

__all__ = [
    "reshape", "transpose", "permute_dims", "swapaxes", "moveaxis", "expand_dims", "squeeze", "flatten",
    "broadcast_to", "concatenate", "stack", "split", "tile", "repeat", "flip", "pad", "take",
    "take_along_axis", "astype", "to", "clone",
]


# --- argument helpers -----------------------------------------------------------------------------


def _int_tuple(args):
    """Ints given as separate arguments or as one sequence: f(2, 3) or f((2, 3))."""
    if len(args) == 1 and not isinstance(args[0], numbers.Integral):
        args = args[0]
    return tuple(operator.index(a) for a in args)


def _axis(axis, ndim, op):
    """One axis as a non-negative int; a 0-d tensor has no axis to name."""
    if ndim == 0:
        raise ValueError(f"{op}: axis {axis} is out of range for a 0-d tensor")
    return normalize_axis(operator.index(axis), ndim, op)


def _axes(axis, ndim, op):
    """Distinct non-negative axes in the order given (an int gives one)."""
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalized = tuple(_axis(a, ndim, op) for a in axes)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return normalized


def _integer_array(values, x, op, what):
    """Integer values (a Tensor, an array, a list) as an int64 array on x's device."""
    array = index_array(values, x, op)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{op}: {what} must be integers, got dtype {array.dtype}")
    return array.astype(dtypes.int64)  # a copy: a later change to `values` cannot alter a saved gather


def _along(axis, item):
    """An index that applies `item` to `axis` and takes everything on the other axes."""
    return (slice(None),) * axis + (item,)


# --- reshaping ----------------------------------------------------------------------------------


class Reshape(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        try:
            return x.data.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape a tensor of shape {x.shape} (size {x.size}) into shape {shape}"
            ) from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


def reshape(x, *shape):
    """x.reshape(2, -1) or reshape(x, (2, -1))."""
    shape = _int_tuple(shape)
    if shape == x.shape:
        return x
    return Reshape.apply(x, shape)


def expand_dims(x, axis):
    """Insert size-1 axes at the positions `axis` (an int or a tuple) of the result."""
    out_ndim = x.ndim + (1 if isinstance(axis, numbers.Integral) else len(axis))
    new_axes = set(_axes(axis, out_ndim, "expand_dims"))
    sizes = iter(x.shape)
    return reshape(x, tuple(1 if i in new_axes else next(sizes) for i in range(out_ndim)))


def squeeze(x, axis=None):
    """Remove size-1 axes: all of them, or those named (naming one of another size is an error)."""
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = _axes(axis, x.ndim, "squeeze")
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} has size {x.shape[a]}, not 1 (shape {x.shape})")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def flatten(x, start_axis=0, end_axis=-1):
    """Merge axes start_axis..end_axis (inclusive) into one; the defaults give a 1-D tensor."""
    if x.ndim == 0:
        return reshape(x, (1,))
    start = normalize_axis(operator.index(start_axis), x.ndim, "flatten")
    end = normalize_axis(operator.index(end_axis), x.ndim, "flatten")
    if start > end:
        raise ValueError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis} for shape {x.shape}")
    return reshape(x, x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:])


# --- permuting axes -------------------------------------------------------------------------------


class Transpose(Function):
    backward_on_arrays = True

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


def transpose(x, axes=None, *more_axes):
    """Permute axes (all reversed by default): transpose(x, axes=(1, 0)) as numpy.transpose, and
    x.transpose(1, 0) or x.transpose((1, 0)) as ndarray.transpose."""
    axes = (axes,) + more_axes if more_axes else (() if axes is None else (axes,))
    if not axes:
        axes = tuple(range(x.ndim - 1, -1, -1))
    axes = tuple(normalize_axis(a, x.ndim, "transpose") for a in _int_tuple(axes))
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {x.shape}")
    return Transpose.apply(x, axes)


def permute_dims(x, axes):
    return transpose(x, tuple(axes))


def swapaxes(x, axis1, axis2):
    a1 = _axis(axis1, x.ndim, "swapaxes")
    a2 = _axis(axis2, x.ndim, "swapaxes")
    axes = list(range(x.ndim))
    axes[a1], axes[a2] = axes[a2], axes[a1]
    return Transpose.apply(x, tuple(axes))


def moveaxis(x, source, destination):
    """Move axes `source` to positions `destination` (ints or sequences), keeping the others in order."""
    src = _axes(source, x.ndim, "moveaxis")
    dst = _axes(destination, x.ndim, "moveaxis")
    if len(src) != len(dst):
        raise ValueError(f"moveaxis: source {source} and destination {destination} name different numbers of axes")
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, tuple(order))


class Flip(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return backend.xp(x.data).flip(x.data, axes)

    @staticmethod
    def backward(ctx, g):
        return Flip.apply(g, ctx.axes)


def flip(x, axis=None):
    """Reverse the order of elements along `axis` (an int, a tuple, or None for all axes)."""
    axes = tuple(range(x.ndim)) if axis is None else _axes(axis, x.ndim, "flip")
    return Flip.apply(x, axes) if axes else x


# --- broadcasting and repeating -------------------------------------------------------------------


class BroadcastTo(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        try:
            return backend.broadcast_to(x.data, shape)
        except ValueError:
            raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}") from None

    @staticmethod
    def backward(ctx, g):
        return sum_to(g, ctx.in_shape)


def broadcast_to(x, shape):
    shape = _int_tuple((shape,))
    if shape == x.shape:
        return x
    return BroadcastTo.apply(x, shape)


def _interleave(outer, inner):
    return tuple(n for pair in zip(outer, inner) for n in pair)


def tile(x, reps):
    """Repeat the whole tensor reps[i] times along axis i, as numpy.tile."""
    reps = _int_tuple((reps,))
    if any(r < 0 for r in reps):
        raise ValueError(f"tile: reps must be non-negative, got {reps}")
    ndim = max(len(reps), x.ndim)
    reps = (1,) * (ndim - len(reps)) + reps
    shape = (1,) * (ndim - x.ndim) + x.shape
    # (s0, s1) -> (1, s0, 1, s1) -> broadcast (r0, s0, r1, s1) -> (r0*s0, r1*s1): backward is a sum
    ones = (1,) * ndim
    tiled = broadcast_to(reshape(x, _interleave(ones, shape)), _interleave(reps, shape))
    return reshape(tiled, tuple(r * n for r, n in zip(reps, shape)))


def repeat(x, repeats, axis=None):
    """Repeat each element `repeats` times along `axis` (the flattened x when None), as numpy.repeat.

    `repeats` is an int or one count per element along the axis.
    """
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    else:
        axis = _axis(axis, x.ndim, "repeat")
    n = x.shape[axis]
    if not isinstance(repeats, numbers.Integral):
        counts = _integer_array(repeats, x, "repeat", "repeats")
        if counts.size != 1:
            if counts.shape != (n,):
                raise ValueError(
                    f"repeat: repeats of shape {counts.shape} do not match axis {axis} of size {n} (shape {x.shape})"
                )
            if backend.host_check((counts < 0).any()):
                raise ValueError("repeat: repeats must be non-negative")
            # source of output position p: the number of cumulative counts <= p (device-side; CuPy's
            # repeat takes no array of counts)
            mod = backend.xp(x.data)
            ends = mod.cumsum(counts)
            total = int(backend.host_read(ends[-1], "repeat with tensor repeats")) if n else 0
            sources = mod.searchsorted(ends, mod.arange(total), side="right")
            return GetItem.apply(x, _along(axis, sources), True)
        repeats = int(backend.host_read(counts.reshape(()), "repeat with tensor repeats").item())
    if repeats < 0:
        raise ValueError(f"repeat: repeats must be non-negative, got {repeats}")
    # (.., n, ..) -> (.., n, 1, ..) -> broadcast (.., n, r, ..) -> (.., n*r, ..): backward is a sum
    before, after = x.shape[:axis + 1], x.shape[axis + 1:]
    spread = broadcast_to(reshape(x, before + (1,) + after), before + (repeats,) + after)
    return reshape(spread, x.shape[:axis] + (n * repeats,) + after)


# --- joining and splitting ------------------------------------------------------------------------


def _piece_bounds(sizes):
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return tuple(bounds)


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *tensors, axis):
        ctx.axis = axis
        ctx.bounds = _piece_bounds(t.shape[axis] for t in tensors)
        return backend.xp(tensors[0].data).concatenate([t.data for t in tensors], axis=axis)

    @staticmethod
    def backward(ctx, g):
        pieces = Split.apply(g, ctx.bounds, ctx.axis)
        return tuple(p if need else None for p, need in zip(pieces, ctx.needs_input_grad))


class Split(Function):
    """Pieces x[start:stop] along an axis, for (start, stop) in bounds (views, as numpy.split)."""

    @staticmethod
    def forward(ctx, x, bounds, axis):
        ctx.bounds, ctx.axis, ctx.in_shape = bounds, axis, x.shape
        return tuple(x.data[_along(axis, slice(start, stop))] for start, stop in bounds)

    @staticmethod
    def backward(ctx, *grads):
        joined = Concatenate.apply(*grads, axis=ctx.axis)
        if _tiles(ctx.bounds, ctx.in_shape[ctx.axis]):
            return joined
        # NumPy allows split points out of order, so pieces may overlap or leave gaps: scatter-add them
        mod = backend.xp(joined.data)
        positions = mod.concatenate([mod.arange(start, stop) for start, stop in ctx.bounds])
        return IndexScatter.apply(joined, ctx.in_shape, _along(ctx.axis, positions), True)


def _tiles(bounds, total):
    """Whether the pieces are consecutive and cover [0, total) exactly."""
    expected = 0
    for start, stop in bounds:
        if start != expected:
            return False
        expected = stop
    return expected == total


def _tensor_list(tensors, op):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: need at least one tensor")
    like = next((t for t in tensors if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError(f"{op}: expected at least one Tensor among the inputs")
    return [t if isinstance(t, Tensor) else _as_tensor(t, like) for t in tensors]


def _as_tensor(value, like):
    """A non-tensor input (array, list, number) as a tensor on like's device; numbers infer dtype as gt.tensor."""
    if isinstance(value, numbers.Number):
        return as_tensor_like([value], like).reshape(())
    return as_tensor_like(value, like)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (axis=None: flatten them first); dtypes promote as NumPy."""
    tensors = _tensor_list(tensors, "concatenate")
    if axis is None:
        tensors, axis = [reshape(t, (-1,)) for t in tensors], 0
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("concatenate: 0-d tensors cannot be concatenated (use stack, or axis=None)")
    axis = _axis(axis, first.ndim, "concatenate")
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise ValueError(f"concatenate: shapes {first.shape} and {t.shape} differ outside axis {axis}")
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join tensors of one shape along a new axis."""
    tensors = _tensor_list(tensors, "stack")
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"stack: all tensors must have the same shape, got {shape} and {t.shape}")
    axis = _axis(axis, len(shape) + 1, "stack")
    return concatenate([expand_dims(t, axis) for t in tensors], axis)


def split(x, indices_or_sections, axis=0):
    """A list of pieces of x along `axis`, as numpy.split: N equal sections, or pieces between indices."""
    axis = _axis(axis, x.ndim, "split")
    n = x.shape[axis]
    if isinstance(indices_or_sections, numbers.Integral):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ValueError(f"split: the number of sections must be positive, got {sections}")
        if n % sections:
            raise ValueError(
                f"split: axis {axis} of size {n} does not divide into {sections} equal sections (shape {x.shape})"
            )
        points = [n // sections * i for i in range(1, sections)]
    else:
        points = [operator.index(p) for p in indices_or_sections]
    cuts = [0] + points + [n]
    bounds = []
    for lo, hi in zip(cuts, cuts[1:]):
        start, stop, _ = slice(lo, hi).indices(n)  # Python slice rules: negative points count from the end
        bounds.append((start, max(start, stop)))
    return list(Split.apply(x, tuple(bounds), axis))


# --- padding ------------------------------------------------------------------------------------------


def _pad_widths(pad_width, ndim):
    """((before, after),) * ndim from NumPy's forms: p, (p,), (before, after), or one pair per axis."""
    rows = (pad_width,) if isinstance(pad_width, numbers.Integral) else tuple(pad_width)
    if rows and all(isinstance(r, numbers.Integral) for r in rows):
        rows = (rows,)
    pairs = []
    for row in rows:
        row = (row,) if isinstance(row, numbers.Integral) else tuple(row)
        if len(row) not in (1, 2):
            raise ValueError(f"pad: pad_width {pad_width} is not (before, after) pairs")
        pairs.append((operator.index(row[0]), operator.index(row[-1])))
    if len(pairs) == 1:
        pairs *= ndim
    if len(pairs) != ndim:
        raise ValueError(f"pad: pad_width {pad_width} has {len(pairs)} pairs for a tensor with {ndim} dimensions")
    if any(w < 0 for pair in pairs for w in pair):
        raise ValueError(f"pad: pad_width must be non-negative, got {pad_width}")
    return tuple(pairs)


class PadConstant(Function):
    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.crop = tuple(slice(before, before + n) for (before, _), n in zip(widths, x.shape))
        return backend.xp(x.data).pad(x.data, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return GetItem.apply(g, ctx.crop, False)


# Modes that only copy elements of x: pad(arange(n)) along an axis names the source of each output element.
_COPY_MODES = {"reflect": "reflect", "symmetric": "symmetric", "edge": "edge", "replicate": "edge",
               "wrap": "wrap", "circular": "wrap"}


def pad(x, pad_width, mode="constant", constant_values=0):
    """Pad as numpy.pad; modes constant, reflect, symmetric, edge (alias replicate), wrap (alias circular)."""
    widths = _pad_widths(pad_width, x.ndim)
    if not any(before or after for before, after in widths):
        return x
    if mode == "constant":
        return PadConstant.apply(x, widths, constant_values)
    if mode not in _COPY_MODES:
        raise ValueError(f"pad: mode {mode!r} is not supported; use one of constant, {', '.join(_COPY_MODES)}")
    mod = backend.xp(x.data)
    for axis, (before, after) in enumerate(widths):
        if before or after:
            n = x.shape[axis]
            if n == 0:
                raise ValueError(f"pad: cannot extend the empty axis {axis} (shape {x.shape}) in mode {mode!r}")
            sources = mod.pad(mod.arange(n), (before, after), mode=_COPY_MODES[mode])
            x = GetItem.apply(x, _along(axis, sources), True)
    return x


# --- gathering ------------------------------------------------------------------------------------------


def take(x, indices, axis=None):
    """Elements at `indices` along `axis` (of the flattened x when None), as numpy.take.

    Repeated indices are allowed; their gradients add up.
    """
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    else:
        axis = _axis(axis, x.ndim, "take")
    if isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
        indices = operator.index(indices)
    else:
        indices = _integer_array(indices, x, "take", "indices")
    check_bounds(indices, axis, x.shape, "take")
    return GetItem.apply(x, _along(axis, indices), not isinstance(indices, int))


def take_along_axis(x, indices, axis=-1):
    """Pick x's elements along `axis` at `indices`, which has x's number of dimensions (as numpy)."""
    indices = _integer_array(indices, x, "take_along_axis", "indices")
    if axis is None:
        if indices.ndim != 1:
            raise ValueError(f"take_along_axis: with axis=None indices must be 1-D, got shape {indices.shape}")
        x, axis = reshape(x, (-1,)), 0
    if indices.ndim != x.ndim:
        raise ValueError(
            f"take_along_axis: indices of shape {indices.shape} and x of shape {x.shape} must have the same "
            "number of dimensions"
        )
    axis = _axis(axis, x.ndim, "take_along_axis")
    for d, (i, n) in enumerate(zip(indices.shape, x.shape)):
        if d != axis and i != n and 1 not in (i, n):
            raise ValueError(
                f"take_along_axis: indices of shape {indices.shape} do not broadcast against x of shape {x.shape} "
                f"outside axis {axis}"
            )
    check_bounds(indices, axis, x.shape, "take_along_axis")
    mod = backend.xp(x.data)
    index = tuple(
        indices if d == axis else mod.arange(n).reshape((1,) * d + (n,) + (1,) * (x.ndim - d - 1))
        for d, n in enumerate(x.shape)
    )
    return GetItem.apply(x, index, True)


# --- dtype, device, copies ---------------------------------------------------------------------------


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
    """Move to a device and/or cast to a dtype (no copy when nothing changes); differentiable.
    x.to(other) takes other's device and dtype (as PyTorch)."""
    if isinstance(device, Tensor):
        device, dtype = device.device, device.dtype
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
