"""The CUDA kernels (through gradtensor.fused on CuPy arrays) against their reference implementations
(gradtensor.fused_reference on NumPy copies of the same inputs): float32 within a normwise relative
error of 1e-5, float16 within 1e-2, dropout masks bit for bit. Sizes include non-multiples of the
16-byte vector width, rows longer than one block, and operands starting at a misaligned address.

Needs CuPy and a CUDA device (skipped otherwise); on a GPU machine run `bash bench/gpu_run.sh`.
"""
import numpy as np
import pytest

from gradtensor import backend, fused
from gradtensor import fused_reference as reference

cp = backend.cupy_module()
# what the kernel tests below launch through: gradtensor.fused here (its kernel paths on CuPy arrays);
# tests/test_kernels_emulated.py runs the same tests on the launchers themselves
kernels = fused
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason="needs CuPy and a CUDA device")]

DTYPES = [np.float32, np.float16]
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}
# (rows, cols): cols 1..8 around the vector widths (4 floats, 8 halves), 1027 and 4099 past a
# 1024-thread block, 4096 a whole number of packs
SHAPES = [(1, 1), (5, 3), (4, 8), (3, 7), (64, 33), (16, 1027), (2, 4096), (3, 4099)]


def rand(shape, dtype, scale=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def to_device(host, misaligned=False):
    """A CuPy copy of `host`; misaligned: a view one element into a larger buffer, so its address is
    not 16-byte aligned (the kernels must take their scalar paths and still be right)."""
    if not misaligned:
        return cp.asarray(host)
    buffer = cp.empty(host.size + 1, dtype=host.dtype)
    view = buffer[1:].reshape(host.shape)
    view[...] = cp.asarray(host)
    assert view.data.ptr % 16 != 0
    return view


def rel_error(actual, expected):
    """max |actual - expected| / max |expected| over the finite entries of `expected` (the others must
    match exactly). Normwise: elementwise ratios are meaningless for entries near zero."""
    a = cp.asnumpy(actual).astype(np.float64)
    e = np.asarray(expected).astype(np.float64)
    assert a.shape == e.shape
    finite = np.isfinite(e)
    np.testing.assert_array_equal(a[~finite], e[~finite])  # same NaN and inf entries (NaN equals NaN here)
    a, e = a[finite], e[finite]
    if e.size == 0:
        return 0.0
    scale = np.abs(e).max()
    return float(np.abs(a - e).max() / scale) if scale > 0 else float(np.abs(a).max())


def assert_close(actual, expected, dtype):
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    error = rel_error(actual, expected)
    assert error < TOLERANCE[np.dtype(dtype)], f"relative error {error:.3g}"


@pytest.fixture
def reference_forbidden(monkeypatch):
    """Makes every reference implementation raise: a kernel path must not fall back silently."""
    def forbid(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"fused_reference.{name} ran for CuPy kernel inputs")
        monkeypatch.setattr(reference, name, fail)

    for name in ("bias_act_forward", "bias_act_backward", "softmax", "log_softmax", "softmax_cross_entropy",
                 "layer_norm_forward", "layer_norm_backward", "sgd_momentum_step_", "adam_step_",
                 "adam_step_with_coefficients_", "unscale_and_check_", "unscale_and_flag_", "dropout_mask",
                 "keep_mask", "dropout_forward", "dropout_backward"):
        forbid(name)


# --- bias + activation -------------------------------------------------------------------------------


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", fused.ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_act(dtype, act, shape, misaligned):
    x, b, dy = rand(shape, dtype, 2, seed=1), rand(shape[-1:], dtype, seed=2), rand(shape, dtype, seed=3)
    gx, gb, gdy = to_device(x, misaligned), to_device(b), to_device(dy, misaligned)
    assert_close(kernels.bias_act_forward(gx, gb, act), reference.bias_act_forward(x, b, act), dtype)
    dx, db = kernels.bias_act_backward(gdy, gx, gb, act)
    expected_dx, expected_db = reference.bias_act_backward(dy, x, b, act)
    assert_close(dx, expected_dx, dtype)
    assert_close(db, expected_db, dtype)
    dx_only, no_db = kernels.bias_act_backward(gdy, gx, gb, act, bias_grad=False)
    assert no_db is None
    assert_close(dx_only, expected_dx, dtype)


def test_bias_act_leading_axes(reference_forbidden):
    x, b = rand((2, 3, 5), np.float32), rand((5,), np.float32)
    y = fused.bias_act_forward(cp.asarray(x), cp.asarray(b), "silu")
    dx, db = fused.bias_act_backward(cp.asarray(x), cp.asarray(x), cp.asarray(b), "silu")
    assert y.shape == dx.shape == (2, 3, 5) and db.shape == (5,)


# --- softmax family ------------------------------------------------------------------------------------


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("shape", SHAPES + [(2, 3, 5)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_log_softmax(dtype, shape, misaligned):
    x = rand(shape, dtype, 3)
    gx = to_device(x, misaligned)
    assert_close(kernels.softmax(gx), reference.softmax(x), dtype)
    assert_close(kernels.log_softmax(gx), reference.log_softmax(x), dtype)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference's -inf - -inf
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_rows(dtype):
    big = 6e4 if dtype == np.float16 else 1e30
    x = np.array([[big, big - 1, -np.inf, 0], [-np.inf, -np.inf, 2, -np.inf], [-np.inf] * 4], dtype=dtype)
    gx = cp.asarray(x)
    assert_close(kernels.softmax(gx), reference.softmax(x), dtype)  # all-masked row: NaN in both
    assert_close(kernels.log_softmax(gx)[:2], reference.log_softmax(x)[:2], dtype)


@pytest.mark.parametrize("loss_grad", ["none", "scalar", "rows"])
@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (6, 7), (64, 33), (5, 1027), (3, 4099)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy(dtype, shape, misaligned, loss_grad):
    rows, cols = shape
    logits = rand(shape, dtype, 3)
    targets = np.random.default_rng(5).integers(0, cols, rows)
    targets[::4] = -100  # ignored
    if rows > 2:
        targets[1] = cols  # out of range: NaN
    if rows > 3:
        targets[3] = -1  # negative, not ignore_index: NaN
    scale = {"none": None, "scalar": 0.5, "rows": rand((rows,), np.float32, seed=6)}[loss_grad]
    device_scale = cp.asarray(scale) if loss_grad == "rows" else scale
    loss, grad = kernels.softmax_cross_entropy(to_device(logits, misaligned), cp.asarray(targets), -100, device_scale)
    expected_loss, expected_grad = reference.softmax_cross_entropy(logits, targets, -100, scale)
    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)
    loss_only, no_grad = kernels.softmax_cross_entropy(to_device(logits, misaligned), cp.asarray(targets), -100,
                                                     device_scale, with_grad=False)  # the kernel's null grad
    assert no_grad is None
    assert_close(loss_only, expected_loss, dtype)


# --- layer norm -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("shape", SHAPES + [(2, 3, 5)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm(dtype, shape, misaligned, affine):
    x = rand(shape, dtype, 2, seed=1) + dtype(5)  # an offset mean: the statistics must not cancel
    dy = rand(shape, dtype, seed=2)
    w, b = (rand(shape[-1:], np.float32, seed=3), rand(shape[-1:], np.float32, seed=4)) if affine else (None, None)
    gx, gdy = to_device(x, misaligned), to_device(dy, misaligned)
    gw, gb = (cp.asarray(w), cp.asarray(b)) if affine else (None, None)
    y, mean, rstd = kernels.layer_norm_forward(gx, gw, gb, 1e-5)
    expected_y, expected_mean, expected_rstd = reference.layer_norm_forward(x, w, b, 1e-5)
    assert_close(y, expected_y, dtype)
    assert_close(mean, expected_mean, dtype)
    assert_close(rstd, expected_rstd, dtype)
    dx, dw, db = kernels.layer_norm_backward(gdy, gx, gw, mean, rstd)
    expected = reference.layer_norm_backward(dy, x, w, expected_mean, expected_rstd)
    for ours, theirs in zip((dx, dw, db), expected):
        assert_close(ours, theirs, dtype)


# --- multi-tensor steps ---------------------------------------------------------------------------------

# around the vector widths, and across the 65536-element chunks the blocks take
TENSOR_SIZES = [1, 3, 7, 8, 33, 1027, 65536 + 5, 3 * 65536 - 1]


def tensor_set(dtype, seed, nonnegative=False, shift=0):
    """Host arrays of TENSOR_SIZES and device copies; every third device array (from index 1 - shift)
    starts misaligned. Lists with different shifts give tensors whose operands are aligned unalike,
    which the kernels must handle element by element."""
    host = [rand((n,), dtype, seed=seed + i) for i, n in enumerate(TENSOR_SIZES)]
    if nonnegative:  # second moments
        host = [np.abs(h) for h in host]
    device = [to_device(h, misaligned=((i + shift) % 3 == 1)) for i, h in enumerate(host)]
    return host, device


def assert_all_close(device_arrays, host_arrays, dtype):
    for d, h in zip(device_arrays, host_arrays):
        assert_close(d, h, dtype)


@pytest.mark.parametrize("config", [
    dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
    dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.01, maximize=False),
    dict(momentum=0.8, dampening=0.2, nesterov=False, weight_decay=0.1, maximize=True),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step(dtype, config):
    params, device_params = tensor_set(dtype, 10)
    bufs, device_bufs = tensor_set(dtype, 20)
    for step in range(3):
        grads, device_grads = tensor_set(dtype, 30 + step, shift=step)
        args = (0.05, config["momentum"], config["dampening"], config["nesterov"], config["weight_decay"], step == 0)
        kernels.sgd_momentum_step_(device_params, device_grads, device_bufs, *args, maximize=config["maximize"])
        reference.sgd_momentum_step_(params, grads, bufs, *args, config["maximize"])
    assert_all_close(device_params, params, dtype)
    if config["momentum"]:
        assert_all_close(device_bufs, bufs, dtype)


ADAM_CONFIGS = [
    dict(weight_decay=0.0, decoupled=False, amsgrad=False, maximize=False, beta1=0.9),
    dict(weight_decay=0.1, decoupled=False, amsgrad=True, maximize=True, beta1=0.9),
    dict(weight_decay=0.01, decoupled=True, amsgrad=True, maximize=False, beta1=0.3),
]


@pytest.mark.parametrize("config", ADAM_CONFIGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step(dtype, config):
    params, device_params = tensor_set(dtype, 10)
    exp_avgs, device_exp_avgs = tensor_set(dtype, 40)
    exp_avg_sqs, device_exp_avg_sqs = tensor_set(dtype, 50, nonnegative=True)
    max_exp_avg_sqs, device_max_exp_avg_sqs = tensor_set(dtype, 60, nonnegative=True)
    host_states = [exp_avgs, exp_avg_sqs, max_exp_avg_sqs]
    device_states = [device_exp_avgs, device_exp_avg_sqs, device_max_exp_avg_sqs]
    for step in range(1, 4):
        grads, device_grads = tensor_set(dtype, 70 + step, shift=step)
        args = (step, 1e-3, config["beta1"], 0.999, 1e-8, config["weight_decay"], config["decoupled"],
                config["amsgrad"])
        kernels.adam_step_(device_params, device_grads, *device_states, *args, maximize=config["maximize"])
        reference.adam_step_(params, grads, *host_states, *args, config["maximize"])
    assert_all_close(device_params, params, dtype)
    for device_state, host_state in zip(device_states, host_states):
        assert_all_close(device_state, host_state, dtype)  # max_exp_avg_sqs untouched without amsgrad


def test_optimizer_steps_take_other_arrays_through_the_reference():
    # float64 and a strided (non-contiguous) float32 view are updated in place by the array-module path
    wide = np.arange(6, dtype=np.float64)
    strided_host = np.arange(12, dtype=np.float32)
    device_wide, device_strided_base = cp.asarray(wide), cp.asarray(strided_host)
    params = [device_wide, device_strided_base[::2]]
    grads = [cp.ones(6, dtype=cp.float64), cp.ones(6, dtype=cp.float32)]
    fused.sgd_momentum_step_(params, grads, None, 0.5, 0, 0, False, 0, True)
    np.testing.assert_array_equal(cp.asnumpy(device_wide), wide - 0.5)
    expected = strided_host.copy()
    expected[::2] -= 0.5
    np.testing.assert_array_equal(cp.asnumpy(device_strided_base), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unscale_and_check(dtype):
    grads, device_grads = tensor_set(dtype, 80)
    assert kernels.unscale_and_check_(device_grads, 1 / 512) is False
    assert reference.unscale_and_check_(grads, 1 / 512) is False
    for d, h in zip(device_grads, grads):
        np.testing.assert_array_equal(cp.asnumpy(d), h)  # one fp32 product each: exact
    # the last element of an aligned tensor's second chunk, and deep inside a misaligned tensor
    for tensor, index in ((-2, TENSOR_SIZES[-2] - 1), (-1, 70000)):
        for bad in (np.inf, -np.inf, np.nan):
            device_grads[tensor][index] = bad
            assert kernels.unscale_and_check_(device_grads, 1.0) is True
            device_grads[tensor][index] = 0
    assert kernels.unscale_and_check_(device_grads, 1.0) is False
    if dtype == np.float16:  # the product overflows float16 on the way back: caught on the stored value
        device_grads[0][0] = 60000
        assert kernels.unscale_and_check_(device_grads, 2.0) is True


def test_unscale_and_check_mixes_kernel_and_reference_arrays():
    # float32 takes the kernel, float64 the array-module path; the flags of both are combined
    grads = [cp.full(5, 8.0, dtype=cp.float32), cp.array([2.0, 4.0])]
    assert fused.unscale_and_check_(grads, 0.5) is False
    np.testing.assert_array_equal(cp.asnumpy(grads[0]), np.full(5, 4.0))
    np.testing.assert_array_equal(cp.asnumpy(grads[1]), [1.0, 2.0])
    for bad in (0, 1):
        grads[bad][0] = np.inf
        assert fused.unscale_and_check_(grads, 1.0) is True
        grads[bad][0] = 0


# --- dropout ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 4097, 2**33 + 2])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 1000, 4099])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_bit_identical_to_reference(dtype, n, offset, misaligned):
    seed = 2**40 + 12345
    x = rand((n,), dtype)
    y, mask = fused.dropout_forward(to_device(x, misaligned), 0.3, seed, offset)
    expected_y, expected_mask = reference.dropout_forward(x, 0.3, seed, offset)
    np.testing.assert_array_equal(cp.asnumpy(mask), expected_mask)
    np.testing.assert_array_equal(cp.asnumpy(y), expected_y)
    np.testing.assert_array_equal(cp.asnumpy(fused.dropout_mask((n,), 0.3, seed, offset, cp)), expected_mask)
    dy = rand((n,), dtype, seed=1)
    dx = fused.dropout_backward(to_device(dy, misaligned), cp.asarray(expected_mask), 0.3)
    np.testing.assert_array_equal(cp.asnumpy(dx), reference.dropout_backward(dy, expected_mask, 0.3))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_probabilities(p):
    mask = fused.dropout_mask((1 << 20,), p, 3, 0, cp)
    np.testing.assert_array_equal(cp.asnumpy(mask), reference.dropout_mask((1 << 20,), p, 3, 0, np))
    assert abs(float(mask.mean()) - (1 - p)) < 0.005


# --- every kernel path is really a kernel ------------------------------------------------------------------


def test_kernel_paths_do_not_fall_back(reference_forbidden):
    x, b = cp.asarray(rand((4, 9), np.float32)), cp.asarray(rand((9,), np.float32))
    fused.bias_act_backward(x, x, b, "gelu_tanh")
    fused.bias_act_forward(x, b, "relu")
    fused.softmax(x)
    fused.log_softmax(x)
    fused.softmax_cross_entropy(x, cp.arange(4), -100, None)
    y, mean, rstd = fused.layer_norm_forward(x, b, b, 1e-5)
    fused.layer_norm_backward(x, x, b, mean, rstd)
    fused.sgd_momentum_step_([x], [x], [x.copy()], 0.1, 0.9, 0, False, 0, False)
    fused.adam_step_([x], [x.copy()], [x.copy()], [cp.abs(x)], None, 1, 0.1, 0.9, 0.99, 1e-8, 0, True, False)
    fused.unscale_and_check_([x], 0.5)
    fused.dropout_mask(x.shape, 0.5, 1, 0, cp)
    y, mask = fused.dropout_forward(x, 0.5, 1, 0)
    dx = fused.dropout_backward(x, mask, 0.5)
    assert dx.shape == x.shape and mask.dtype == cp.bool_
