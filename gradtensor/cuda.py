"""gt.cuda: device queries, memory figures and CUDA graphs. Everything answers sensibly without CuPy or a GPU."""
from . import backend
from .cuda_graph import GraphedStep, GraphFallbackWarning  # noqa: F401 (GraphFallbackWarning for filters)


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


def graph(step_fn=None, *, warmup=1):
    """Capture a training step into a CUDA graph on its first calls and replay it afterwards.

        def train_step(x, y):
            optimizer.zero_grad()
            with gt.amp.autocast("cuda", dtype=gt.float16):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss

        step = gt.cuda.graph(train_step)      # or @gt.cuda.graph on the definition
        for x, y in batches:
            loss = step(x, y)                 # the same tensor each call, holding this step's loss

    The first `warmup` calls run eagerly (kernels compile, the optimizer's state is made, and
    optimizers and GradScalers switch to their capturable form: learning rates, Adam's step counts
    and the loss scale in device arrays, GradScaler's skip of an overflowed step done on the device);
    the next call captures the step on a side stream under a memory pool of its own, and every later
    call copies its tensor arguments into the graph's static input buffers and replays the graph with
    one launch. Gradients and parameters after N replays equal those of N eager steps; a scheduler
    that changes param_groups' "lr" between calls is seen by the next replay.

    Returns the step's own return value from the captured call on (the static outputs: the same
    tensors, overwritten by each replay; read them on the host when you need the values). What a graph
    fixes: the shapes, dtypes and devices of the tensor arguments and the values of the other arguments
    (a call with different ones runs eagerly, with a warning), the Python control flow of the step,
    and every hyperparameter other than the learning rate. The step should start with zero_grad().

    Runs eagerly, warning once (GraphFallbackWarning) with the cause: without CUDA (no CuPy, or tensor
    arguments on the CPU); when the warm-up meets something a graph cannot hold (a host read such as
    loss.item() or GradScaler.get_scale(), dropout's random draws, an optimizer without a capturable
    form: only SGD, Adam and AdamW have one); when the capture itself fails. The returned object's
    `fallback_reason` says why, `is_captured` whether a graph exists, `memory_pool` the CuPy pool its
    arrays live in (not counted by memory_allocated(), which follows CuPy's default pool).
    """
    if step_fn is None:
        return lambda fn: GraphedStep(fn, warmup)
    return GraphedStep(step_fn, warmup)
