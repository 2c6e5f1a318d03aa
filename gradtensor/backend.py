"""Backend dispatch: which array library holds a tensor's data, and on which device.

Op code never imports numpy or cupy for computation; it asks `xp(array)` (Chainer's
get_array_module) for the module that owns an array. Every CPU/GPU difference lives here.

It also holds the one gate every host read goes through (`host_read`, `host_check`): while a CUDA
graph is captured (gradtensor.cuda_graph) a host read cannot happen, so the gate raises there, and
notes the read during the eager warm-up that decides whether a step can be captured at all.
"""
import contextlib
import copy
import os
import sys
import threading

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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_host_memory(environ=os.environ):
    """Have glibc's malloc keep large freed blocks for reuse; True when it was set.

    By default glibc gives large blocks back to the system as they are freed (mmap, and trimming the
    heap's top), so a training step, whose activations come and go, faults the same pages in again
    every step: a sixth to a third of a CPU step on virtual machines, where page faults are slow.
    Like the caching allocators of other frameworks, this keeps up to 256 MiB of freed memory (and
    serves blocks up to 32 MiB from it). A setting of the whole process, made when gradtensor is
    imported; left alone when GRADTENSOR_KEEP_FREED_MEMORY=0, when the user set these thresholds
    (MALLOC_*_ variables or glibc.malloc tunables), and where the C library has no mallopt."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (environ.get("GRADTENSOR_KEEP_FREED_MEMORY", "1") == "0"
            or any(f"MALLOC_{name.upper()}_" in environ or f"glibc.malloc.{name}" in tunables
                   for name in ("mmap_threshold", "trim_threshold", "top_pad", "mmap_max"))):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))


if sys.platform.startswith("linux"):
    keep_freed_host_memory()


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
            spec = type
            type, _, idx = type.partition(":")
            if not idx.isdigit():
                raise RuntimeError(f"device: expected 'cpu', 'cuda' or 'cuda:N' with N >= 0, got {spec!r}")
            index = int(idx)
        if type not in ("cpu", "cuda"):
            raise RuntimeError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {type!r}")
        if type == "cuda" and index is None:
            index = current_cuda_index()
        self.type = type
        self.index = index if type == "cuda" else None

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = Device(other)
            except RuntimeError:  # not a device name: not this device
                return False
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
        return to_host(array) if xp(array) is not np else np.asarray(array)
    cp = require_cupy()
    if isinstance(array, cp.ndarray) and array.device.id == device.index:
        return array
    with cp.cuda.Device(device.index):
        if capturing() and isinstance(array, np.ndarray) and array.ndim:
            # cp.asarray would stage the copy in a pinned buffer that CuPy recycles when an event on
            # the capturing stream completes, which it never reports: the graph gets a buffer of its own
            from .cuda_kernels import _captured_upload

            return _captured_upload(cp, np.ascontiguousarray(array))
        return cp.asarray(array)


def from_host(values, device):
    """Host data (a list, a NumPy array) as an array on `device` (capture-safe, as to_device)."""
    return to_device(np.asarray(values), device)


def to_host(array):
    """A NumPy version of `array` (itself when it already is one): a host read (see host_read)."""
    return host_read(array, "a copy to the host")


def _copy_to_host(array):
    if type(array) is np.ndarray:
        return array
    cp = cupy_module()
    if cp is not None and isinstance(array, cp.ndarray):
        return cp.asnumpy(array)
    return np.asarray(array)


def copy_into(target, source):
    """target[...] = source, by one device-to-device memcpy when both are contiguous CuPy arrays of one
    dtype and size (a CUDA-graph replay copies its inputs so, on the current stream)."""
    cp = cupy_module()
    if (cp is not None and isinstance(target, cp.ndarray) and isinstance(source, cp.ndarray)
            and target.dtype == source.dtype and target.size == source.size
            and target.flags.c_contiguous and source.flags.c_contiguous):
        target.data.copy_from_device_async(source.data, source.nbytes)
    else:
        target[...] = source


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


def broadcast_to(array, shape):
    """xp.broadcast_to(array, shape): a read-only view. NumPy's is a Python function that costs more than
    the small arrays it views (a reduction's backward calls it every step), so for a C-contiguous NumPy
    array of a built-in dtype the view is made directly."""
    if type(array) is np.ndarray and array.dtype.isbuiltin == 1 and array.flags.c_contiguous and array.size:
        if not array.ndim:  # (a full reduction's gradient: every stride 0)
            if 0 in shape:
                return xp(array).broadcast_to(array, shape)
            view = np.ndarray(shape, array.dtype, array, 0, (0,) * len(shape))
            view.setflags(write=False)
            return view
        lead = len(shape) - array.ndim
        strides = [0] * lead
        for wanted, have, stride in zip(shape[lead:], array.shape, array.strides):
            if have != wanted and have != 1:
                break
            strides.append(stride if have == wanted else 0)
        else:
            if lead >= 0 and 0 not in shape:
                view = np.ndarray(shape, array.dtype, array, 0, strides)
                view.setflags(write=False)
                return view
    return xp(array).broadcast_to(array, shape)


def ones_like(array):
    """xp.ones_like(array); a 0-d NumPy one (the seed of every loss.backward()) is made directly, at a
    third of the cost of NumPy's Python wrapper."""
    if type(array) is np.ndarray and array.ndim == 0:
        return np.array(1, array.dtype)
    return xp(array).ones_like(array)


def reduce_sum(array, axes, keepdims):
    """array.sum(axis=axes, keepdims=keepdims) as an array (NumPy returns a scalar for a full reduction;
    add.reduce into a 0-d array skips that and the method's Python wrapper, on the path of every loss,
    for the dtypes that sum in their own: not bools and narrow integers, which NumPy widens)."""
    dtype = array.dtype
    if (type(array) is np.ndarray and not keepdims and len(axes) == array.ndim and dtype.isnative
            and (dtype.kind not in "biu" or dtype.itemsize == 8)):
        return np.add.reduce(array, axes, None, np.empty((), dtype))
    return array.sum(axis=axes, keepdims=keepdims)


def matmul(a, b):
    """a @ b in the operands' dtype (ml_dtypes' bfloat16 matmul on the CPU returns float32). While a CUDA
    graph is captured, CuPy refuses cuBLAS: the product then calls cuBLAS itself (cuda_gemm)."""
    mod = xp(a)
    if mod is not np and capturing():
        from .cuda_gemm import captured_matmul

        return captured_matmul(a, b)
    out = mod.matmul(a, b)
    if out.dtype != a.dtype and a.dtype == b.dtype:
        out = out.astype(a.dtype)
    return out


def svd(a):
    """The reduced SVD (U, S, Vh) of a stack of matrices, in a's dtype (the CPU's LAPACK has no half
    precisions: those go via float32)."""
    mod = xp(a)
    if mod is not np:
        capture_blocker("a singular value decomposition (cuSOLVER, which CuPy refuses while a stream is captured)")
    if a.dtype.itemsize < 4:
        return tuple(f.astype(a.dtype) for f in mod.linalg.svd(a.astype(mod.float32), full_matrices=False))
    return tuple(mod.linalg.svd(a, full_matrices=False))


def einsum(subscripts, *arrays):
    """np.einsum in the operands' dtype; NumPy's einsum refuses ml_dtypes' bfloat16, so that goes via float32."""
    mod = xp(arrays[0])
    dtype = arrays[0].dtype
    if mod is not np:
        capture_blocker("einsum (CuPy contracts through cuBLAS, which it refuses while a stream is captured)")
    if mod is np and dtype.kind == "V":
        return np.einsum(subscripts, *[a.astype(np.float32) for a in arrays], optimize=len(arrays) > 1).astype(dtype)
    return mod.einsum(subscripts, *arrays, optimize=len(arrays) > 1)


def scatter_add(array, index, values):
    """array[index] += values, adding once per occurrence of a repeated index (unlike `+=`)."""
    mod = xp(array)
    if mod is not np and array.dtype.kind == "V":  # bfloat16: CuPy's add.at takes atomicAdd types only
        wide = array.astype(mod.float32)
        scatter_add(wide, index, values.astype(mod.float32))
        array[...] = wide.astype(array.dtype)
        return
    if mod is np or hasattr(mod.add, "at"):
        mod.add.at(array, index, values)
    else:  # older CuPy spells it cupyx.scatter_add
        import cupyx

        cupyx.scatter_add(array, index, values)


# --- special functions that NumPy lacks -------------------------------------------------

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


# erf's rational approximations from the Cephes Math Library (ndtr.c, public domain): to 5e-16 relative
# in float64. |x| <= 1: erf(x) = x * T(x^2) / U(x^2); 1 < |x| < 8: erfc(|x|) = exp(-x^2) P(|x|) / Q(|x|)
# (past 8, erfc < 1e-29 and erf is 1 to double precision). Highest power first; U and Q lead with 1.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)


def _polynomial(coefficients, x):
    total = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        total *= x
        total += c
    return total


def _erf_numpy(x):
    """erf in the input's float dtype (float64 for other inputs): both approximations over the whole
    array, each on its range clipped (no inf/inf), then chosen per element."""
    x = np.asarray(x)
    x = x.astype(x.dtype if x.dtype.kind == "f" else np.float64, copy=False)
    z = np.abs(x)
    near = np.clip(x, -1.0, 1.0)
    near_sq = near * near
    inner = near * _polynomial(_ERF_T, near_sq) / _polynomial(_ERF_U, near_sq)
    far = np.clip(z, 1.0, 8.0)
    outer = 1.0 - np.exp(-far * far) * _polynomial(_ERFC_P, far) / _polynomial(_ERFC_Q, far)
    return np.where(z <= 1.0, inner, np.copysign(outer, x)).astype(x.dtype, copy=False)


# --- random generators, one per device --------------------------------------------------

_seed = None
_generators = {}
_philox_counters = {}  # device -> [seed, offset]: the counter-based stream of fused dropout


def manual_seed(seed):
    global _seed
    _seed = int(seed) % 2**64  # (a negative seed as PyTorch takes it: NumPy's generators need one >= 0)
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
        seed = _seed if _seed is not None else int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        counter = _philox_counters[device] = [seed, 0]
    return counter


def philox_advance(device, count):
    """(seed, offset) of the next `count` words of `device`'s counter-based (Philox) random stream,
    which fused dropout draws from; the offset moves past them, rounded up to whole Philox blocks of
    four words so every draw starts a block (the kernel's vectorised path needs that). The counter is
    part of the device's RNG state, so a replayed region (checkpointing) draws the same words."""
    # the offset lives on the host: a CUDA graph would replay the same draws every time
    capture_blocker("dropout draws random numbers (a CUDA graph would replay the same ones)")
    counter = _philox_counter(device)
    seed, offset = counter
    counter[1] = offset + -(-int(count) // 4) * 4
    return seed, offset


def get_rng_state(device):
    """A snapshot of `device`'s random state (its generator and its Philox counter), for replaying
    random ops (checkpointing)."""
    return _copy_generator(generator(device)), tuple(_philox_counter(device))


def set_rng_state(device, state):
    gen, counter = state
    _generators[device] = _copy_generator(gen)
    _philox_counters[device] = list(counter)


def _copy_generator(gen):
    """A deep copy of a random generator. CuPy's BitGenerator holds a threading.Lock, which deepcopy
    cannot copy: the copy gets a lock of its own (its state array is copied as usual)."""
    lock = getattr(getattr(gen, "bit_generator", None), "lock", None)
    return copy.deepcopy(gen, {} if lock is None else {id(lock): threading.Lock()})


# --- CUDA-graph capture: the host-read gate and the objects a captured step uses ----------------


class GraphCaptureError(RuntimeError):
    """This step cannot be captured into a CUDA graph (the message says why)."""


class HostReadError(GraphCaptureError):
    """A device value was read on the host while host reads are forbidden (CUDA-graph capture)."""


class GraphSession:
    """What a CUDA-graph wrapper learns while it warms up and captures a step.

    `participants`: the stateful objects the step used (optimizers, GradScalers), in order of first
    use; they switch to their capturable form (scalars in device arrays, GradScaler's skip decided on
    the device) when they join. `blockers`: what the eager warm-up met that a capture cannot hold
    (host reads, random draws), described for the fallback warning.
    """

    def __init__(self):
        self.participants = []
        self.blockers = []
        self.keep_alive = []  # device buffers made outside the graph's memory pool that its work reads
        # the .grad tensors that existed when the capture began, by id (held, so no id is reused meanwhile)
        self.grads_before = {}
        self.capturing = False


_session = None  # the GraphSession of the warm-up or capture under way, else None


@contextlib.contextmanager
def _session_as(session):
    global _session
    saved, _session = _session, session
    try:
        yield session
    finally:
        _session = saved


def graph_warmup(session=None):
    """Context for the eager warm-up of a step that is to be captured: objects used inside join the
    session (a new GraphSession unless one is given) and capture blockers are noted in its
    `blockers` instead of raising."""
    session = session or GraphSession()
    session.capturing = False
    return _session_as(session)


@contextlib.contextmanager
def forbid_host_reads(session=None):
    """Context for capturing a step (and for CPU tests proving that a step could be captured): every
    host read gradtensor makes raises HostReadError, other capture blockers GraphCaptureError, and
    validation checks that need a device value are skipped. `session` is the warm-up's, whose
    participants stay joined."""
    session = session or GraphSession()
    saved = session.capturing
    session.capturing = True
    try:
        with _session_as(session):
            yield session
    finally:
        session.capturing = saved


def capturing():
    """True while a step is captured (inside forbid_host_reads)."""
    return _session is not None and _session.capturing


def accumulating_into(grad):
    """Called before a backward adds into an existing .grad: a graph captured so would read a gradient
    made before the step (freed once the step rebinds .grad, and never zeroed by the replays)."""
    if _session is not None and _session.capturing and id(grad) in _session.grads_before:
        capture_blocker("the step adds gradients into .grad tensors from before it (call optimizer.zero_grad() "
                        "at the step's start)")


def join_graph_session(participant):
    """Called by stateful objects each time a step uses them: True inside a graph's warm-up or
    capture, after adding `participant` to the session (the caller then uses its capturable form)."""
    session = _session
    if session is None:
        return False
    if not any(p is participant for p in session.participants):
        session.participants.append(participant)
    return True


def keep_alive_with_graph(buffer):
    """While a step is captured: keep `buffer` (something the captured work reads or writes, e.g. a
    cached pointer table) alive as long as the graph."""
    if capturing():
        _session.keep_alive.append(buffer)


def capture_blocker(cause, error=GraphCaptureError):
    """Report something a CUDA graph cannot hold: raised while capturing, noted during a warm-up
    (with the user's line that led to it), nothing otherwise."""
    session = _session
    if session is None:
        return
    where = _user_frame()
    described = f"{cause} (at {where})" if where else cause
    if session.capturing:
        raise error(f"{described}: a CUDA graph cannot capture it")
    if described not in session.blockers:
        session.blockers.append(described)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_gradtensor(frame):
    """(the first frame at or above `frame` whose code is not gradtensor's, how many frames up it is):
    the user's code that called in, for messages and warnings.warn's stacklevel."""
    levels = 0
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, levels = frame.f_back, levels + 1
    return frame, levels


def _user_frame():
    """file:line of the innermost caller outside gradtensor, or None."""
    frame, _ = outside_gradtensor(sys._getframe(1))
    return None if frame is None else f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def host_read(array, what):
    """`array` as a NumPy array (a copy when it lives on the GPU): the gate every host read in
    gradtensor goes through. `what` names the reader for the error (e.g. "Tensor.item()"). Raises
    HostReadError while a CUDA graph is captured, whatever the device (so CPU tests can prove a step
    reads nothing back)."""
    capture_blocker(f"{what} reads a device value on the host", HostReadError)
    return _copy_to_host(array)


def host_check(failed):
    """bool(failed) for a validation check whose outcome lives on the device (e.g. "an index is out
    of range"): read on the host, except while a CUDA graph is captured, where it is skipped (False):
    the eager warm-up before the capture ran it."""
    if capturing():
        return False
    return bool(_copy_to_host(failed))
