"""gt.cuda: device queries and memory figures. Everything answers sensibly without CuPy or a GPU."""
from . import backend


def is_available():
    """True when CuPy imports and sees at least one CUDA device."""
    return backend.cupy_module() is not None


def device_count():
    cp = backend.cupy_module()
    return cp.cuda.runtime.getDeviceCount() if cp is not None else 0


def current_device():
    return backend.current_cuda_index()


def synchronize(device=None):
    """Wait for all work queued on the device (no-op without CUDA)."""
    cp = backend.cupy_module()
    if cp is None:
        return
    index = backend.as_device(device).index if device is not None else cp.cuda.Device().id
    with cp.cuda.Device(index):
        cp.cuda.Device().synchronize()


def memory_allocated(device=None):
    """Bytes held by live arrays in CuPy's memory pool (0 without CUDA)."""
    cp = backend.cupy_module()
    return cp.get_default_memory_pool().used_bytes() if cp is not None else 0


def max_memory_allocated(device=None):
    """Peak of memory_allocated since the start or the last reset_peak_memory_stats()."""
    return backend.peak_memory_tracker().peak if backend.cupy_module() is not None else 0


def reset_peak_memory_stats(device=None):
    if backend.cupy_module() is not None:
        backend.peak_memory_tracker().reset()
