"""Creating tensors: from data, filled, ranges, and random (seeded per device)."""
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
        return arr
    if isinstance(data, np.generic):
        arr = np.asarray(data)
    else:
        inferred = dtypes.infer_dtype(data)
        try:
            arr = np.asarray(data, dtype=dtype or inferred)
        except ValueError as e:
            raise ValueError(f"tensor: cannot build a tensor from ragged or inconsistent nested data ({e})") from None
        if dtype is None and inferred is None and arr.dtype == np.float64:
            arr = arr.astype(dtypes.get_default_dtype())  # nested lists of Python floats
    if arr.dtype.kind not in "biuf" and not dtypes.is_floating(arr.dtype):
        raise TypeError(f"tensor: expected numbers, got {type(data).__name__} data of dtype {arr.dtype}")
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
    return Tensor(a)


def from_dlpack(x):
    """A tensor sharing memory with any DLPack producer (NumPy, CuPy, PyTorch, ...)."""
    device_type, _ = x.__dlpack_device__()
    if device_type == 1:  # kDLCPU
        return Tensor(np.from_dlpack(x))
    return Tensor(backend.require_cupy().from_dlpack(x))


def _shape(shape):
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = shape[0]
    return tuple(int(s) for s in shape) if not isinstance(shape, (int, np.integer)) else (int(shape),)


def _float_or(dtype):
    return dtypes.as_dtype(dtype) or dtypes.get_default_dtype()


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.zeros(_shape(shape), _float_or(dtype)), requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.ones(_shape(shape), _float_or(dtype)), requires_grad)


def empty(*shape, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.empty(_shape(shape), _float_or(dtype)), requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    dtype = dtypes.as_dtype(dtype) or dtypes.infer_dtype(fill_value)
    return _make(_device(device).xp.full(_shape((shape,)), fill_value, dtype), requires_grad)


def _like(x, dtype, device):
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
    """As numpy.arange; float arguments give the default float dtype, ints int64."""
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, stop, step))
        dtype = dtypes.get_default_dtype() if is_float else dtypes.int64
    args = (0, start) if stop is None else (start, stop)
    return _make(_device(device).xp.arange(*args, step, dtype=dtypes.as_dtype(dtype)), requires_grad)


def linspace(start, stop, num=50, endpoint=True, dtype=None, device=None, requires_grad=False):
    xp = _device(device).xp
    return _make(xp.linspace(start, stop, num, endpoint=endpoint, dtype=_float_or(dtype)), requires_grad)


def eye(n, m=None, k=0, dtype=None, device=None, requires_grad=False):
    return _make(_device(device).xp.eye(n, m, k, dtype=_float_or(dtype)), requires_grad)


# --- random ------------------------------------------------------------------------------


def manual_seed(seed):
    """Seed every device's generator; runs after the same seed draw the same numbers on each device."""
    backend.manual_seed(seed)


def _random(device, draw, dtype, requires_grad):
    device = _device(device)
    arr = draw(backend.generator(device))
    return _make(arr.astype(_float_or(dtype), copy=False), requires_grad)


def rand(*shape, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1)."""
    shape = _shape(shape)
    return _random(device, lambda g: g.random(shape), dtype, requires_grad)


def randn(*shape, dtype=None, device=None, requires_grad=False):
    """Standard normal samples."""
    shape = _shape(shape)
    return _random(device, lambda g: g.standard_normal(shape), dtype, requires_grad)


def _affine(samples, scale, shift):
    """samples * scale + shift, in place (a 0-d array stays an array)."""
    samples *= scale
    samples += shift
    return samples


# uniform and normal from the generators' basic draws: CuPy's Generator has no normal() (nor, before
# CuPy 14, uniform()); NumPy's are low + (high - low) * random() and mean + std * standard_normal(),
# so the CPU draws are the same numbers either way


def uniform(low=0.0, high=1.0, shape=(), dtype=None, device=None, requires_grad=False):
    shape = _shape((shape,))
    return _random(device, lambda g: _affine(g.random(shape), high - low, low), dtype, requires_grad)


def normal(mean=0.0, std=1.0, shape=(), dtype=None, device=None, requires_grad=False):
    shape = _shape((shape,))
    return _random(device, lambda g: _affine(g.standard_normal(shape), std, mean), dtype, requires_grad)


def randint(low, high=None, shape=(), dtype=None, device=None):
    """Integers in [low, high) (or [0, low) when high is None), int64 by default."""
    if high is None:
        low, high = 0, low
    device = _device(device)
    arr = backend.generator(device).integers(low, high, _shape((shape,)))
    return Tensor(arr.astype(dtypes.as_dtype(dtype) or dtypes.int64, copy=False))
