"""Reductions: each op against NumPy, gradcheck + gradgradcheck, and the cases that need care
(products with zeros, ties in max/min, logsumexp far from 0, norms at 0, empty axes)."""
import math

import numpy as np
import pytest

import gradtensor as gt
from gradtensor.autograd import gradcheck, gradgradcheck
from opcheck import OpCase, check_op

INF = math.inf


def _reduction_cases(name, fn, ref, configs, **options):
    """One OpCase per (shape, kwargs): fn(x, **kwargs) against ref(a, **kwargs)."""
    return [
        OpCase(f"{name}({kw})", lambda x, kw=kw: fn(x, **kw), lambda a, kw=kw: ref(a, **kw), [shape], **options)
        for shape, kw in configs
    ]


# (shape, kwargs): full and partial reductions, negative and tuple axes, keepdims, size-1 dims, 0-d,
# and a size-0 tensor reduced over its empty axis and over a non-empty one
AXES = [
    ((2, 3), {}),
    ((2, 3), {"axis": 0}),
    ((2, 3), {"axis": -1, "keepdims": True}),
    ((2, 1, 3), {"axis": (0, 2)}),
    ((2, 1, 3), {"axis": 1}),
    ((2, 1, 3), {"keepdims": True}),
    ((), {}),
    ((), {"axis": 0}),
    ((0, 3), {"axis": 0}),
    ((0, 3), {"axis": 1, "keepdims": True}),
]
NONEMPTY_AXES = [c for c in AXES if 0 not in c[0] or c[1].get("axis") == 1]


def _np_0d_axis(ref):
    """NumPy rejects axis=0 on a 0-d array; gradtensor (as PyTorch) reduces nothing there."""
    def call(a, axis=None, **kw):
        return ref(a, axis=None if a.ndim == 0 else axis, **kw)
    return call


def _np_logsumexp(a, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))


CASES = (
    _reduction_cases("sum", gt.sum, _np_0d_axis(np.sum), AXES)
    + _reduction_cases("mean", gt.mean, _np_0d_axis(np.mean), [c for c in AXES if 0 not in c[0]])
    + _reduction_cases("var", gt.var, _np_0d_axis(np.var), NONEMPTY_AXES)
    + _reduction_cases("var", gt.var, np.var, [((2, 3), {"axis": 1, "ddof": 1}), ((4,), {"ddof": 1})])
    + _reduction_cases("std", gt.std, _np_0d_axis(np.std), NONEMPTY_AXES)
    + _reduction_cases("std", gt.std, np.std, [((2, 3), {"axis": 0, "ddof": 1, "keepdims": True})])
    + _reduction_cases("prod", gt.prod, _np_0d_axis(np.prod), AXES)
    + _reduction_cases("max", gt.max, _np_0d_axis(np.max), NONEMPTY_AXES)
    + _reduction_cases("min", gt.min, _np_0d_axis(np.min), NONEMPTY_AXES)
    + _reduction_cases("logsumexp", gt.logsumexp, _np_0d_axis(_np_logsumexp), NONEMPTY_AXES)
    + _reduction_cases(
        "norm", gt.norm, np.linalg.norm,
        [
            ((2, 1, 3), {}),  # 2-norm of all elements, whatever the rank
            ((2, 3), {"keepdims": True}),
            ((), {}),
            ((2, 3), {"axis": 1}),
            ((2, 3), {"ord": 2, "axis": 0, "keepdims": True}),
            ((2, 3), {"ord": 1, "axis": -1}),
            ((2, 3), {"ord": INF, "axis": 1}),
            ((2, 3), {"ord": -INF, "axis": 0}),
            ((4,), {"ord": 3}),
            ((4,), {"ord": 1}),
            ((2, 3), {"ord": "fro"}),
            ((2, 3), {"ord": 1}),  # axis None on a 2-D tensor: matrix norms
            ((2, 3), {"ord": -1, "keepdims": True}),
            ((3, 2), {"ord": INF}),
            ((3, 2), {"ord": -INF}),
            ((2, 1, 3), {"ord": 1, "axis": (2, 0)}),
            ((2, 1, 3), {"ord": INF, "axis": (0, 2), "keepdims": True}),
            ((2, 2, 3), {"ord": "fro", "axis": (-1, 0)}),
            ((0, 3), {"axis": 0}),
            # from the singular values: wide, tall, square, and stacks along any pair of axes
            ((2, 3), {"ord": "nuc"}),
            ((3, 2), {"ord": 2}),
            ((3, 3), {"ord": -2}),
            ((2, 1, 3), {"ord": "nuc", "axis": (2, 0), "keepdims": True}),
            ((3, 2, 2), {"ord": 2, "axis": (0, 2)}),
            ((1, 3), {"ord": -2}),
        ],
        away_from=[0.0],  # the kink of |x|
    )
    # orders below 1 and negative ones are not convex, nor differentiable at 0: stay away from it
    + _reduction_cases(
        "norm", gt.norm, np.linalg.norm,
        [((4,), {"ord": 0.5}), ((2, 3), {"ord": -1, "axis": 1}), ((2, 3), {"ord": -2.5, "axis": 0})],
        domain=(0.3, 2.0),
    )
)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reduction(case):
    check_op(case)


def _t(values, dtype=np.float64, requires_grad=True):
    return gt.tensor(np.array(values, dtype=dtype), requires_grad=requires_grad)


def _grad(fn, x):
    (g,) = gt.autograd.grad(fn(x), [x])
    return g.numpy()


# --- prod with zeros -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([2.0, 0.0, 3.0], [0.0, 6.0, 0.0]),  # one zero: only it has a gradient
        ([2.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]),  # two zeros: none
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([0.0], [1.0]),
    ],
)
def test_prod_gradient_with_zeros(values, expected):
    x = _t(values)
    np.testing.assert_array_equal(_grad(gt.prod, x), expected)
    assert gradcheck(gt.prod, [x])
    assert gradgradcheck(gt.prod, [x])


def test_prod_with_zeros_second_derivative_is_exact():
    # d2/dx1 dx2 of x0 x1 x2 x3 at x = (2, 0, 0, 3) is x0 x3 = 6, although the gradient is 0
    x = _t([2.0, 0.0, 0.0, 3.0])
    (g,) = gt.autograd.grad(gt.prod(x), [x], create_graph=True)
    (h1,) = gt.autograd.grad((g * _t([0, 1, 0, 0], requires_grad=False)).sum(), [x])  # the row d(dprod/dx1)/dx
    np.testing.assert_allclose(h1.numpy(), [0.0, 0.0, 6.0, 0.0])


def test_prod_with_zeros_per_slice():
    # rows with no, one, two and three zeros, reduced along axis 1 and (keepdims) along axis 0
    a = np.array([[1.5, -2.0, 0.5], [0.0, 2.0, -1.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    x = gt.tensor(a, requires_grad=True)
    expected = np.array([[-1.0, 0.75, -3.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(_grad(lambda t: gt.prod(t, axis=1).sum(), x), expected)
    for fn in (lambda t: gt.prod(t, axis=1), lambda t: gt.prod(t, axis=0, keepdims=True)):
        assert gradcheck(fn, [x])
        assert gradgradcheck(fn, [x])


def test_prod_float32_with_zero_keeps_dtype():
    x = _t([2.0, 0.0, 3.0], dtype=np.float32)
    gt.prod(x).backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 6.0, 0.0])


# --- max / min ties ---------------------------------------------------------------------------------


def test_max_splits_gradient_among_ties():
    x = _t([1.0, 3.0, 3.0, 2.0])
    np.testing.assert_array_equal(_grad(gt.max, x), [0.0, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(_grad(gt.min, _t([1.0, 3.0, 1.0, 1.0])), [1 / 3, 0.0, 1 / 3, 1 / 3])


def test_max_ties_along_an_axis():
    x = _t([[2.0, 2.0, 1.0], [0.0, 5.0, -1.0]])
    np.testing.assert_array_equal(
        _grad(lambda t: (gt.max(t, axis=1) * _t([1.0, 4.0], requires_grad=False)).sum(), x),
        [[0.5, 0.5, 0.0], [0.0, 4.0, 0.0]],
    )
    np.testing.assert_array_equal(_grad(lambda t: gt.min(t, axis=0, keepdims=True).sum(), _t([[1.0], [1.0]])),
                                  [[0.5], [0.5]])


def test_max_propagates_nan_and_its_gradient():
    x = _t([1.0, np.nan, 2.0])
    assert np.isnan(gt.max(x).item())
    np.testing.assert_array_equal(_grad(gt.max, x), [0.0, 1.0, 0.0])


def test_max_of_empty_axis_raises():
    with pytest.raises(ValueError, match=r"max: cannot reduce a size-0 axis \(shape \(0, 3\)"):
        gt.max(gt.zeros((0, 3)), axis=0)
    with pytest.raises(ValueError, match="min: "):
        gt.zeros((0,)).min()
    assert gt.max(gt.zeros((0, 3)), axis=1).shape == (0,)


# --- logsumexp stability ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("big", [1e4, -1e4])
def test_logsumexp_does_not_overflow(dtype, big):
    x = _t([big, big, big - 1.0], dtype=dtype)
    out = gt.logsumexp(x)
    expected = big + math.log(2 + math.exp(-1.0))
    np.testing.assert_allclose(out.item(), expected, rtol=1e-6)
    out.backward()
    p = np.array([1.0, 1.0, math.exp(-1.0)]) / (2 + math.exp(-1.0))
    np.testing.assert_allclose(x.grad.numpy(), p, rtol=1e-5)
    assert x.grad.dtype == dtype


def test_logsumexp_far_apart_and_infinite():
    x = _t([[1e4, 0.0], [-np.inf, -np.inf], [np.inf, 1.0]])
    out = gt.logsumexp(x, axis=1)
    np.testing.assert_array_equal(out.numpy(), [1e4, -np.inf, np.inf])
    # a fully masked (all -inf) row gets a zero gradient, not NaN
    masked = _t([[-np.inf, -np.inf], [0.0, np.log(3.0)]])
    np.testing.assert_allclose(_grad(lambda t: gt.logsumexp(t, axis=1).sum(), masked), [[0.0, 0.0], [0.25, 0.75]])
    y = _t([1e4, 0.0])
    np.testing.assert_allclose(_grad(gt.logsumexp, y), [1.0, 0.0])
    assert gradgradcheck(lambda t: gt.logsumexp(t * 1e3), [_t([3.0, 3.001, 2.999])])


def test_logsumexp_of_empty_is_minus_inf():
    out = gt.logsumexp(gt.zeros((0, 2)), axis=0)
    np.testing.assert_array_equal(out.numpy(), [-np.inf, -np.inf])


# --- norms ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"ord": 2}, {"ord": 1}, {"ord": INF}, {"ord": 3}, {"axis": 1}, {"ord": "fro", "axis": (0, 1)},
     {"ord": 1, "axis": (0, 1)}, {"ord": 4, "axis": 0}],
)
def test_norm_at_zero_has_zero_gradient(kwargs):
    shape = (3,) if "axis" not in kwargs else (2, 3)
    x = gt.zeros(shape, dtype=gt.float64, requires_grad=True)
    out = gt.norm(x, **kwargs)
    assert np.all(out.numpy() == 0)
    (g,) = gt.autograd.grad(out.sum(), [x], create_graph=True)
    np.testing.assert_array_equal(g.numpy(), np.zeros(shape))
    (gg,) = gt.autograd.grad(g.sum(), [x], allow_unused=True)
    assert gg is None or np.all(np.isfinite(gg.numpy()))


def test_norm_zero_in_one_slice_only():
    x = _t([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(_grad(lambda t: gt.norm(t, axis=1).sum(), x), [[0.0, 0.0], [0.6, 0.8]])


def test_norm_order_0_counts_nonzeros_without_gradient():
    x = _t([[0.0, 1.5, -2.0], [0.0, 0.0, 3.0]])
    out = gt.norm(x, ord=0, axis=1)
    np.testing.assert_array_equal(out.numpy(), [2.0, 1.0])
    assert out.dtype == np.float64 and not out.requires_grad


def test_norm_of_integers_is_float():
    out = gt.norm(gt.tensor([3, 4]))
    assert out.dtype == gt.float32 and out.item() == 5.0


@pytest.mark.parametrize(
    "shape, kwargs, message",
    [
        ((2, 2), {"ord": 3}, "norm: invalid order 3 for matrices"),
        ((0, 2), {"ord": "nuc"}, "norm: cannot reduce a size-0 axis"),
        ((3,), {"ord": "fro"}, "norm: invalid order 'fro' for vectors"),
        ((2, 2, 2), {"ord": 1}, r"norm: ord=1 needs a 1-D or 2-D tensor or an explicit axis, got shape \(2, 2, 2\)"),
        ((2, 2, 2), {"axis": (0, 1, 2)}, "norm: axis must be an int or a pair of ints"),
        ((2, 2), {"axis": (1, -1)}, "norm: the two matrix axes are the same"),
        ((2, 2), {"axis": 2}, "norm: axis 2 is out of range"),
    ],
)
def test_norm_errors(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gt.norm(gt.ones(shape), **kwargs)


# --- moments -----------------------------------------------------------------------------------------------


def test_std_of_constant_slice_has_zero_gradient():
    x = _t([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]])
    g = _grad(lambda t: gt.std(t, axis=1).sum(), x)
    np.testing.assert_allclose(g, [[0.0, 0.0, 0.0], [-1 / math.sqrt(6), 0.0, 1 / math.sqrt(6)]])


def test_var_ddof_is_keyword():
    x = _t([1.0, 2.0, 4.0])
    assert gt.var(x, ddof=1).item() == pytest.approx(np.var([1.0, 2.0, 4.0], ddof=1))
    assert x.var(0, True).shape == (1,)  # positional arguments are axis, keepdims (as sum and mean)


def test_mean_of_empty_is_nan_with_numpy_shape():
    out = gt.mean(gt.zeros((0, 3)), axis=0, keepdims=True)
    assert out.shape == (1, 3) and np.all(np.isnan(out.numpy()))


# --- dtypes, empty tensors, non-differentiable reductions ---------------------------------------------------


def test_integer_and_bool_accumulation_dtypes():
    assert gt.sum(gt.tensor(np.array([1, 2], np.int32))).dtype == np.int64
    assert gt.prod(gt.tensor(np.array([True, True]))).dtype == np.int64
    assert gt.prod(gt.tensor(np.array([200, 2], np.uint8))).item() == 400
    assert gt.mean(gt.tensor([1, 2])).dtype == gt.float32
    assert gt.var(gt.tensor([1, 2])).item() == 0.25


def test_empty_reductions_follow_numpy():
    x = gt.zeros((0, 3), dtype=gt.float64, requires_grad=True)
    assert gt.sum(x).item() == 0.0
    assert gt.prod(x).item() == 1.0
    np.testing.assert_array_equal(gt.sum(x, axis=0).numpy(), np.zeros(3))
    (gt.sum(x) + gt.prod(x, axis=0).sum() + gt.norm(x)).backward()
    assert x.grad.shape == (0, 3) and x.grad.dtype == np.float64


@pytest.mark.parametrize("op, ref", [(gt.argmax, np.argmax), (gt.argmin, np.argmin)])
@pytest.mark.parametrize("kwargs", [{}, {"axis": 0}, {"axis": -1, "keepdims": True}, {"keepdims": True}])
def test_arg_extrema(op, ref, kwargs):
    a = np.array([[3.0, -1.0, 7.0], [7.5, 0.0, -2.0]])
    out = op(gt.tensor(a, requires_grad=True), **kwargs)
    expected = ref(a, **kwargs)
    assert out.shape == expected.shape and out.dtype == np.int64 and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), expected)


def test_arg_extrema_errors_and_0d():
    assert gt.argmax(gt.tensor(3.0)).item() == 0 and gt.argmin(gt.tensor(3.0), axis=0).item() == 0
    with pytest.raises(ValueError, match=r"argmax: cannot take it over a size-0 axis \(shape \(0, 3\), axis 0\)"):
        gt.argmax(gt.zeros((0, 3)), axis=0)
    with pytest.raises(ValueError, match="argmin: axis 2 is out of range"):
        gt.argmin(gt.zeros((2, 3)), axis=2)


@pytest.mark.parametrize("op, ref", [(gt.all, np.all), (gt.any, np.any)])
@pytest.mark.parametrize("kwargs", [{}, {"axis": 1}, {"axis": (0, 1), "keepdims": True}, {"axis": 0}])
def test_all_any(op, ref, kwargs):
    a = np.array([[1.0, 0.0, 2.0], [3.0, 4.0, 5.0]])
    out = op(gt.tensor(a), **kwargs)
    expected = ref(a, **kwargs)
    assert out.dtype == np.bool_ and out.shape == np.shape(expected)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert op(gt.zeros((0,))).item() == ref(np.zeros(0))


def test_reduction_methods_and_errors():
    x = gt.tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum(1).tolist() == [3.0, 12.0]
    assert x.max(axis=0, keepdims=True).shape == (1, 3)
    assert x.prod().item() == 0.0 and x.norm().item() == pytest.approx(math.sqrt(55))
    with pytest.raises(ValueError, match="sum: axis 2 is out of range for a tensor with 2 dimensions"):
        x.sum(2)
    with pytest.raises(ValueError, match=r"mean: repeated axis in \(0, -2\)"):
        x.mean((0, -2))
    with pytest.raises(TypeError, match="logsumexp: expected a Tensor, got ndarray"):
        gt.logsumexp(np.ones(3))


@pytest.mark.parametrize(
    "fn", [gt.sum, gt.mean, gt.var, gt.std, gt.prod, gt.logsumexp, gt.norm, lambda x: gt.norm(x, 1, axis=0)],
)
def test_reductions_run_in_float32_under_autocast(fn):
    x = gt.tensor(np.array([1.0, 2.0, 4.0], dtype=np.float16), requires_grad=True)
    with gt.amp.autocast("cpu", dtype=gt.float16):
        out = fn(x)
    assert out.dtype == gt.float32
    out.backward()
    assert x.grad.dtype == gt.float16


def test_reductions_accept_parameters():
    w = gt.nn.Parameter(gt.tensor(np.array([[1.0, -2.0], [3.0, 0.5]])))
    (gt.sum(w) + gt.max(w) + gt.norm(w, ord=1)).backward()  # matrix 1-norm: the column (1, 3) wins
    np.testing.assert_array_equal(w.grad.numpy(), [[2.0, 1.0], [3.0, 1.0]])


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=">f8"),  # byte-swapped: the sum is native, as NumPy's
    np.arange(6, dtype=np.int8), np.array([True, True, False]), np.arange(6, dtype=np.uint16),  # widened
    np.arange(6, dtype=np.float16).reshape(2, 3)[:, ::2], np.array(2.5, np.float32),
], ids=repr)
def test_full_sum_has_numpys_dtype_and_value(array):
    out = gt.sum(gt.tensor(array))
    expected = array.sum()
    assert out.shape == () and out.dtype == expected.dtype
    assert out.item() == expected
