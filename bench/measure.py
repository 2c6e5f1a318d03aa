"""How the comparison measures: interleaved wall-clock timing, peak memory, the GPU roofline, and
the machine description that goes into the results."""
import ctypes
import gc
import glob
import math
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

import gradtensor as gt
from bench.workloads import GRADTENSOR, TORCH


def _torch():
    """The torch module when it imports, else None (never required)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _cuda_torch():
    """torch when it imports and sees the GPU (a CPU-only build beside CuPy is left alone), else None."""
    torch = _torch()
    return torch if torch is not None and torch.cuda.is_available() else None


# --- devices ---------------------------------------------------------------------------------------


def synchronizer(device):
    """A function that waits for all queued GPU work (gradtensor/CuPy and PyTorch); no-op on CPU."""
    if device == "cpu":
        return lambda: None
    torch = _cuda_torch()

    def synchronize():
        gt.cuda.synchronize()
        if torch is not None:
            torch.cuda.synchronize()

    return synchronize


def free_device_memory(device):
    """Return cached blocks between cases so one case's pool does not count in the next one's peak."""
    gc.collect()
    if device == "cuda":
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
        torch = _cuda_torch()
        if torch is not None:
            torch.cuda.empty_cache()


# --- timing ----------------------------------------------------------------------------------------


def time_interleaved(runners, synchronize, repeats, target_seconds, warmup=1):
    """{implementation: (median seconds per step, per-repeat samples, steps per repeat)}.

    Each runner is warmed up, then its steps per repeat are chosen so that one repeat lasts about
    target_seconds. The repeats alternate between implementations (the starting one rotates), so
    drift on a shared machine affects them alike; the clock is read after a device synchronize.
    """
    steps_per_repeat = {}
    for name, runner in runners.items():
        for _ in range(warmup - 1):
            runner.step()
        synchronize()
        start = time.perf_counter()
        runner.step()  # the last warm-up step sets the steps per repeat
        synchronize()
        one_step = time.perf_counter() - start
        steps_per_repeat[name] = max(1, min(100_000, math.ceil(target_seconds / max(one_step, 1e-7))))
    samples = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            step, count = runners[name].step, steps_per_repeat[name]
            synchronize()
            start = time.perf_counter()
            for _ in range(count):
                step()
            synchronize()
            samples[name].append((time.perf_counter() - start) / count)
    return {name: (statistics.median(samples[name]), samples[name], steps_per_repeat[name]) for name in runners}


# --- peak memory -----------------------------------------------------------------------------------


def peak_step_memory(runner, implementation, device, synchronize):
    """Bytes allocated at the peak of one step above what was held before it (parameters, optimizer
    state, data), gradients dropped first; None where it cannot be measured (PyTorch on the CPU,
    whose allocator tracemalloc does not see).

    CPU: tracemalloc, which sees NumPy's array allocations. GPU: gradtensor's pool peak for
    gradtensor and the CuPy peer (they share CuPy's pool), torch.cuda's for PyTorch.
    """
    runner.release()
    gc.collect()
    synchronize()
    if device == "cpu":
        if implementation == TORCH:
            return None
        tracemalloc.start()
        try:
            runner.step()
            return tracemalloc.get_traced_memory()[1]  # only blocks allocated since start() count
        finally:
            tracemalloc.stop()
    if implementation == TORCH:
        torch = _torch()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        runner.step()
        synchronize()
        return torch.cuda.max_memory_allocated() - base
    gt.cuda.reset_peak_memory_stats()
    base = gt.cuda.memory_allocated()
    runner.step()
    synchronize()
    return gt.cuda.max_memory_allocated() - base


# --- GPU roofline ----------------------------------------------------------------------------------


def median_gpu_seconds(function, repeats=10):
    """Median CUDA-event time of function() (cupyx.profiler.benchmark), free of host-side overhead."""
    from cupyx.profiler import benchmark

    result = benchmark(function, n_repeat=repeats, n_warmup=3)
    return float(np.median(result.gpu_times[0]))


def _copy_bandwidth(cupy, elements):
    source = cupy.random.standard_normal(elements, dtype=cupy.float32)
    target = cupy.empty_like(source)
    return 2 * source.nbytes / median_gpu_seconds(lambda: cupy.copyto(target, source))


def gpu_roofline(quick=False):
    """Device copy bandwidth (bytes read + written per second) and CuPy matmul FLOP rates, measured now.

    bfloat16 rows are compared with the float16 rate (CuPy has no bfloat16 matmul; the tensor cores
    run both at the same peak on current NVIDIA GPUs)."""
    import cupy

    elements = (1 << 24) if quick else (1 << 26)
    copy_bytes_per_second = _copy_bandwidth(cupy, elements)
    n = 2048 if quick else 8192
    rates = {}
    for dtype in ("float32", "float16"):
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        rates[dtype] = 2 * n**3 / median_gpu_seconds(lambda: a @ b, repeats=5)
    rates["bfloat16"] = rates["float16"]
    free_device_memory("cuda")
    return {"copy_bytes_per_second": copy_bytes_per_second, "matmul_flops_per_second": rates,
            "matmul_size": n}


# --- machine and versions --------------------------------------------------------------------------


def _openblas_library():
    """NumPy's OpenBLAS (ctypes handle) with its get/set thread-count functions, or None."""
    paths = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs", "*openblas*"))
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                getter, setter = f"{prefix}get_num_threads{suffix}", f"{prefix}set_num_threads{suffix}"
                if hasattr(library, getter) and hasattr(library, setter):
                    return getattr(library, getter), getattr(library, setter)
    return None


def set_threads(threads=None):
    """One thread count for NumPy's OpenBLAS and PyTorch: `threads` when given (set in OpenBLAS
    through its C API), else OpenBLAS's own count (OPENBLAS_NUM_THREADS when set, else the cores).
    Returns (threads, how it was found)."""
    library = _openblas_library()
    if library is not None:
        get_threads, set_threads_ = library
        source = "as OpenBLAS reports"
        if threads is not None:
            set_threads_(int(threads))
            source = "set with --threads"
        threads = int(get_threads())
    elif threads is not None:
        source = "NumPy's BLAS could not be set: PyTorch only"
    else:
        threads = int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
        source = "assumed from the environment"
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    return threads, source


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device):
    info = {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS")}
    if device == "cuda":
        import cupy

        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        info["gpu"] = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
        info["gpu_memory_bytes"] = int(properties["totalGlobalMem"])
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    return info


def versions():
    found = {"gradtensor": gt.__version__, "numpy": np.__version__}
    torch = _torch()
    found["torch"] = torch.__version__ if torch is not None else None
    try:
        import cupy

        found["cupy"] = cupy.__version__
    except Exception:  # not installed, or its CUDA libraries missing
        found["cupy"] = None
    return found


def implementation_label(implementation, device):
    return {GRADTENSOR: "gradtensor", TORCH: "PyTorch"}.get(implementation, "NumPy" if device == "cpu" else "CuPy")
