"""The CUDA kernels (kernels/*.cu) against their references on machines without a GPU, CI included.

tests/test_kernels_gpu.py needs a GPU, so CI skips it. Here the kernel sources themselves are compiled
with g++ against a CPU emulation of the CUDA built-ins (tests/kernel_emulation: each CUDA thread a fiber,
the blocks one after another) and launched through gradtensor's real launchers (gradtensor.cuda_kernels),
which are handed a stand-in for CuPy made of NumPy. The cases are the GPU tests' (the kernel tests of
tests/test_kernels_gpu.py themselves, run on the launchers through `on_launchers`, and others at the
same sizes and tolerances: float32 within a normwise relative error of 1e-5, float16 within 1e-2,
dropout bit for bit), plus special values, operands aligned unalike and the device-side scalars of
captured optimizer steps.

What this checks: the kernels' logic (indexing, the 16-byte packed paths with their scalar heads and
tails, reductions across warps and blocks, grid-stride loops, multi-tensor chunks, Philox streams), the
type of every launch argument against the kernel's parameter, the alignment of vector accesses, writes
outside the arrays, and missing barriers (the emulator lets threads run as far ahead of the others as
the barriers allow). What it cannot: the GPU's own arithmetic (its expf and friends differ from the
host's in the last bits, well inside the tolerances), performance, and races that need two threads to
run truly at once (atomics, memory ordering). Skipped when g++ is missing or cannot build the emulation
(C++17 and ucontext).
"""
import ctypes
import inspect
import math
import pathlib
import shutil
import subprocess
import types

import numpy as np
import pytest

import test_kernels_gpu as gpu  # its helpers find CuPy as gpu.cp, which the `cp` fixture replaces
from test_kernels_compile import ENTRY_POINTS
from test_kernels_gpu import ADAM_CONFIGS, DTYPES, TENSOR_SIZES, assert_all_close, assert_close, rand, tensor_set, to_device

from gradtensor import backend, cuda_kernels
from gradtensor import fused_reference as reference
from gradtensor._kernel_files import kernel_dir, kernel_names, kernel_source

EMULATION_DIR = pathlib.Path(__file__).parent / "kernel_emulation"
CXX = shutil.which("g++")
# the language standard NVRTC compiles the kernels with, so that what it would reject fails here too
CXX_STANDARD = next(option[1:] for option in cuda_kernels.COMPILE_OPTIONS if option.startswith("--std="))
CXXFLAGS = [CXX_STANDARD, "-O1", "-fPIC", "-pthread", "-DGT_CPU_EMULATION", "-I", str(kernel_dir()),
            "-I", str(EMULATION_DIR)]
# The emulated device's multiprocessors: the launchers size grids by them, so with one the grids are
# small (fast here) and the grid-stride loops over rows and elements go round more than once.
MULTIPROCESSORS = 1


# --- building the emulation ---------------------------------------------------------------------------

# What the emulation needs from the compiler, tried on its own first: without it the module is skipped,
# whereas a kernel that does not build for the emulation is a failure.
_COMPILER_PROBE = r"""
#include <ucontext.h>
#include <string>
#include <type_traits>
#include <utility>
template <typename... P> std::string codes(void (*)(P...)) {
    std::string s;
    ((s += std::is_pointer_v<P> ? "*" : "."), ...);
    return s;
}
void kernel(int, float*) {}
int main() {
    ucontext_t context;
    getcontext(&context);
    return (int)codes(kernel).size();
}
"""


def _wrapper_source(file_name):
    """A translation unit compiling kernels/`file_name` for the emulation and exporting its entry points
    (the names tests/test_kernels_compile.py lists, which nvcc checks where it is installed)."""
    lines = [f"// kernels/{file_name} for the CPU emulation (written by {__name__})",
             '#include "emu.h"', f'#include "{file_name}"']
    lines += [f"GT_EMU_EXPORT({name})" for name in sorted(ENTRY_POINTS[file_name])]
    return "\n".join(lines) + "\n"


def _run_all(commands):
    """Runs the commands at once (each g++ uses one core); [(return code, output)]."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for command in commands]
    results = []
    for process in processes:
        output, _ = process.communicate()
        results.append((process.returncode, output))
    return results


@pytest.fixture(scope="session")
def emulation(tmp_path_factory):
    """The kernels built for the CPU emulation (once per session), as a loaded shared library."""
    if CXX is None:
        pytest.skip("g++ not found: the kernels' CPU emulation is built with it")
    build = tmp_path_factory.mktemp("kernel_emulation")
    probe = build / "probe.cpp"
    probe.write_text(_COMPILER_PROBE)
    result = subprocess.run([CXX, *CXXFLAGS, "-fsyntax-only", str(probe)], capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"g++ cannot build the kernels' CPU emulation ({CXX_STANDARD}, ucontext): {reason}")
    sources = [EMULATION_DIR / "emu.cpp", EMULATION_DIR / "selftest.cpp"]
    for name in sorted(ENTRY_POINTS):
        sources.append(build / f"{pathlib.Path(name).stem}_emulated.cpp")
        sources[-1].write_text(_wrapper_source(name))
    objects = [build / f"{source.stem}.o" for source in sources]
    results = _run_all([[CXX, *CXXFLAGS, "-c", str(s), "-o", str(o)] for s, o in zip(sources, objects)])
    errors = [f"{source.name}:\n{output}" for source, (code, output) in zip(sources, results) if code != 0]
    if errors:
        pytest.fail("the kernels do not build for the CPU emulation:\n" + "\n".join(errors), pytrace=False)
    library = build / "libgt_kernels_emulated.so"
    link = subprocess.run([CXX, "-shared", "-pthread", "-o", str(library), *map(str, objects)],
                          capture_output=True, text=True)
    if link.returncode != 0:
        pytest.fail(f"linking the CPU emulation failed:\n{link.stdout}{link.stderr}", pytrace=False)
    return ctypes.CDLL(str(library))


# --- the stand-in for CuPy ------------------------------------------------------------------------------


class KernelEmulationError(RuntimeError):
    """A launch the emulator refused or stopped; the message says why (e.g. a misaligned access)."""


class DeviceArray(np.ndarray):
    """An array in the emulated device's memory: a NumPy array, whose memory the kernels read and
    write, that gives its address as `.data.ptr` as a CuPy array does."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


class EmulatedKernel:
    """A kernel of the emulation library, called as a cupy.RawKernel is: kernel(grid, block, args).
    Every argument is checked against the kernel's parameter: a pointer takes a device array of the
    pointee's dtype (or an 8-byte integer address, 0 for null), any other parameter a NumPy scalar of
    exactly its type. On a GPU a wrong one would pass unnoticed as bytes."""

    def __init__(self, cupy, name):
        self.name = name
        self._cupy = cupy
        self._launch = getattr(cupy.library, f"gt_emu_launch_{name}")
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
        self._launch.restype = ctypes.c_int
        signature = getattr(cupy.library, f"gt_emu_signature_{name}")
        signature.restype = ctypes.c_char_p
        # (NumPy dtype, whether it is a pointer to it) per parameter, from codes such as "f*,q"
        self.parameters = [(np.dtype(code.rstrip("*")), code.endswith("*"))
                           for code in signature().decode().split(",")]

    def __call__(self, grid, block, args):
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: kernel arguments go in a tuple, got {type(args).__name__}")
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.parameters)} parameters")
        values = [self._argument(index, value, *parameter)
                  for index, (value, parameter) in enumerate(zip(args, self.parameters))]
        pointers = (ctypes.c_void_p * len(values))(*[value.ctypes.data for value in values])
        error = ctypes.create_string_buffer(512)
        if self._launch(self._dims(grid), self._dims(block), pointers, error, len(error)) != 0:
            raise KernelEmulationError(f"{self.name}: {error.value.decode()}")
        self._cupy.check_guards(self.name)

    @staticmethod
    def _dims(dims):
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        return (ctypes.c_uint * 3)(*(dims + (1,) * (3 - len(dims))))

    def _argument(self, index, value, dtype, pointer):
        """`value` as the bytes the kernel receives (in a 0-d array), after checking its type."""
        where = f"{self.name}: argument {index}"
        if not pointer:
            if not isinstance(value, np.generic) or value.dtype != dtype:
                raise TypeError(f"{where} is {value!r}; the parameter takes a NumPy {dtype} scalar")
            return np.array(value)
        if isinstance(value, DeviceArray):
            if value.dtype != dtype and {value.dtype, dtype} != {np.dtype(bool), np.dtype(np.uint8)}:
                raise TypeError(f"{where} is a {value.dtype} array; the parameter is a pointer to {dtype}")
            if not value.flags.c_contiguous:
                raise TypeError(f"{where} is not contiguous")
            return np.array(value.ctypes.data, dtype=np.uint64)
        if isinstance(value, np.ndarray):
            raise TypeError(f"{where} is a host (NumPy) array; kernels take device arrays")
        if isinstance(value, np.integer) and value.dtype.itemsize == 8:
            return np.array(value, dtype=np.uint64)  # an address, 0 for a null pointer
        raise TypeError(f"{where} is {value!r}; the parameter is a pointer to {dtype}")


class EmulatedModule:
    """cupy.RawModule on the emulation: the kernels of the kernels/ file whose source `code` is."""

    def __init__(self, cupy, code, options):
        assert f"-I{kernel_dir()}" in options, options
        files = [name for name in kernel_names() if code.startswith(kernel_source(name))]
        assert len(files) == 1, "RawModule code that is not one of kernels/*.cu"
        self._cupy = cupy
        self._file = files[0]

    def get_function(self, name):
        if name not in ENTRY_POINTS[self._file]:
            raise KeyError(f"{self._file} has no kernel {name!r}")
        return EmulatedKernel(self._cupy, name)


class EmulatedCuPy:
    """The stand-in for the cupy module: what gradtensor.cuda_kernels and the GPU tests' helpers call.

    Device arrays are DeviceArrays. Each allocation starts 256-byte aligned (as CUDA's allocations do)
    between guard bytes, which are checked after every launch, and is filled with a poison pattern, as
    fresh GPU memory holds garbage: an output element a kernel forgets to write does not pass as 0."""

    float16, float32, float64, int32, int64, bool_ = np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_
    GUARD = 256
    POISON = 0xA5

    def __init__(self, library):
        self.library = library
        self._allocations = []  # (buffer, start, bytes)
        device = types.SimpleNamespace(id=0, attributes={"MultiProcessorCount": MULTIPROCESSORS})
        self.cuda = types.SimpleNamespace(Device=lambda *args: device)

    def RawModule(self, code, options=()):
        return EmulatedModule(self, code, options)

    def empty(self, shape, dtype=np.float64):
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        buffer = np.full(size + 3 * self.GUARD, self.POISON, dtype=np.uint8)
        start = -buffer.ctypes.data % self.GUARD + self.GUARD
        self._allocations.append((buffer, start, size))
        return buffer[start:start + size].view(dtype).reshape(shape).view(DeviceArray)

    def empty_like(self, a, dtype=None):
        return self.empty(a.shape, a.dtype if dtype is None else dtype)

    def full(self, shape, fill_value, dtype=None):
        out = self.empty(shape, np.asarray(fill_value).dtype if dtype is None else dtype)
        out[...] = fill_value
        return out

    def zeros(self, shape, dtype=np.float64):
        return self.full(shape, 0, dtype)

    def asarray(self, a, dtype=None):
        if isinstance(a, DeviceArray) and (dtype is None or a.dtype == dtype):
            return a
        host = np.asarray(a, dtype=dtype)
        out = self.empty(host.shape, host.dtype)
        out[...] = host
        return out

    def ascontiguousarray(self, a, dtype=None):
        if not isinstance(a, DeviceArray):  # as CuPy's: it copies nothing from the host
            raise TypeError(f"ascontiguousarray takes a device array, got {type(a).__name__}")
        if a.flags.c_contiguous and (dtype is None or a.dtype == dtype):
            return a
        out = self.empty(a.shape, a.dtype if dtype is None else dtype)
        out[...] = a
        return out

    @staticmethod
    def asnumpy(a):
        return np.array(a)  # a plain ndarray copy

    def check_guards(self, kernel):
        for buffer, start, size in self._allocations:
            if (buffer[:start] != self.POISON).any() or (buffer[start + size:] != self.POISON).any():
                raise AssertionError(f"{kernel} wrote outside an array (around a {size}-byte allocation)")


# gradtensor.fused's signatures over the launchers, for the GPU tests that run here unchanged
LAUNCHERS = types.SimpleNamespace(
    bias_act_forward=cuda_kernels.bias_act_forward,
    bias_act_backward=cuda_kernels.bias_act_backward,
    softmax=lambda x: cuda_kernels.softmax(x, False),
    log_softmax=lambda x: cuda_kernels.softmax(x, True),
    softmax_cross_entropy=cuda_kernels.softmax_cross_entropy,
    layer_norm_forward=cuda_kernels.layer_norm_forward,
    layer_norm_backward=cuda_kernels.layer_norm_backward,
    sgd_momentum_step_=cuda_kernels.sgd_momentum_step_,
    adam_step_=cuda_kernels.adam_step_,
    unscale_and_check_=lambda grads, inv_scale: unscale(gpu.cp, grads, inv_scale),
)


def on_launchers(gpu_test):
    """A test of tests/test_kernels_gpu.py, with its parameters, run here on the emulated launchers."""
    def test(cp, **params):
        gpu_test(**params)

    test.__name__ = test.__qualname__ = gpu_test.__name__
    test.__doc__ = gpu_test.__doc__
    test.pytestmark = list(getattr(gpu_test, "pytestmark", []))
    params = [name for mark in test.pytestmark if mark.name == "parametrize"
              for name in mark.args[0].replace(" ", "").split(",")]
    test.__signature__ = inspect.Signature(
        [inspect.Parameter("cp", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in params])
    return test


test_bias_act = on_launchers(gpu.test_bias_act)
test_softmax_and_log_softmax = on_launchers(gpu.test_softmax_and_log_softmax)
test_softmax_extreme_rows = on_launchers(gpu.test_softmax_extreme_rows)
test_softmax_cross_entropy = on_launchers(gpu.test_softmax_cross_entropy)
test_layer_norm = on_launchers(gpu.test_layer_norm)
test_sgd_step = on_launchers(gpu.test_sgd_step)
test_adam_step = on_launchers(gpu.test_adam_step)


@pytest.fixture
def cp(emulation, monkeypatch):
    """The stand-in for CuPy, installed where gradtensor.cuda_kernels and the GPU tests' helpers find
    CuPy, with the launchers' caches emptied; monkeypatch restores all of it after the test."""
    cupy = EmulatedCuPy(emulation)
    monkeypatch.setattr(backend, "require_cupy", lambda: cupy)
    monkeypatch.setattr(gpu, "cp", cupy)
    monkeypatch.setattr(gpu, "kernels", LAUNCHERS)
    for cache in ("_modules", "_functions", "_multiprocessors", "_pointer_tables"):
        monkeypatch.setattr(cuda_kernels, cache, {})
    return cupy


def at_offset(cp, host, offset):
    """A device copy of `host` starting `offset` elements into a fresh allocation (misaligned unless
    offset * itemsize is a multiple of 16)."""
    view = cp.empty(host.size + offset, dtype=host.dtype)[offset:].reshape(host.shape)
    view[...] = host
    return view


# --- the emulation itself -------------------------------------------------------------------------------


def test_every_kernel_file_is_emulated():
    # the wrappers export the entry points test_kernels_compile lists: a new file must be listed there
    assert set(kernel_names()) == set(ENTRY_POINTS)


def test_float16_conversions_match_numpy(emulation):
    """The software stand-ins for PTX cvt.f32.f16 and cvt.rn.f16.f32, the one piece of kernel code the
    emulation replaces: every float16 value, and rounding at every tie between neighbouring float16s."""
    halves = np.arange(1 << 16, dtype=np.uint16)
    floats = np.empty(halves.size, dtype=np.float32)
    emulation.gt_emu_half_bits_to_float(halves.ctypes.data_as(ctypes.c_void_p),
                                        floats.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(halves.size))
    expected = halves.view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(floats), nan)
    np.testing.assert_array_equal(floats[~nan].view(np.uint32), expected[~nan].view(np.uint32))

    finite = np.sort(expected[np.isfinite(expected) & (expected >= 0)])
    ties = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)  # exact in float32
    ties = np.append(ties, np.float32(65520))  # halfway from the largest float16 to 2^16: rounds to inf
    near = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(0))])
    spread = np.arange(0, 1 << 32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)  # every kind
    values = np.concatenate([near, -near, spread, np.float32([np.inf, -np.inf, 3.4e38, 1e-45])])
    bits = np.empty(values.size, dtype=np.uint16)
    emulation.gt_emu_float_to_half_bits(values.ctypes.data_as(ctypes.c_void_p),
                                        bits.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(values.size))
    with np.errstate(over="ignore", invalid="ignore"):
        expected_bits = values.astype(np.float16).view(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(bits[~nan], expected_bits[~nan])
    assert np.isnan(bits[nan].view(np.float16)).all()
    np.testing.assert_array_equal(bits[nan] >> 15, expected_bits[nan] >> 15)  # the sign


def test_emulator_reports_what_no_kernel_may_do(cp):
    block_sum, vector_load, deadlock = (EmulatedKernel(cp, f"selftest_{name}")
                                        for name in ("block_sum", "vector_load", "deadlock"))
    y = cp.zeros(4, np.float32)
    block_sum((2,), (1024,), (y,))
    np.testing.assert_array_equal(cp.asnumpy(y[:2]), [1023 * 1024 / 2] * 2)  # 32 warps, both blocks
    vector_load((1,), (32,), (cp.asarray(np.arange(4, dtype=np.float32) + 1), y))
    assert y[0] == 1
    with pytest.raises(KernelEmulationError, match="misaligned 16-byte access"):
        vector_load((1,), (32,), (at_offset(cp, np.zeros(4, np.float32), 1), y))
    with pytest.raises(KernelEmulationError, match="deadlock: 2 threads wait at __syncthreads, 62 at a warp shuffle"):
        deadlock((1,), (64,), (cp.zeros(64, np.float32),))
    with pytest.raises(KernelEmulationError, match="mask 0xffffffff, but the warp's live lanes are 0xffff"):
        block_sum((1,), (48,), (y,))
    with pytest.raises(KernelEmulationError, match="invalid launch configuration"):
        block_sum((1,), (2048,), (y,))
    with pytest.raises(TypeError, match="argument 0 is a float64 array; the parameter is a pointer to float32"):
        block_sum((1,), (32,), (cp.zeros(4, np.float64),))
    with pytest.raises(TypeError, match="host"):
        block_sum((1,), (32,), (np.zeros(4, np.float32),))
    with pytest.raises(TypeError, match="argument 3 is 1; the parameter takes a NumPy int64 scalar"):
        cuda_kernels.get_function("dropout.cu", "dropout_backward_f32")(
            (1,), (32,), (y, cp.zeros(4, bool), y, 1, np.float32(1)))
    block_sum((1,), (1024,), (y,))  # threads stopped by the failures start afresh
    assert y[0] == 1023 * 1024 / 2


# --- bias + activation -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_act_operands_aligned_unalike(cp, dtype):
    # x, dy and the output each at another offset: the element-by-element path
    x, b, dy = rand((9, 37), dtype, 2, seed=1), rand((37,), dtype, seed=2), rand((9, 37), dtype, seed=3)
    dx, db = cuda_kernels.bias_act_backward(at_offset(cp, dy, 3), at_offset(cp, x, 1), at_offset(cp, b, 2), "gelu_tanh")
    expected_dx, expected_db = reference.bias_act_backward(dy, x, b, "gelu_tanh")
    assert_close(dx, expected_dx, dtype)
    assert_close(db, expected_db, dtype)


# --- softmax family ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference's -inf - -inf
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_special_values(cp, dtype):
    logits = rand((8, 37), dtype, 3)
    logits[0, 3] = logits[4, 2] = np.nan  # row 4 is ignored: its gradient is still 0
    logits[1, 5] = np.inf
    logits[2, :] = -np.inf
    logits[5, 1] = -np.inf
    targets = np.array([0, 5, 3, 2, -100, 1, 40, -3])
    scale = rand((8,), np.float32, seed=6)
    scale[4] = np.nan
    loss, grad = cuda_kernels.softmax_cross_entropy(at_offset(cp, logits, 1), cp.asarray(targets), -100,
                                                    cp.asarray(scale))
    expected_loss, expected_grad = reference.softmax_cross_entropy(logits, targets, -100, scale)
    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)
    assert (cp.asnumpy(grad[4]) == 0).all()


# --- layer norm -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_operands_aligned_unalike(cp, dtype):
    x, dy, w = rand((6, 45), dtype, 2, seed=1) + dtype(5), rand((6, 45), dtype, seed=2), rand((45,), np.float32)
    x[2, :] = 7  # a constant row: variance 0
    _, mean, rstd = reference.layer_norm_forward(x, w, None, 1e-5)
    dx, dw, db = cuda_kernels.layer_norm_backward(at_offset(cp, dy, 1), at_offset(cp, x, 2), cp.asarray(w),
                                                  cp.asarray(mean), cp.asarray(rstd))
    for ours, theirs in zip((dx, dw, db), reference.layer_norm_backward(dy, x, w, mean, rstd)):
        assert_close(ours, theirs, dtype)


# --- multi-tensor steps ---------------------------------------------------------------------------------


def adam_state(dtype):
    """(host, device) lists of params, exp_avgs, exp_avg_sqs and max_exp_avg_sqs."""
    sets = [tensor_set(dtype, 10), tensor_set(dtype, 40), tensor_set(dtype, 50, nonnegative=True),
            tensor_set(dtype, 60, nonnegative=True)]
    return [host for host, _ in sets], [device for _, device in sets]


def snapshot(cp, arrays):
    return [cp.asnumpy(array) for array in arrays]


def assert_unchanged(cp, arrays, before):
    for array, copy in zip(arrays, before):
        np.testing.assert_array_equal(cp.asnumpy(array), copy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step_capturable(cp, dtype):
    # a captured step reads lr (float64) from device memory, and writes nothing when GradScaler's
    # found_inf flag (int32, set by unscale_and_check_) is set
    params, device_params = tensor_set(dtype, 10)
    bufs, device_bufs = tensor_set(dtype, 20)
    grads, device_grads = tensor_set(dtype, 30, shift=1)
    lr, found_inf = cp.asarray(np.float64(0.05)), cp.zeros((), np.int32)
    args = (0.9, 0.1, True, 0.01, False, False)
    cuda_kernels.sgd_momentum_step_(device_params, device_grads, device_bufs, lr, *args, skip=found_inf)
    reference.sgd_momentum_step_(params, grads, bufs, 0.05, *args)
    assert_all_close(device_params, params, dtype)
    assert_all_close(device_bufs, bufs, dtype)
    device_grads[-1][-1] = np.inf
    cuda_kernels.unscale_and_check_(device_grads, 1.0, found_inf)
    assert int(found_inf) == 1
    before = snapshot(cp, device_params + device_bufs)
    cuda_kernels.sgd_momentum_step_(device_params, device_grads, device_bufs, lr, *args, skip=found_inf)
    assert_unchanged(cp, device_params + device_bufs, before)


@pytest.mark.parametrize("config", ADAM_CONFIGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step_capturable(cp, dtype, config):
    # a captured step reads lr and the step counts (float64: one array per group, an element per tensor,
    # as the optimizer keeps them) and GradScaler's found_inf from device memory
    host_state, device_state = adam_state(dtype)
    device_arrays = [array for arrays in device_state for array in arrays]
    counts = cp.zeros(len(TENSOR_SIZES), np.float64)
    steps = [counts[i, ...] for i in range(len(TENSOR_SIZES))]
    lr, skip = cp.asarray(np.float64(1e-3)), cp.full((), 1, np.int32)
    hyperparameters = (config["beta1"], 0.999, 1e-8, config["weight_decay"], config["decoupled"], config["amsgrad"],
                       config["maximize"])
    # a skipped first step writes nothing (its counts are still 0, whose bias correction divides by 0)
    grads, device_grads = tensor_set(dtype, 70)
    before = snapshot(cp, device_arrays)
    cuda_kernels.adam_step_(device_state[0], device_grads, *device_state[1:], steps, lr, *hyperparameters, skip=skip)
    assert_unchanged(cp, device_arrays, before)
    skip[...] = 0
    for step in (1, 2):
        grads, device_grads = tensor_set(dtype, 70 + step, shift=step)
        counts[...] = step + np.arange(len(TENSOR_SIZES))  # tensors at different counts: each block reads its own
        cuda_kernels.adam_step_(device_state[0], device_grads, *device_state[1:], steps, lr, *hyperparameters,
                                skip=skip)
        host_counts = [np.array(step + i, dtype=np.float64) for i in range(len(TENSOR_SIZES))]
        reference.adam_step_(host_state[0], grads, *host_state[1:], host_counts, np.array(1e-3), *hyperparameters)
    for arrays, host_arrays in zip(device_state, host_state):
        assert_all_close(arrays, host_arrays, dtype)


def unscale(cp, grads, inv_scale):
    """GradScaler's check: grads *= inv_scale; True when a result is inf or NaN."""
    found_inf = cp.zeros((), np.int32)
    cuda_kernels.unscale_and_check_(grads, inv_scale, found_inf)
    return bool(found_inf)


test_unscale_and_check = on_launchers(gpu.test_unscale_and_check)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unscale_with_a_device_scale_and_a_flag_already_set(cp, dtype):
    grads, device_grads = tensor_set(dtype, 80)
    assert unscale(cp, device_grads, cp.asarray(np.float32(1 / 512))) is False  # a captured step's device scale
    assert reference.unscale_and_check_(grads, 1 / 512) is False
    for d, h in zip(device_grads, grads):
        np.testing.assert_array_equal(cp.asnumpy(d), h)  # one fp32 product each: exact
    found_inf = cp.full((), 1, np.int32)
    cuda_kernels.unscale_and_check_(device_grads, 1.0, found_inf)
    assert int(found_inf) == 1  # set, never cleared


# --- dropout ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 4097, 2**33 + 2])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 1000, 4099])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_bit_identical_to_reference(cp, dtype, n, offset, misaligned):
    seed, p = 2**40 + 12345, 0.3
    threshold, scale = reference.dropout_threshold(p), reference.dropout_scale(p)
    expected_mask = reference.keep_mask((n,), threshold, seed, offset, np)
    x = rand((n,), dtype)
    y, mask = cuda_kernels.dropout_forward(to_device(x, misaligned), threshold, scale, seed, offset)
    np.testing.assert_array_equal(cp.asnumpy(mask), expected_mask)
    np.testing.assert_array_equal(cp.asnumpy(y), reference.scale_kept(x, expected_mask, scale))
    np.testing.assert_array_equal(cp.asnumpy(cuda_kernels.dropout_mask((n,), threshold, seed, offset)), expected_mask)
    dy = rand((n,), dtype, seed=1)
    dx = cuda_kernels.dropout_backward(to_device(dy, misaligned), cp.asarray(expected_mask), scale)
    np.testing.assert_array_equal(cp.asnumpy(dx), reference.scale_kept(dy, expected_mask, scale))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_keeps_all_or_nothing(cp, p):
    threshold, scale = reference.dropout_threshold(p), reference.dropout_scale(p)
    x = rand((37,), np.float32)
    y, mask = cuda_kernels.dropout_forward(cp.asarray(x), threshold, scale, 7, 0)
    assert (cp.asnumpy(mask) == (p == 0)).all()
    np.testing.assert_array_equal(cp.asnumpy(y), x if p == 0 else np.zeros_like(x))
