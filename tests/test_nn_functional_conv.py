"""conv1d / conv2d and 2-D pooling: values against naive NumPy loops, gradcheck and gradgradcheck
(float64) over each stride / padding / dilation / groups option, float32 runs, and argument errors."""
import itertools
import math

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor.autograd import gradcheck, gradgradcheck
from opcheck import OpCase, check_op


def _pads(padding, kernel, dilation, nd):
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in total]
    padding = (padding,) * nd if isinstance(padding, int) else padding
    return [(p, p) for p in padding]


def np_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """Direct N-d cross-correlation: one dot product per output element."""
    nd = x.ndim - 2
    stride = (stride,) * nd if isinstance(stride, int) else stride
    dilation = (dilation,) * nd if isinstance(dilation, int) else dilation
    x = np.pad(x, [(0, 0), (0, 0)] + _pads(padding, w.shape[2:], dilation, nd))
    c_out, c_group = w.shape[:2]
    spans = [d * (k - 1) + 1 for k, d in zip(w.shape[2:], dilation)]
    out_size = [(n - s) // st + 1 for n, s, st in zip(x.shape[2:], spans, stride)]
    out = np.zeros((x.shape[0], c_out, *out_size))
    for n, co, *pos in itertools.product(range(x.shape[0]), range(c_out), *map(range, out_size)):
        g = co // (c_out // groups)
        window = tuple(slice(p * st, p * st + s, d) for p, st, s, d in zip(pos, stride, spans, dilation))
        out[(n, co, *pos)] = (x[(n, slice(g * c_group, (g + 1) * c_group)) + window] * w[co]).sum()
    return out if b is None else out + b.reshape((-1,) + (1,) * nd)


CONV2D_OPTIONS = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(padding=(1, 0), stride=(2, 1)),
    dict(dilation=2),
    dict(dilation=(1, 2), padding=(0, 1)),
    dict(groups=2),
    dict(groups=2, stride=2, padding=1),
    dict(groups=2, dilation=2, padding=1, stride=(1, 2)),
    dict(padding="same"),
    dict(padding="same", dilation=2),
    dict(padding="valid", stride=2),
]


def _conv2d_case(kw, kernel=(2, 2), bias=True):
    groups = kw.get("groups", 1)
    shapes = [(1, 2, 3, 4), (2, 2 // groups, *kernel)] + ([(2,)] if bias else [])
    return OpCase(f"conv2d({kw}, kernel={kernel})", lambda *t: F.conv2d(*t, **kw),
                  lambda *a: np_conv(*a, **kw), shapes)


@pytest.mark.parametrize("case", [_conv2d_case(kw) for kw in CONV2D_OPTIONS] + [
    _conv2d_case(dict(padding=1), kernel=(3, 2), bias=False),
    _conv2d_case(dict(padding="same"), kernel=(3, 2), bias=False),  # asymmetric 'same' padding along W
], ids=str)
def test_conv2d_grad(case):
    check_op(case)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(dilation=2, groups=2), dict(padding="same")],
                         ids=str)
def test_conv1d_grad(kw):
    groups = kw.get("groups", 1)
    check_op(OpCase(f"conv1d({kw})", lambda x, w, b: F.conv1d(x, w, b, **kw), lambda *a: np_conv(*a, **kw),
                    [(2, 2, 5), (2, 2 // groups, 3), (2,)]))


@pytest.mark.parametrize("stride,padding,dilation,groups", list(itertools.product(
    [1, 2, (2, 1)], [0, 1, (0, 2), "same", "valid"], [1, 2], [1, 3])))
def test_conv2d_every_combination_forward(stride, padding, dilation, groups):
    if padding == "same" and stride != 1:
        with pytest.raises(ValueError, match="conv2d: padding='same' needs stride 1"):
            F.conv2d(gt.zeros(1, 3, 6, 6), gt.zeros(3, 3 // groups, 3, 3), stride=stride, padding=padding,
                     groups=groups)
        return
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((6, 3 // groups, 3, 2)), rng.standard_normal(6)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = F.conv2d(gt.tensor(x), gt.tensor(w), gt.tensor(b), **kw)
    np.testing.assert_allclose(out.numpy(), np_conv(x, w, b, **kw), rtol=1e-10, atol=1e-12)


def test_conv2d_unbatched_input():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 4)), rng.standard_normal((3, 2, 2, 2))
    out = F.conv2d(gt.tensor(x), gt.tensor(w), padding=1)
    assert out.shape == (3, 5, 5)
    np.testing.assert_allclose(out.numpy(), np_conv(x[None], w, padding=1)[0], rtol=1e-12)


def test_conv2d_float32_and_size_zero_batch():
    x = gt.zeros(0, 2, 4, 4, requires_grad=True)
    w = gt.ones(3, 2, 3, 3, requires_grad=True)
    out = F.conv2d(x, w, padding=1)
    assert out.shape == (0, 3, 4, 4) and out.dtype == gt.float32
    out.sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape
    np.testing.assert_array_equal(w.grad.numpy(), 0.0)


@pytest.mark.parametrize("call,match", [
    (lambda: F.conv2d(gt.zeros(1, 3, 5, 5), gt.zeros(4, 2, 3, 3)), r"conv2d: input of shape \(1, 3, 5, 5\) has 3 channels"),
    (lambda: F.conv2d(gt.zeros(1, 4, 5, 5), gt.zeros(3, 2, 3, 3), groups=2), r"conv2d: groups=2"),
    (lambda: F.conv2d(gt.zeros(1, 2, 5, 5), gt.zeros(4, 2, 3)), r"conv2d: weight must be 4-D"),
    (lambda: F.conv2d(gt.zeros(5, 5), gt.zeros(4, 2, 3, 3)), r"conv2d: input must be 3-D"),
    (lambda: F.conv2d(gt.zeros(1, 2, 2, 2), gt.zeros(4, 2, 3, 3)), r"conv2d: input of spatial size \(2, 2\)"),
    (lambda: F.conv2d(gt.zeros(1, 2, 5, 5), gt.zeros(4, 2, 3, 3), gt.zeros(3)), r"conv2d: bias must have shape \(4,\)"),
    (lambda: F.conv1d(gt.zeros(1, 2, 5), gt.zeros(4, 2, 3), padding="full"), r"conv1d: padding must be"),
    (lambda: F.conv2d(gt.zeros(1, 2, 5, 5), gt.zeros(4, 2, 3, 3), stride=(1, 2, 3)), r"conv2d: stride must be"),
])
def test_conv_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_conv_integer_input_refused():
    with pytest.raises(TypeError, match="conv2d"):
        F.conv2d(gt.zeros(1, 1, 3, 3, dtype=gt.int64), gt.zeros(1, 1, 2, 2))


def test_conv_refuses_mixed_float_dtypes():
    """A float32 input with float64 weights is refused (as linear and PyTorch), not widened."""
    with pytest.raises(TypeError, match="conv2d: input, weight and bias must have one dtype, got float32, float64"):
        F.conv2d(gt.zeros(1, 1, 3, 3), gt.zeros(1, 1, 2, 2, dtype=gt.float64))
    with pytest.raises(TypeError, match="conv1d: .*float32, float32, float64"):
        F.conv1d(gt.zeros(1, 1, 3), gt.zeros(1, 1, 2), gt.zeros(1, dtype=gt.float64))


# --- pooling ------------------------------------------------------------------------------


def _pool_geometry(n, k, s, p, d, ceil_mode):
    span = d * (k - 1) + 1
    out = (n + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def np_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, mode="max", count_include_pad=True):
    """Naive pooling, one window at a time (PyTorch's definitions of the windows and divisors)."""
    two = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    kernel, padding, dilation = two(kernel_size), two(padding), two(dilation)
    stride = kernel if stride is None else two(stride)
    out_size = [_pool_geometry(n, k, s, p, d, ceil_mode)
                for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    out = np.zeros(x.shape[:2] + tuple(out_size))
    for i, j in itertools.product(*map(range, out_size)):
        starts = (i * stride[0] - padding[0], j * stride[1] - padding[1])
        rows = [starts[0] + a * dilation[0] for a in range(kernel[0])]
        cols = [starts[1] + a * dilation[1] for a in range(kernel[1])]
        inside = [(r, c) for r in rows for c in cols if 0 <= r < x.shape[2] and 0 <= c < x.shape[3]]
        values = np.stack([x[:, :, r, c] for r, c in inside], axis=-1)
        if mode == "max":
            out[:, :, i, j] = values.max(axis=-1)
            continue
        if count_include_pad:  # the window clipped to the padded input
            ends = [min(st + k, n + p) for st, k, n, p in zip(starts, kernel, x.shape[2:], padding)]
            divisor = (ends[0] - starts[0]) * (ends[1] - starts[1])
        else:
            divisor = len(inside)
        out[:, :, i, j] = values.sum(axis=-1) / divisor
    return out


POOL_OPTIONS = [
    dict(kernel_size=2),
    dict(kernel_size=2, stride=1),
    dict(kernel_size=2, stride=3),  # gaps: inputs in no window
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(1, 3), stride=(2, 1), padding=(0, 1)),
    dict(kernel_size=2, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
]


@pytest.mark.parametrize("kw", POOL_OPTIONS + [dict(kernel_size=2, dilation=2), dict(kernel_size=2, dilation=(1, 2), padding=1),
                                dict(kernel_size=2, dilation=2, stride=3)],
                         ids=str)
def test_max_pool2d_grad(kw):
    check_op(OpCase(f"max_pool2d({kw})", lambda x: F.max_pool2d(x, **kw), lambda a: np_pool(a, mode="max", **kw),
                    [(1, 1, 5, 4)]))


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("kw", POOL_OPTIONS, ids=str)
def test_avg_pool2d_grad(kw, include_pad):
    check_op(OpCase(f"avg_pool2d({kw}, {include_pad})", lambda x: F.avg_pool2d(x, count_include_pad=include_pad, **kw),
                    lambda a: np_pool(a, mode="avg", count_include_pad=include_pad, **kw), [(1, 1, 5, 4)]))


def test_avg_pool2d_divisor_override():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out = F.avg_pool2d(gt.tensor(x), 2, divisor_override=2)
    np.testing.assert_allclose(out.numpy(), np_pool(x, 2, mode="avg") * 2)


def np_adaptive_avg(x, size):
    out = np.zeros(x.shape[:2] + size)
    for i, j in itertools.product(range(size[0]), range(size[1])):
        r0, r1 = (i * x.shape[2]) // size[0], math.ceil((i + 1) * x.shape[2] / size[0])
        c0, c1 = (j * x.shape[3]) // size[1], math.ceil((j + 1) * x.shape[3] / size[1])
        out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


@pytest.mark.parametrize("size,expected", [(1, (1, 1)), ((2, 3), (2, 3)), ((3, None), (3, 4)), (5, (5, 5))], ids=str)
def test_adaptive_avg_pool2d_grad(size, expected):
    check_op(OpCase(f"adaptive_avg_pool2d({size})", lambda x: F.adaptive_avg_pool2d(x, size),
                    lambda a: np_adaptive_avg(a, expected), [(1, 1, 5, 4)]))


def test_pooling_unbatched_input():
    x = np.random.default_rng(2).standard_normal((2, 4, 4))
    for fn, ref in [(F.max_pool2d, "max"), (F.avg_pool2d, "avg")]:
        out = fn(gt.tensor(x), 2)
        assert out.shape == (2, 2, 2)
        np.testing.assert_allclose(out.numpy(), np_pool(x[None], 2, mode=ref)[0])
    assert F.adaptive_avg_pool2d(gt.tensor(x), 1).shape == (2, 1, 1)


def test_max_pool2d_gradient_goes_to_first_maximum():
    x = gt.tensor([[[[1.0, 3.0], [3.0, 0.0]]]], requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_max_pool2d_return_indices():
    x = gt.tensor(np.array([[[[1.0, 5.0, 2.0], [0.0, 3.0, 9.0], [4.0, 8.0, 7.0]]]]))
    out, idx = F.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(out.numpy()[0, 0], [[1, 5, 5, 2], [1, 5, 9, 9], [4, 8, 9, 9], [4, 8, 8, 7]])
    np.testing.assert_array_equal(idx.numpy()[0, 0], [[0, 1, 1, 2], [0, 1, 5, 5], [6, 7, 5, 5], [6, 7, 7, 8]])
    assert idx.dtype == gt.int64


def test_max_pool2d_propagates_nan():
    x = gt.tensor([[[[1.0, math.nan], [2.0, 3.0]]]])
    assert math.isnan(F.max_pool2d(x, 2).item())


def test_max_pool2d_padding_never_wins():
    """A window whose inputs are all -inf ties with its -inf padding: the first input wins, and its
    gradient reaches the input (as PyTorch's index 0, gradient [1, 1, 1, 1])."""
    x = gt.tensor([[[[-math.inf, 1.0], [2.0, 3.0]]]], requires_grad=True)
    out, idx = F.max_pool2d(x, 2, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx.numpy()[0, 0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(out.numpy()[0, 0], [[-math.inf, 1.0], [2.0, 3.0]])
    F.max_pool2d(x, 2, stride=2, padding=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((1, 1, 2, 2)))


def test_pooling_ceil_mode_takes_an_input_shorter_than_the_kernel():
    """ceil_mode keeps a window that starts inside the input and runs past it (as PyTorch)."""
    x = gt.tensor(np.arange(3.0).reshape(1, 1, 1, 3))
    np.testing.assert_allclose(F.avg_pool2d(x, 2, ceil_mode=True).numpy(), [[[[0.5, 2.0]]]])
    np.testing.assert_array_equal(F.max_pool2d(x, 2, ceil_mode=True).numpy(), [[[[1.0, 2.0]]]])
    with pytest.raises(ValueError, match="smaller than the kernel"):
        F.avg_pool2d(x, 2)


@pytest.mark.parametrize("call,match", [
    (lambda: F.max_pool2d(gt.zeros(1, 1, 4, 4), 2, padding=2), r"max_pool2d: need .* padding at most half"),
    (lambda: F.avg_pool2d(gt.zeros(1, 1, 1, 1), 3), r"avg_pool2d: input of shape \(1, 1, 1, 1\)"),
    (lambda: F.max_pool2d(gt.zeros(4, 4), 2), r"max_pool2d: input must be 3-D"),
    (lambda: F.adaptive_avg_pool2d(gt.zeros(1, 1, 4, 4), (1, 2, 3)), r"adaptive_avg_pool2d: output_size"),
])
def test_pool_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_conv_pool_chain_second_order():
    """Hessian-vector products through conv -> relu -> max_pool -> avg_pool -> linear reduction."""
    rng = np.random.default_rng(3)
    x = gt.tensor(rng.standard_normal((1, 1, 5, 5)), requires_grad=True)
    w = gt.tensor(rng.standard_normal((2, 1, 2, 2)), requires_grad=True)

    def net(x, w):
        h = F.max_pool2d(F.conv2d(x, w, padding=1).tanh(), 2, stride=1)
        return F.avg_pool2d(h * h, 2).sum()

    assert gradcheck(net, (x, w))
    assert gradgradcheck(net, (x, w))
