"""Bandwidth of gradtensor's CUDA kernels (through gradtensor.fused's public functions), as a fraction
of the device copy bandwidth measured in the same run; bench.compare --device cuda reports it.

Bytes are counted as the kernels of an operation must move them by design: every input read once and
every output written once per kernel (bias_act_backward and layer_norm_backward run a second,
column-summing kernel that reads again what it sums). Times are CUDA-event times (median of the
repeats) from cupyx.profiler.benchmark.
"""
from bench.measure import median_gpu_seconds


def cases(cp, fused, elements, dtype):
    """(name, function, bytes moved) for each kernel at about `elements` elements of `dtype`."""
    size = cp.dtype(dtype).itemsize
    cols = 4096
    rows = elements // cols
    n = rows * cols

    def data(*shape, positive=False):
        a = cp.random.standard_normal(shape, dtype=cp.float32).astype(dtype)
        return cp.abs(a) if positive else a

    x, dy, b = data(rows, cols), data(rows, cols), data(cols)
    targets = cp.random.randint(0, cols, rows)
    w32, b32 = cp.ones(cols, dtype=cp.float32), cp.zeros(cols, dtype=cp.float32)
    _, mean, rstd = fused.layer_norm_forward(x, w32, b32, 1e-5)
    _, mask = fused.dropout_forward(x, 0.1, 0, 0)
    tensors = 8  # the optimizer kernels update a list of tensors in one launch
    params = [data(n // tensors) for _ in range(tensors)]
    grads = [data(n // tensors) for _ in range(tensors)]
    bufs, exp_avgs = [data(n // tensors) for _ in range(tensors)], [data(n // tensors) for _ in range(tensors)]
    exp_avg_sqs = [data(n // tensors, positive=True) for _ in range(tensors)]
    row_bytes = rows * 16  # targets, loss, mean, rstd and the like: small beside n
    return [
        ("bias_act_forward (gelu_tanh)", lambda: fused.bias_act_forward(x, b, "gelu_tanh"), 2 * n * size),
        ("bias_act_backward (gelu_tanh)", lambda: fused.bias_act_backward(dy, x, b, "gelu_tanh"), 4 * n * size),
        ("softmax", lambda: fused.softmax(x), 2 * n * size),
        ("log_softmax", lambda: fused.log_softmax(x), 2 * n * size),
        ("softmax_cross_entropy", lambda: fused.softmax_cross_entropy(x, targets), 2 * n * size + row_bytes),
        ("layer_norm_forward", lambda: fused.layer_norm_forward(x, w32, b32, 1e-5), 2 * n * size + row_bytes),
        ("layer_norm_backward", lambda: fused.layer_norm_backward(dy, x, w32, mean, rstd), 5 * n * size + row_bytes),
        ("sgd_momentum_step_", lambda: fused.sgd_momentum_step_(params, grads, bufs, 1e-6, 0.9, 0, False, 0, False),
         5 * n * size),
        ("adam_step_", lambda: fused.adam_step_(params, grads, exp_avgs, exp_avg_sqs, None, 1, 1e-6, 0.9, 0.999,
                                                1e-8, 0.01, True, False), 7 * n * size),
        ("unscale_and_check_", lambda: fused.unscale_and_check_(grads, 1.0), 2 * n * size),
        ("dropout_forward", lambda: fused.dropout_forward(x, 0.1, 0, 0), n * (2 * size + 1)),
        ("dropout_backward", lambda: fused.dropout_backward(dy, mask, 0.1), n * (2 * size + 1)),
        ("dropout_mask", lambda: fused.dropout_mask((rows, cols), 0.1, 0, 0, cp), n),
    ]


def kernel_bandwidths(copy_bytes_per_second, quick=False):
    """[{kernel, dtype, elements, seconds, bytes_per_second, fraction_of_copy, error}] for float32 and
    float16; a kernel that fails is reported with its error instead of stopping the run."""
    import cupy as cp

    from gradtensor import fused

    elements = (1 << 20) if quick else (1 << 26)  # 64 Mi elements: 256 MiB of float32
    results = []
    for dtype in ("float32", "float16"):
        try:
            kernel_cases = cases(cp, fused, elements, dtype)
        except Exception as error:  # noqa: BLE001 - reported in the table
            results.append({"kernel": "(set-up)", "dtype": dtype, "error": f"{type(error).__name__}: {error}"})
            continue
        for name, function, nbytes in kernel_cases:
            row = {"kernel": name, "dtype": dtype, "elements": elements, "bytes": nbytes}
            try:
                seconds = median_gpu_seconds(function, repeats=5 if quick else 20)
                row.update(seconds=seconds, bytes_per_second=nbytes / seconds,
                           fraction_of_copy=nbytes / seconds / copy_bytes_per_second)
            except Exception as error:  # noqa: BLE001 - reported in the table
                row["error"] = f"{type(error).__name__}: {error}"
            results.append(row)
        del kernel_cases
        cp.get_default_memory_pool().free_all_blocks()
    return results
