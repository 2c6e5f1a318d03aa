"""Creating tensors: from data, filled, ranges, and random (seeded per device)."""
import numbers
import operator

import numpy as np

from . import backend, dtypes
from .tensor import Tensor

__all__ = [
    "tensor", "asarray", "from_numpy", "from_dlpack", "zeros", "ones", "empty", "full", "zeros_like",
    "ones_like", "empty_like", "full_like", "arange", "linspace", "eye", "manual_seed", "rand", "randn",
    "randint", "uniform", "normal",
]


def _device(device):
    return backend.as_device(device) or backend.CPU


def _make(array, requires_grad):
    return Tensor(array, requires_grad=requires_grad)


def _numeric(array, op):
    """array itself, when it holds numbers a tensor can (bools, integers, floats)."""
    if array.dtype.kind not in "biuf" and not dtypes.is_floating(array.dtype):
        raise TypeError(f"{op}: expected numbers (bool, integer or floating), got dtype {array.dtype}")
    return array


_PLAIN_NUMBERS = frozenset((float, int, bool))


def _plain_numbers(data):
    """Whether data is Python numbers, or (nested) lists/tuples of them only: float64 from those is the
    default float, as a Python float alone gives; arrays, NumPy scalars and tensors inside keep theirs."""
    if not isinstance(data, (list, tuple)):
        return type(data) in _PLAIN_NUMBERS
    kinds = set(map(type, data))  # (one C pass over a long flat list)
    if kinds <= _PLAIN_NUMBERS:
        return True
    return all(_plain_numbers(item) for item in data)


def _convert(data, dtype, device, copy):
    """The array for tensor()/asarray(): keeps array dtypes, Python floats become the default float."""
    dtype = dtypes.as_dtype(dtype)
    if isinstance(data, Tensor):
        src_device = data.device
        data = data.data
    else:
        src_device = None
    if hasattr(data, "__cuda_array_interface__") or isinstance(data, np.ndarray) or src_device is not None:
        target = _device(device) if device is not None else (src_device or backend.device_of(data))
        arr = backend.to_device(data, target)
        if dtype is not None:
            arr = arr.astype(dtype, copy=copy)
        elif copy and arr is data:
            arr = arr.copy()
        return _numeric(arr, "tensor")
    if isinstance(data, np.generic):
        arr = np.asarray(data)
    else:
        inferred = dtypes.infer_dtype(data)
        try:
            arr = np.asarray(data, dtype=dtype or inferred)
        except ValueError as e:
            raise ValueError(f"tensor: cannot build a tensor from ragged or inconsistent nested data ({e})") from None
        except OverflowError as e:
            raise OverflowError(f"tensor: a value does not fit the dtype {dtype or inferred} ({e})") from None
        if dtype is None and inferred is None and arr.dtype == np.float64 and _plain_numbers(data):
            arr = arr.astype(dtypes.get_default_dtype())  # nested lists of Python floats
    _numeric(arr, "tensor")
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return backend.to_device(arr, _device(device))


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor holding a copy of `data` (Python numbers, lists, NumPy/CuPy arrays, tensors)."""
    return _make(_convert(data, dtype, device, copy=True), requires_grad)


def asarray(data, dtype=None, device=None, requires_grad=False):
    """As tensor(), but shares memory with an array on the same device when no cast is needed."""
    return _make(_convert(data, dtype, device, copy=False), requires_grad)


def from_numpy(a):
    """A tensor sharing memory with a NumPy array."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    return Tensor(_numeric(a, "from_numpy"))


def from_dlpack(x):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, ...)."""
    device_type, _ = x.__dlpack_device__()
    array = np.from_dlpack(x) if device_type == 1 else backend.require_cupy().from_dlpack(x)  # 1: kDLCPU
    return Tensor(_numeric(array, "from_dlpack"))


def _shape(shape, op):
    """A shape from sizes given as separate ints or as one sequence (or int)."""
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = shape[0]
    try:
        return (operator.index(shape),) if isinstance(shape, (int, np.integer)) else tuple(map(operator.index, shape))
    except TypeError:
        raise TypeError(f"{op}: sizes must be integers, got {shape!r}") from None


def _float_or(dtype):
    return dtypes.as_dtype(dtype) or dtypes.get_default_dtype()


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.zeros(_shape(shape, "zeros"), _float_or(dtype)), requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.ones(_shape(shape, "ones"), _float_or(dtype)), requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.empty(_shape(shape, "empty"), _float_or(dtype)), requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    if not isinstance(fill_value, (numbers.Number, np.generic)):
        raise TypeError(f"full: fill_value must be a number, got {type(fill_value).__name__}")
    dtype = dtypes.as_dtype(dtype) or dtypes.infer_dtype(fill_value)
    return _make(_numeric(_device(device).xp.full(_shape((shape,), "full"), fill_value, dtype), "full"), requires_grad)


def _like(x, dtype, device):
    if not isinstance(x, Tensor):
        raise TypeError(f"*_like: expected a Tensor to take the shape of, got {type(x).__name__}")
    return dtypes.as_dtype(dtype) or x.dtype, backend.as_device(device) or x.device


def zeros_like(x, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(x, dtype, device)
    return _make(device.xp.zeros(x.shape, dtype), requires_grad)


def ones_like(x, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(x, dtype, device)
    return _make(device.xp.ones(x.shape, dtype), requires_grad)


def empty_like(x, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(x, dtype, device)
    return _make(device.xp.empty(x.shape, dtype), requires_grad)


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(x, dtype, device)
    return _make(device.xp.full(x.shape, fill_value, dtype), requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None, requires_grad=False):
    """As numpy.arange; float arguments (Python, NumPy or 0-d tensors) give the default float dtype,
    ints int64. Narrow floats are computed in float64 and rounded once (as PyTorch), not accumulated."""
    start, stop, step = (v.item() if isinstance(v, Tensor) else v for v in (start, stop, step))
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        is_float = any(isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) for v in (start, stop, step))
        dtype = dtypes.get_default_dtype() if is_float else dtypes.int64
    dtype = dtypes.as_dtype(dtype)
    args = (0, start) if stop is None else (start, stop)
    xp = _device(device).xp
    if dtypes.is_floating(dtype) and dtype.itemsize < 8:
        return _make(xp.arange(*args, step, dtype=dtypes.float64).astype(dtype), requires_grad)
    return _make(xp.arange(*args, step, dtype=dtype), requires_grad)


def linspace(start, stop, num=50, endpoint=True, dtype=None, device=None, requires_grad=False):
    xp = _device(device).xp
    return _make(xp.linspace(start, stop, num, endpoint=endpoint, dtype=_float_or(dtype)), requires_grad)


def eye(n, m=None, k=0, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.eye(n, m, k, dtype=_float_or(dtype)), requires_grad)


# --- random ------------------------------------------------------------------------------


def manual_seed(seed):
    """Seed every device's generator; runs after the same seed draw the same numbers on each device."""
    backend.manual_seed(seed)


def _random(op, device, draw, dtype, requires_grad, below=None):
    """draw(generator) in dtype (a float dtype); `below`: the bound uniform samples stay under."""
    dtype = _float_or(dtype)
    if not dtypes.is_floating(dtype):
        raise TypeError(f"{op}: samples are floating point, got dtype {dtype} (randint draws integers)")
    arr = draw(backend.generator(_device(device))).astype(dtype, copy=False)
    if below is not None:
        arr = below_bound(arr, *below)
    return _make(arr, requires_grad)


def below_bound(samples, low, high):
    """Uniform samples of [low, high), already in their dtype, kept below high: a float64 draw just
    under it may round up to it in a narrower dtype (float32, half precision)."""
    mod = backend.xp(samples)
    top = mod.nextafter(mod.asarray(high, samples.dtype), mod.asarray(low, samples.dtype))
    return mod.minimum(samples, top, out=samples)


def _check_range(op, low, high):
    if not low <= high:
        raise ValueError(f"{op}: expected low <= high, got low={low}, high={high}")


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1)."""
    shape = _shape(shape, "rand")
    return _random("rand", device, lambda g: g.random(shape), dtype, requires_grad, below=(0.0, 1.0))


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples."""
    shape = _shape(shape, "randn")
    return _random("randn", device, lambda g: g.standard_normal(shape), dtype, requires_grad)


def _affine(samples, scale, shift):
    """samples * scale + shift, in place (a 0-d array stays an array)."""
    samples *= scale
    samples += shift
    return samples


# uniform and normal from the generators' basic draws: CuPy's Generator has no normal() (nor, before
# CuPy 14, uniform()); NumPy's are low + (high - low) * random() and mean + std * standard_normal(),
# so the CPU draws are the same numbers either way


def uniform(low=0.0, high=1.0, shape=(), dtype=None, device=None, requires_grad=False):
    """Uniform samples in [low, high)."""
    _check_range("uniform", low, high)
    shape = _shape((shape,), "uniform")
    return _random("uniform", device, lambda g: _affine(g.random(shape), high - low, low), dtype, requires_grad,
                   below=(low, high))


def normal(mean=0.0, std=1.0, shape=(), dtype=None, device=None, requires_grad=False):
    if not std >= 0:
        raise ValueError(f"normal: std must be non-negative, got {std}")
    shape = _shape((shape,), "normal")
    return _random("normal", device, lambda g: _affine(g.standard_normal(shape), std, mean), dtype, requires_grad)


def randint(low, high=None, shape=(), dtype=None, device=None):
    """Integers in [low, high) (or [0, low) when high is None), int64 by default."""
    if high is None:
        low, high = 0, low
    device = _device(device)
    arr = backend.generator(device).integers(low, high, _shape((shape,), "randint"))
    return Tensor(arr.astype(dtypes.as_dtype(dtype) or dtypes.int64, copy=False))
