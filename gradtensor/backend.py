"""Backend dispatch: which array library holds a tensor's data, and on which device.

Op code never imports numpy or cupy for computation; it asks `xp(array)` (Chainer's
get_array_module) for the module that owns an array. Every CPU/GPU difference lives here.
"""
import math

import numpy as np

_cupy = None
_cupy_checked = False


def cupy_module():
    """The cupy module when it imports and a CUDA device is usable, else None."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # no cupy, no driver, or no device: CPU only
            _cupy = None
        if _cupy is not None:
            peak_memory_tracker()  # from the first allocation on
    return _cupy


def xp(array):
    """The array module (numpy or cupy) that owns `array`."""
    if type(array) is np.ndarray or np.isscalar(array):
        return np
    cp = cupy_module()
    if cp is not None and isinstance(array, cp.ndarray):
        return cp
    return np


get_array_module = xp


class Device:
    """A device: "cpu" or "cuda:N"."""

    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, Device):
            type, index = type.type, type.index
        elif isinstance(type, str) and ":" in type:
            type, _, idx = type.partition(":")
            index = int(idx)
        if type not in ("cpu", "cuda"):
            raise RuntimeError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {type!r}")
        if type == "cuda" and index is None:
            index = current_cuda_index()
        self.type = type
        self.index = index if type == "cuda" else None

    def __eq__(self, other):
        if isinstance(other, str):
            other = Device(other)
        return isinstance(other, Device) and self.type == other.type and self.index == other.index

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.type == "cpu" else f"cuda:{self.index}"

    def __repr__(self):
        return f"device('{self}')"

    @property
    def xp(self):
        return np if self.type == "cpu" else require_cupy()


CPU = Device("cpu")


def require_cupy():
    cp = cupy_module()
    if cp is None:
        raise RuntimeError(
            "CUDA is not available: install cupy-cuda12x or cupy-cuda13x (pip install 'gradtensor[cuda12]') "
            "and make sure a GPU and its driver are visible"
        )
    return cp


def current_cuda_index():
    cp = cupy_module()
    return cp.cuda.Device().id if cp is not None else 0


def as_device(spec):
    if spec is None:
        return None
    if isinstance(spec, Device):
        return spec
    return Device(spec)


def device_of(array):
    if type(array) is np.ndarray:
        return CPU
    cp = cupy_module()
    if cp is not None and isinstance(array, cp.ndarray):
        return Device("cuda", array.device.id)
    return CPU


def to_device(array, device):
    """Move an array to `device` (a Device); no copy when it is already there."""
    if device.type == "cpu":
        return to_host(array)
    cp = require_cupy()
    if isinstance(array, cp.ndarray) and array.device.id == device.index:
        return array
    with cp.cuda.Device(device.index):
        return cp.asarray(array)


def to_host(array):
    if type(array) is np.ndarray:
        return array
    cp = cupy_module()
    if cp is not None and isinstance(array, cp.ndarray):
        return cp.asnumpy(array)
    return np.asarray(array)


def same_device(arrays):
    """True when every array lives on one device (the common all-NumPy case is checked cheaply)."""
    if all(type(a) is np.ndarray for a in arrays):
        return True
    devices = {device_of(a) for a in arrays}
    return len(devices) <= 1


class _PeakMemoryTracker:
    """CuPy's pool has no peak counter: a memory hook follows used bytes after each allocation."""

    def __init__(self, cp):
        pool = cp.get_default_memory_pool()
        tracker = self

        class Hook(cp.cuda.MemoryHook):
            name = "gradtensor_peak"

            def malloc_postprocess(self, **kwargs):
                tracker.peak = max(tracker.peak, pool.used_bytes())

        self._pool = pool
        self.peak = pool.used_bytes()
        self._hook = Hook()
        self._hook.__enter__()  # installed for the life of the process (per thread, as CuPy's hooks are)

    def reset(self):
        self.peak = self._pool.used_bytes()


_peak_tracker = None


def peak_memory_tracker():
    global _peak_tracker
    if _peak_tracker is None:
        _peak_tracker = _PeakMemoryTracker(require_cupy())
    return _peak_tracker


def matmul(a, b):
    """a @ b in the operands' dtype (ml_dtypes' bfloat16 matmul on the CPU returns float32)."""
    out = xp(a).matmul(a, b)
    if out.dtype != a.dtype and a.dtype == b.dtype:
        out = out.astype(a.dtype)
    return out


def einsum(subscripts, *arrays):
    """np.einsum in the operands' dtype; NumPy's einsum refuses ml_dtypes' bfloat16, so that goes via float32."""
    mod = xp(arrays[0])
    dtype = arrays[0].dtype
    if mod is np and dtype.kind == "V":
        return np.einsum(subscripts, *[a.astype(np.float32) for a in arrays], optimize=len(arrays) > 1).astype(dtype)
    return mod.einsum(subscripts, *arrays, optimize=len(arrays) > 1)


def scatter_add(array, index, values):
    """array[index] += values, adding once per occurrence of a repeated index (unlike `+=`)."""
    mod = xp(array)
    if mod is np or hasattr(mod.add, "at"):
        mod.add.at(array, index, values)
    else:  # older CuPy spells it cupyx.scatter_add
        import cupyx

        cupyx.scatter_add(array, index, values)


# --- special functions that NumPy lacks -------------------------------------------------

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def erf(x):
    """Error function, to double precision, for NumPy and CuPy arrays."""
    mod = xp(x)
    if mod is not np:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    try:
        import scipy.special

        return scipy.special.erf(x)
    except ImportError:
        return _erf_numpy(x)


def _erf_numpy(x):
    x = np.asarray(x)
    out_dtype = x.dtype if x.dtype.kind == "f" else np.float64
    z = np.abs(x.astype(np.float64))
    result = np.empty_like(z)
    small = z < 2.5
    # Series erf(z) = 2/sqrt(pi) exp(-z^2) sum 2^n z^(2n+1) / (1*3*...*(2n+1)): all terms positive.
    zs = z[small]
    term = zs.copy()
    total = zs.copy()
    z2 = zs * zs
    for n in range(1, 60):
        term = term * 2.0 * z2 / (2 * n + 1)
        total += term
    result[small] = _TWO_OVER_SQRT_PI * np.exp(-z2) * total
    # Continued fraction for erfc(z), z >= 2.5 (Lentz's method, fixed depth suffices at this range).
    zl = z[~small]
    frac = np.zeros_like(zl)
    for k in range(60, 0, -1):
        frac = (k / 2.0) / (zl + frac)
    erfc = np.exp(-zl * zl) / math.sqrt(math.pi) / (zl + frac)
    result[~small] = 1.0 - erfc
    return (np.sign(x) * result).astype(out_dtype, copy=False)


# --- random generators, one per device --------------------------------------------------

_seed = None
_generators = {}
_philox_counters = {}  # device -> [seed, offset]: the counter-based stream of fused dropout


def manual_seed(seed):
    global _seed
    _seed = int(seed)
    _generators.clear()
    _philox_counters.clear()


def generator(device):
    """The seeded random generator of `device` (NumPy Generator on CPU, CuPy's on GPU)."""
    gen = _generators.get(device)
    if gen is None:
        if device.type == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            cp = require_cupy()
            with cp.cuda.Device(device.index):
                gen = cp.random.default_rng(_seed)
        _generators[device] = gen
    return gen


def _philox_counter(device):
    counter = _philox_counters.get(device)
    if counter is None:
        # the manual seed when there is one (every device draws the same stream), else fresh entropy
        seed = _seed % 2**64 if _seed is not None else int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        counter = _philox_counters[device] = [seed, 0]
    return counter


def philox_advance(device, count):
    """(seed, offset) of the next `count` words of `device`'s counter-based (Philox) random stream,
    which fused dropout draws from; the offset moves past them, rounded up to whole Philox blocks of
    four words so every draw starts a block (the kernel's vectorised path needs that). The counter is
    part of the device's RNG state, so a replayed region (checkpointing) draws the same words."""
    counter = _philox_counter(device)
    seed, offset = counter
    counter[1] = offset + -(-int(count) // 4) * 4
    return seed, offset


def get_rng_state(device):
    """A snapshot of `device`'s random state (its generator and its Philox counter), for replaying
    random ops (checkpointing)."""
    import copy

    return copy.deepcopy(generator(device)), tuple(_philox_counter(device))


def set_rng_state(device, state):
    import copy

    gen, counter = state
    _generators[device] = copy.deepcopy(gen)
    _philox_counters[device] = list(counter)
