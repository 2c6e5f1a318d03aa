"""2-D pooling: max (Functions routing gradients to each window's argmax), average
(im2col + mean) and adaptive average (two matmuls with constant averaging matrices)."""
import math

from ... import backend, dtypes
from ...autograd.function import Function
from ...tensor import Tensor
from ._util import as_tuple, batched, unbatched
from ._window import Unfold, make_window, padded


def _pool_window(name, input, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = as_tuple(kernel_size, 2, name, "kernel_size")
    stride = kernel if stride in (None, (), []) else as_tuple(stride, 2, name, "stride")
    pad = as_tuple(padding, 2, name, "padding")
    dilation = as_tuple(dilation, 2, name, "dilation")
    pad_hi = []
    for n, k, s, p, d in zip(input.shape[2:], kernel, stride, pad, dilation):
        span = d * (k - 1) + 1
        if k < 1 or s < 1 or d < 1 or p < 0 or 2 * p > k:
            raise ValueError(
                f"{name}: need positive kernel_size, stride and dilation and padding at most half the kernel, "
                f"got kernel_size {kernel}, stride {stride}, padding {pad}, dilation {dilation}"
            )
        out = (n + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input or left padding
            out -= 1
        if out < 1:
            raise ValueError(f"{name}: input of shape {input.shape} (padding {pad}) is smaller than the kernel {kernel}")
        pad_hi.append(max(p, (out - 1) * s + span - n - p))
    return make_window(name, input.shape[2:], kernel, stride, dilation, pad, tuple(pad_hi))


# --- max pooling ---------------------------------------------------------------------------


def _max_and_winners(data, window):
    """Max over each window and which kernel offset won it (the first maximum; NaN wins, as PyTorch)."""
    mod = backend.xp(data)
    source = padded(data, window, -math.inf)
    best = arg = None
    # Plain ufuncs in place (a masked select over strided views costs several times more): maximum
    # keeps NaN as `wins` does, and as offsets come in increasing order, a win makes arg = k the
    # largest yet
    for k, offset in enumerate(window.offsets()):
        candidate = source[window.index(offset)]
        if best is None:
            best = candidate.copy()
            arg = mod.zeros(best.shape, dtype=dtypes.uint8 if math.prod(window.kernel) <= 256 else dtypes.int32)
            continue
        wins = candidate > best
        wins |= mod.isnan(candidate)
        won = wins.astype(arg.dtype)
        won *= k
        mod.maximum(arg, won, out=arg)
        mod.maximum(best, candidate, out=best)
    if window.is_padded:  # a window whose inputs are all -inf ties with its padding: its first input wins
        arg = mod.where(mod.isneginf(best), _first_input_offset(window, mod).astype(arg.dtype), arg)
    return best, arg


def _first_input_offset(window, mod):
    """Per output position, the (row-major) kernel offset of the first input its window reads that is
    not padding; shaped to broadcast against the output."""
    flat = 0
    ndim = len(window.kernel)
    for axis, (k, s, d, lo, n) in enumerate(
            zip(window.kernel, window.stride, window.dilation, window.pad_lo, window.out_size)):
        start = mod.arange(n) * s  # each window's first position in the padded input
        first = mod.clip(-((start - lo) // d), 0, k - 1)  # the first kernel index at or past lo
        flat = flat * k + first.reshape((n,) + (1,) * (ndim - 1 - axis))
    return flat


class _WindowScatter(Function):
    """Send each output's gradient to the input its window picked (arg: winning kernel offset)."""

    @staticmethod
    def forward(ctx, g, arg, window):
        ctx.arg, ctx.window = arg, window
        mod = backend.xp(g.data)
        acc = mod.zeros(g.shape[:2] + window.padded_size, dtype=g.dtype)
        routed = mod.empty_like(g.data) if window.overlaps else None  # reused for every offset
        for k, offset in enumerate(window.offsets()):
            if routed is None:  # every input lies in one window at most: written straight into place
                mod.multiply(g.data, arg == k, out=acc[window.index(offset)])
            else:  # windows share inputs, whose gradients add up
                mod.multiply(g.data, arg == k, out=routed)
                acc[window.index(offset)] += routed
        return window.crop(acc)

    @staticmethod
    def backward(ctx, gg):
        return _WindowSelect.apply(gg, ctx.arg, ctx.window)


class _WindowSelect(Function):
    """Pick, for every output, the input at its window's offset arg (adjoint of _WindowScatter)."""

    @staticmethod
    def forward(ctx, x, arg, window, selected=None):
        """selected: the result, when the caller has it already (max pooling finds it with arg)."""
        ctx.arg, ctx.window = arg, window
        if selected is not None:
            return selected
        mod = backend.xp(x.data)
        source = padded(x.data, window, 0)
        out = mod.zeros(arg.shape, dtype=x.dtype)
        for k, offset in enumerate(window.offsets()):
            out = mod.where(arg == k, source[window.index(offset)], out)
        return out

    @staticmethod
    def backward(ctx, g):
        return _WindowScatter.apply(g, ctx.arg, ctx.window)


def _flat_indices(arg, window):
    """PyTorch's return_indices: the winner's flat position h * W + w within its input plane."""
    mod = backend.xp(arg)
    kernel_w = window.kernel[1]
    ki, kj = arg // kernel_w, arg % kernel_w
    rows = mod.arange(window.out_size[0]).reshape(-1, 1) * window.stride[0] - window.pad_lo[0]
    cols = mod.arange(window.out_size[1]) * window.stride[1] - window.pad_lo[1]
    h = rows + ki.astype(dtypes.int64) * window.dilation[0]
    w = cols + kj.astype(dtypes.int64) * window.dilation[1]
    return Tensor(h * window.in_size[1] + w)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over kernel_size windows of (N, C, H, W) (or (C, H, W)); padding counts as -inf."""
    x, added = batched(input, 2, "max_pool2d")
    window = _pool_window("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    best, arg = _max_and_winners(x.data, window)
    out = unbatched(_WindowSelect.apply(x, arg, window, best), added)
    if return_indices:
        return out, unbatched(_flat_indices(arg, window), added)
    return out


# --- average pooling ---------------------------------------------------------------------------


def _window_counts(mod, n, k, s, p, out, include_pad):
    """Per output position along one axis: how many window elements the divisor counts."""
    start = mod.arange(out) * s - p
    end = mod.minimum(start + k, n + p)  # ceil_mode windows may run past the right padding
    if not include_pad:
        start, end = mod.maximum(start, 0), mod.minimum(end, n)
    return end - start


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Mean over kernel_size windows; zero padding counts in the divisor when count_include_pad."""
    x, added = batched(input, 2, "avg_pool2d")
    window = _pool_window("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    total = Unfold.apply(x, window).sum(axis=(2, 3))
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError("avg_pool2d: divisor_override must not be zero")
        return unbatched(total / divisor_override, added)
    mod = backend.xp(x.data)
    counts = [
        _window_counts(mod, n, k, s, p, o, count_include_pad)
        for n, k, s, p, o in zip(window.in_size, window.kernel, window.stride, window.pad_lo, window.out_size)
    ]
    divisor = (counts[0].reshape(-1, 1) * counts[1]).astype(x.dtype)
    return unbatched(total / Tensor(divisor), added)


# --- adaptive average pooling: out = A_h @ x @ A_w^T with constant averaging matrices --------


def _averaging_matrix(mod, n_in, n_out, dtype):
    """(n_out, n_in): row i averages input positions floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1."""
    i = mod.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    j = mod.arange(n_in)
    inside = (j >= start.reshape(-1, 1)) & (j < end.reshape(-1, 1))
    return (inside / (end - start).reshape(-1, 1)).astype(dtype)


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (an int, or (H, W) with None keeping that input size)."""
    x, added = batched(input, 2, "adaptive_avg_pool2d")
    sizes = (output_size, output_size) if output_size is None or isinstance(output_size, int) else tuple(output_size)
    if len(sizes) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or 2 values, got {output_size}")
    sizes = tuple(n if o is None else int(o) for n, o in zip(x.shape[2:], sizes))
    if any(o < 1 for o in sizes) or any(n < 1 for n in x.shape[2:]):
        raise ValueError(f"adaptive_avg_pool2d: cannot pool input of shape {input.shape} to size {sizes}")
    mod = backend.xp(x.data)
    rows = Tensor(_averaging_matrix(mod, x.shape[2], sizes[0], x.dtype))
    cols = Tensor(_averaging_matrix(mod, x.shape[3], sizes[1], x.dtype).T.copy())
    return unbatched(rows @ (x @ cols), added)
