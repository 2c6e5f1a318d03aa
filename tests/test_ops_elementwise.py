"""Elementwise ops: forward vs NumPy, gradcheck and gradgradcheck over broadcasting shapes (the OpCase
table), then the behaviour a table cannot express: dtypes, operators, extremes, ties, errors."""
import math
import operator
import warnings

import numpy as np
import pytest

import gradtensor as gt
from gradtensor import backend
from opcheck import OpCase, check_op

UNARY_SHAPES = [(), (1,), (3,), (2, 3), (2, 1, 3)]
BINARY_SHAPES = [[(2, 3), (3,)], [(3, 1), (1, 4)], [(), (2, 3)], [(2, 1, 3), (4, 1)], [(1,), ()], [(2, 3), (2, 3)]]
INTEGERS = [-2.0, -1.0, 0.0, 1.0, 2.0]
HALVES = [-1.5, -0.5, 0.5, 1.5]

# name: (reference, domain, away_from); the gradtensor function is gt.<name>
UNARY = {
    "neg": (np.negative, (-2.0, 2.0), None),
    "abs": (np.abs, (-2.0, 2.0), [0.0]),
    "sign": (np.sign, (-2.0, 2.0), [0.0]),
    "exp": (np.exp, (-2.0, 2.0), None),
    "exp2": (np.exp2, (-2.0, 2.0), None),
    "log": (np.log, (0.5, 2.0), None),
    "log2": (np.log2, (0.5, 2.0), None),
    "log10": (np.log10, (0.5, 2.0), None),
    "log1p": (np.log1p, (-0.5, 2.0), None),
    "expm1": (np.expm1, (-2.0, 2.0), None),
    "sqrt": (np.sqrt, (0.5, 2.0), None),
    "rsqrt": (lambda x: 1 / np.sqrt(x), (0.5, 2.0), None),
    "square": (np.square, (-2.0, 2.0), None),
    "reciprocal": (np.reciprocal, (-2.0, 2.0), [0.0]),
    "sin": (np.sin, (-2.0, 2.0), None),
    "cos": (np.cos, (-2.0, 2.0), None),
    "tan": (np.tan, (-1.2, 1.2), None),
    "tanh": (np.tanh, (-2.0, 2.0), None),
    "sinh": (np.sinh, (-2.0, 2.0), None),
    "cosh": (np.cosh, (-2.0, 2.0), None),
    "arcsin": (np.arcsin, (-0.9, 0.9), None),
    "arccos": (np.arccos, (-0.9, 0.9), None),
    "arctan": (np.arctan, (-2.0, 2.0), None),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), (-4.0, 4.0), None),
    "relu": (lambda x: np.maximum(x, 0), (-2.0, 2.0), [0.0]),
    "erf": (np.vectorize(math.erf), (-2.0, 2.0), None),
    "floor": (np.floor, (-2.0, 2.0), INTEGERS),
    "ceil": (np.ceil, (-2.0, 2.0), INTEGERS),
    "round": (np.round, (-2.0, 2.0), HALVES),
}

UNARY_CASES = [
    OpCase(name, getattr(gt, name), ref, [shape], domain=domain, away_from=away)
    for name, (ref, domain, away) in UNARY.items()
    for shape in UNARY_SHAPES
] + [
    OpCase("round(decimals=1)", lambda x: gt.round(x, 1), lambda x: np.round(x, 1), [(2, 3)],
           away_from=[k / 10 + 0.05 for k in range(-20, 20)]),
    # operator and method spellings of the unary functions
    OpCase("-x", operator.neg, np.negative, [(2, 3)]),
    OpCase("abs(x)", abs, np.abs, [(2, 3)], away_from=[0.0]),
    OpCase("+x", operator.pos, lambda x: x, [(2, 3)]),
    OpCase("x.exp()", lambda x: x.exp(), np.exp, [(2, 3)]),
    OpCase("x.sigmoid()", lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), [(2, 3)]),
]

# name: (function, reference, domain, away_from, Python scalar for the mixed forms)
BINARY = {
    "add": (gt.add, np.add, (-2.0, 2.0), None, 1.5),
    "sub": (gt.sub, np.subtract, (-2.0, 2.0), None, 1.5),
    "mul": (gt.mul, np.multiply, (-2.0, 2.0), None, 1.5),
    "div": (gt.div, np.divide, (-2.0, 2.0), [0.0], 1.5),
    "pow": (gt.pow, np.power, (0.5, 2.0), None, 1.7),
    "arctan2": (gt.arctan2, np.arctan2, (-2.0, 2.0), [0.0], 0.7),
    "maximum": (gt.maximum, np.maximum, (-2.0, 2.0), None, 0.3),
    "minimum": (gt.minimum, np.minimum, (-2.0, 2.0), None, 0.3),
    # piecewise: finite differences are exact away from the jumps, which random points miss
    "floor_divide": (gt.floor_divide, np.floor_divide, (-2.0, 2.0), [0.0], 0.7),
    "remainder": (gt.remainder, np.remainder, (-2.0, 2.0), [0.0], 0.7),
}


def _binary_cases():
    cases = []
    for name, (fn, ref, domain, away, scalar) in BINARY.items():
        kw = dict(domain=domain, away_from=away)
        cases += [OpCase(name, fn, ref, shapes, **kw) for shapes in BINARY_SHAPES]
        for shape in [(), (2, 3)]:
            cases.append(OpCase(f"{name}(x, {scalar})", lambda x, f=fn, s=scalar: f(x, s),
                                lambda x, r=ref, s=scalar: r(x, s), [shape], **kw))
            cases.append(OpCase(f"{name}({scalar}, x)", lambda x, f=fn, s=scalar: f(s, x),
                                lambda x, r=ref, s=scalar: r(s, x), [shape], **kw))
        # one input needing grad at a time (the other's gradient is skipped)
        cases += [OpCase(name, fn, ref, [(2, 3), (3,)], grad_inputs=[i], **kw) for i in (0, 1)]
    return cases


OPERATORS = {
    "+": (operator.add, np.add, (-2.0, 2.0), None),
    "-": (operator.sub, np.subtract, (-2.0, 2.0), None),
    "*": (operator.mul, np.multiply, (-2.0, 2.0), None),
    "/": (operator.truediv, np.divide, (-2.0, 2.0), [0.0]),
    "//": (operator.floordiv, np.floor_divide, (-2.0, 2.0), [0.0]),
    "%": (operator.mod, np.remainder, (-2.0, 2.0), [0.0]),
    "**": (operator.pow, np.power, (0.5, 2.0), None),
}

OPERATOR_CASES = [
    case
    for sym, (op, ref, domain, away) in OPERATORS.items()
    for case in (
        OpCase(f"a {sym} b", op, ref, [(2, 3), (3,)], domain=domain, away_from=away),
        OpCase(f"a {sym} 1.25", lambda x, op=op: op(x, 1.25), lambda x, r=ref: r(x, 1.25), [(2, 3)],
               domain=domain, away_from=away),
        OpCase(f"1.25 {sym} b", lambda x, op=op: op(1.25, x), lambda x, r=ref: r(1.25, x), [(2, 3)],
               domain=domain, away_from=away),
    )
] + [
    OpCase("x ** 3 (negative base)", lambda x: x**3, lambda x: x**3, [(2, 3)]),
    OpCase("x ** 2 (int exponent)", lambda x: x**2, np.square, [(2, 3)]),
]

CLIP_AWAY = [-0.5, 0.5]
_COND = np.array([[True], [False]])  # (2, 1): broadcasts against (3,) and (2, 3)

SELECTION_CASES = [
    OpCase("clip(x, -0.5, 0.5)", lambda x: gt.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5),
           [(2, 3)], away_from=CLIP_AWAY),
    OpCase("clip(x, -0.5, 0.5)", lambda x: gt.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5),
           [()], away_from=CLIP_AWAY, seed=3),
    OpCase("clip(x, min=-0.5)", lambda x: gt.clip(x, min=-0.5), lambda x: np.maximum(x, -0.5),
           [(2, 3)], away_from=CLIP_AWAY),
    OpCase("clip(x, max=0.5)", lambda x: gt.clip(x, max=0.5), lambda x: np.minimum(x, 0.5),
           [(2, 3)], away_from=CLIP_AWAY),
    OpCase("x.clip(-0.5, 0.5)", lambda x: x.clip(-0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5),
           [(2, 1, 3)], away_from=CLIP_AWAY),
    # tensor bounds, broadcasting against x (lo > hi in some places: hi wins, as NumPy)
    OpCase("clip(x, lo, hi)", gt.clip, np.clip, [(2, 3), (3,), (2, 1)]),
    OpCase("clip(x, lo, hi)", gt.clip, np.clip, [(3,), (2, 3), ()], seed=1),
    OpCase("clip(x, lo)", lambda x, lo: gt.clip(x, lo), np.maximum, [(2, 3), (3,)]),
    OpCase("clip(x, max=hi)", lambda x, hi: gt.clip(x, max=hi), np.minimum, [(2, 1), (3,)]),
    OpCase("clip(x, lo, 0.5)", lambda x, lo: gt.clip(x, lo, 0.5), lambda x, lo: np.clip(x, lo, 0.5),
           [(2, 3), (3,)], away_from=CLIP_AWAY),
    OpCase("where(c, a, b)", lambda a, b: gt.where(gt.tensor(_COND), a, b),
           lambda a, b: np.where(_COND, a, b), [(2, 3), (3,)]),
    OpCase("where(c, a, b)", lambda a, b: gt.where(gt.tensor(_COND), a, b),
           lambda a, b: np.where(_COND, a, b), [(), (1, 3)]),
    OpCase("where(c, a, 0.5)", lambda a: gt.where(gt.tensor(_COND), a, 0.5),
           lambda a: np.where(_COND, a, 0.5), [(3,)]),
    OpCase("where(c, 0.5, b)", lambda b: gt.where(_COND, 0.5, b), lambda b: np.where(_COND, 0.5, b), [(2, 3)]),
    OpCase("where(c, a, b) c from a", lambda a, b: gt.where(a > 0, a, b), lambda a, b: np.where(a > 0, a, b),
           [(2, 3), (2, 1)], away_from=[0.0]),
]

ALL_CASES = UNARY_CASES + _binary_cases() + OPERATOR_CASES + SELECTION_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=str)
def test_op(case):
    check_op(case)


def test_table_covers_every_elementwise_function():
    api = ("add sub mul div pow neg abs sign exp exp2 log log2 log10 log1p expm1 sqrt rsqrt square reciprocal "
           "sin cos tan tanh sinh cosh arcsin arccos arctan arctan2 sigmoid relu maximum minimum clip where erf "
           "floor ceil round").split()
    tested = {case.name.split("(")[0] for case in ALL_CASES}
    assert set(api) <= tested, set(api) - tested


# --- gradients with known values -----------------------------------------------------------------


def _grads(fn, *arrays):
    tensors = [gt.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]
    fn(*tensors).sum().backward()
    return [t.grad.numpy() for t in tensors]


@pytest.mark.parametrize("fn", [gt.maximum, gt.minimum])
def test_maximum_minimum_split_ties_evenly(fn):
    ga, gb = _grads(fn, [1.0, 2.0, -1.0], [1.0, 1.0, -1.0])
    winner_is_a = 1.0 if fn is gt.maximum else 0.0
    np.testing.assert_array_equal(ga, [0.5, winner_is_a, 0.5])
    np.testing.assert_array_equal(gb, [0.5, 1 - winner_is_a, 0.5])


def test_maximum_tie_with_broadcast_scalar_tensor():
    ga, gb = _grads(gt.maximum, [0.0, 1.0, 0.0], 0.0)
    np.testing.assert_array_equal(ga, [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(gb, 1.0)  # 0.5 + 0 + 0.5


def test_floor_divide_has_zero_gradient():
    ga, gb = _grads(operator.floordiv, [[5.5, -3.2]], [[2.0], [-1.5]])
    np.testing.assert_array_equal(ga, np.zeros((1, 2)))
    np.testing.assert_array_equal(gb, np.zeros((2, 1)))


def test_remainder_follows_python_sign_and_pytorch_gradient():
    a, b = np.array([5.5, -5.5, 5.5, -5.5]), np.array([2.0, 2.0, -2.0, -2.0])
    out = gt.tensor(a) % gt.tensor(b)
    np.testing.assert_array_equal(out.numpy(), [1.5, 0.5, -0.5, -1.5])
    ga, gb = _grads(operator.mod, a, b)
    np.testing.assert_array_equal(ga, np.ones(4))
    np.testing.assert_array_equal(gb, -np.floor(a / b))  # [-2, 3, 3, -2]


def test_pow_gradients_at_zero_base():
    # d/da a^0 = 0 also at a = 0; d/db a^b at a = 0 is 0 (the limit for b > 0): PyTorch's conventions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (ga,) = _grads(lambda a: a**0, [0.0, 2.0])
        np.testing.assert_array_equal(ga, [0.0, 0.0])
        ga, gb = _grads(gt.pow, [0.0, 2.0, 0.0], [0.0, 3.0, 2.0])
    np.testing.assert_array_equal(ga, [0.0, 12.0, 0.0])
    np.testing.assert_allclose(gb, [0.0, 8 * math.log(2.0), 0.0])


def test_pow_scalar_base_gradient():
    (gx,) = _grads(lambda x: 2.0**x, [0.0, 1.0, 3.0])
    np.testing.assert_allclose(gx, math.log(2.0) * np.array([1.0, 2.0, 8.0]))


def test_abs_and_relu_gradient_at_zero_is_zero():
    np.testing.assert_array_equal(_grads(gt.abs, [-1.0, 0.0, 2.0])[0], [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(_grads(gt.relu, [-1.0, 0.0, 2.0])[0], [0.0, 0.0, 1.0])


def test_clip_with_min_above_max_gives_max_and_its_gradient():
    x, lo, hi = np.array([-1.0, 0.2, 3.0]), np.array([1.0, 1.0, 1.0]), np.array([0.5, 0.5, 0.5])
    out = gt.clip(gt.tensor(x), gt.tensor(lo), gt.tensor(hi))
    np.testing.assert_array_equal(out.numpy(), np.clip(x, lo, hi))
    gx, glo, ghi = _grads(gt.clip, x, lo, hi)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(glo, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ghi, [1.0, 1.0, 1.0])


def test_clip_gradient_goes_to_the_active_bound():
    gx, glo, ghi = _grads(gt.clip, [-2.0, 0.0, 2.0], [-1.0], [1.0])
    np.testing.assert_array_equal(gx, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(glo, [1.0])
    np.testing.assert_array_equal(ghi, [1.0])


def test_where_gradient_reduces_over_a_broadcast_condition():
    cond = gt.tensor(np.array([[True, False, True], [False, False, True]]))
    a = gt.tensor(np.ones(3), requires_grad=True)
    b = gt.tensor(np.ones((2, 1)), requires_grad=True)
    gt.where(cond, a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(b.grad.numpy(), [[1.0], [2.0]])


def test_where_accepts_numpy_and_non_bool_conditions():
    x = gt.tensor([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(gt.where(np.array([1, 0, 1]), x, -x).numpy(), [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(gt.where(gt.tensor([0.0, 2.0, 0.0]), x, 0.0).numpy(), [0.0, 2.0, 0.0])


def test_rounding_ops_pass_zero_gradient():
    for fn in (gt.floor, gt.ceil, gt.round, gt.sign):
        (g,) = _grads(fn, [-1.7, 0.3, 2.5])
        np.testing.assert_array_equal(g, np.zeros(3), err_msg=fn.__name__)


def test_round_is_half_to_even():
    x = gt.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 2.567])
    np.testing.assert_array_equal(gt.round(x).numpy(), np.float32([0.0, 2.0, 2.0, -0.0, -2.0, 3.0]))
    np.testing.assert_allclose(x.round(2).numpy(), np.float32([0.5, 1.5, 2.5, -0.5, -2.5, 2.57]))


# --- numerics at extremes ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [gt.float32, gt.float64])
def test_sigmoid_is_finite_at_extremes_without_warnings(dtype):
    x = gt.tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0]), dtype=dtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = gt.sigmoid(x)
        y.sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.numpy(), [0.0, math.exp(-50.0), 0.5, 1.0, 1.0], rtol=1e-6, atol=0)
    assert np.all(np.isfinite(x.grad.numpy()))
    np.testing.assert_allclose(x.grad.numpy(), [0.0, math.exp(-50.0), 0.25, 0.0, 0.0], rtol=1e-6, atol=0)


def test_exp_and_log_at_extremes():
    with np.errstate(over="ignore", divide="ignore"):
        np.testing.assert_array_equal(gt.exp(gt.tensor([-1000.0, 1000.0])).numpy(), [0.0, np.inf])
        np.testing.assert_array_equal(gt.log(gt.tensor([0.0, np.inf])).numpy(), [-np.inf, np.inf])
    assert np.isfinite(gt.exp(gt.tensor(88.0)).item())  # float32 overflows just above 88.7
    assert gt.exp(gt.tensor(88.0)).dtype == gt.float32
    tiny = gt.tensor(np.array([1e-12, -1e-15, 1e-300]))
    np.testing.assert_allclose(gt.log1p(tiny).numpy(), [1e-12 - 5e-25, -1e-15, 1e-300], rtol=1e-15)
    np.testing.assert_allclose(gt.expm1(tiny).numpy(), [1e-12 + 5e-25, -1e-15, 1e-300], rtol=1e-15)
    big = gt.tensor(np.array([1e-300, 1e300]))
    np.testing.assert_allclose(gt.log(big).numpy(), [-300 * math.log(10), 300 * math.log(10)], rtol=1e-15)


@pytest.mark.parametrize("erf", [lambda a: gt.erf(gt.tensor(a)).numpy(), backend._erf_numpy],
                         ids=["gt.erf", "without_scipy"])
def test_erf_matches_math_erf(erf):
    xs = np.concatenate([np.linspace(-9.0, 9.0, 36001), [0.0, 1e-12, -1e-300, 0.9999999, 1.0, 1.0000001, 7.99, 8.0,
                                                          27.0, -30.0, np.inf, -np.inf]])
    expected = np.array([math.erf(v) for v in xs])
    np.testing.assert_allclose(erf(xs), expected, rtol=1e-15, atol=1e-300)
    out32 = erf(xs.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, [math.erf(v) for v in xs.astype(np.float32).astype(np.float64)],
                               rtol=3e-7, atol=1e-37)
    assert np.isnan(erf(np.array([np.nan])))[0]


# --- dtypes ------------------------------------------------------------------------------------------


def test_int_true_division_gives_float32():
    a, b = gt.tensor([1, 2, 7]), gt.tensor([2, 4, 2])
    for out in (a / b, gt.div(a, b), a / 2, 7 / b, a / 2.0):
        assert out.dtype == gt.float32
    np.testing.assert_array_equal((a / b).numpy(), np.float32([0.5, 0.5, 3.5]))


def test_int_tensor_arithmetic():
    a, b = gt.tensor([7, -7, 3]), gt.tensor([2, 2, -2])
    for out, expected in [(a + b, [9, -5, 1]), (a - b, [5, -9, 5]), (a * b, [14, -14, -6]),
                          (a // b, [3, -4, -2]), (a % b, [1, 1, -1]), (a**2, [49, 49, 9]),
                          (-a, [-7, 7, -3]), (abs(a), [7, 7, 3]), (gt.sign(a), [1, -1, 1]),
                          (gt.square(b), [4, 4, 4]), (gt.relu(a), [7, 0, 3]), (gt.floor(a), [7, -7, 3]),
                          (gt.maximum(a, b), [7, 2, 3]), (gt.clip(a, -3, 4), [4, -3, 3])]:
        assert out.dtype == gt.int64, out
        np.testing.assert_array_equal(out.numpy(), expected)


def test_int_tensors_with_float_operands_give_float32():
    i = gt.tensor([1, 2, 4])
    for out in (i * 0.5, 0.5 + i, i**0.5, i**-1, gt.maximum(i, 1.5), gt.clip(i, 1.5, 3.0),
                gt.where(i > 1, i, 0.5), gt.arctan2(i, i), gt.exp(i), gt.sqrt(i), gt.sigmoid(i)):
        assert out.dtype == gt.float32, out
    np.testing.assert_array_equal((i**-1).numpy(), np.float32([1.0, 0.5, 0.25]))
    np.testing.assert_allclose(gt.sqrt(i).numpy(), np.sqrt([1.0, 2.0, 4.0]), rtol=1e-7)


def test_float_tensor_with_int_tensor_keeps_the_float_dtype():
    f = gt.tensor([1.5, 2.5], requires_grad=True)
    i = gt.tensor([2, 3])
    for op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.pow, gt.maximum):
        assert op(f, i).dtype == gt.float32, op
        assert op(i, f).dtype == gt.float32, op
    (f * i).sum().backward()
    assert f.grad.dtype == gt.float32
    np.testing.assert_array_equal(f.grad.numpy(), [2.0, 3.0])


def test_small_integers_and_bools_as_pytorch_gives_them():
    """NumPy takes arctan2 of int8 in float16 and power of bools in int8, and has no sign of a bool."""
    angle = gt.arctan2(gt.tensor(np.array([1], np.int8)), gt.tensor(np.array([3], np.int8)))
    assert angle.dtype == gt.float32
    np.testing.assert_allclose(angle.numpy(), [np.arctan2(1.0, 3.0)], rtol=1e-7)
    flags = gt.tensor([True, False])
    assert (flags ** 2).dtype == gt.int64 and (flags ** 2).tolist() == [1, 0]
    assert (flags ** 0.5).dtype == gt.float32
    assert gt.sign(flags).dtype == gt.bool and gt.sign(flags).tolist() == [True, False]


def test_int_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        gt.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="floating"):
        gt.tensor([1, 2]).requires_grad_()


def test_float64_operand_wins_over_float32():
    x32, x64 = gt.tensor([1.0]), gt.tensor(np.array([1.0]))
    assert (x32 + x64).dtype == gt.float64
    assert (np.ones(1) + x32).dtype == gt.float64  # a NumPy array keeps its dtype
    assert (np.ones(1, np.float32) + x32).dtype == gt.float32


@pytest.mark.parametrize("name", list(BINARY))
def test_float32_stays_float32_with_python_scalars(name):
    fn, _, domain, _, scalar = BINARY[name]
    x = gt.tensor(np.linspace(*domain, 6, dtype=np.float32).reshape(2, 3) + 0.05, requires_grad=True)
    for out in (fn(x, scalar), fn(scalar, x), fn(x, 2), fn(2, x), fn(x, np.float64(scalar))):
        assert out.dtype == gt.float32, out
        out.sum().backward()
        assert x.grad.dtype == gt.float32
        x.grad = None


def test_float32_stays_float32_in_selection_ops():
    x = gt.tensor([[-1.0, 0.3, 2.0]], requires_grad=True)
    for out in (gt.clip(x, -0.5, 0.5), gt.clip(x, max=0.5), gt.where(x > 0, x, 0.5), gt.where(x > 0, 1.0, 0.0)):
        assert out.dtype == gt.float32, out
    gt.clip(x, -0.5, 0.5).sum().backward()
    assert x.grad.dtype == gt.float32


# --- comparisons and logic -------------------------------------------------------------------------

COMPARISONS = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge]


@pytest.mark.parametrize("op", COMPARISONS, ids=lambda op: op.__name__)
def test_comparisons_give_bool_tensors_without_grad(op):
    a_np, b_np = np.array([[1.0, 2.0, 3.0]]), np.array([[2.0], [3.0]])
    a = gt.tensor(a_np, requires_grad=True)
    for out, expected in [(op(a, gt.tensor(b_np)), op(a_np, b_np)), (op(a, 2.0), op(a_np, 2.0)),
                          (op(2.0, a), op(2.0, a_np)), (op(b_np, a), op(b_np, a_np))]:
        assert isinstance(out, gt.Tensor)
        assert out.dtype == gt.bool and not out.requires_grad and out.grad_fn is None
        np.testing.assert_array_equal(out.numpy(), expected)


def test_comparing_with_none_is_false_as_in_pytorch():
    x = gt.tensor([1.0, 2.0])
    assert (x == None) is False  # noqa: E711 - the operator itself is under test
    assert (x != None) is True  # noqa: E711
    assert (None == x) is False and (None != x) is True  # noqa: E711
    with pytest.raises(TypeError, match="less"):
        x < None  # noqa: B015


def test_named_comparisons_and_logic():
    a, b = gt.tensor([1.0, 2.0, np.nan]), gt.tensor([1.0, 3.0, 0.0])
    np.testing.assert_array_equal(gt.equal(a, b).numpy(), [True, False, False])
    np.testing.assert_array_equal(gt.not_equal(a, b).numpy(), [False, True, True])
    np.testing.assert_array_equal(gt.less(a, b).numpy(), [False, True, False])
    np.testing.assert_array_equal(gt.less_equal(a, b).numpy(), [True, True, False])
    np.testing.assert_array_equal(gt.greater(b, a).numpy(), [False, True, False])
    np.testing.assert_array_equal(gt.greater_equal(b, a).numpy(), [True, True, False])
    np.testing.assert_array_equal(gt.isnan(a).numpy(), [False, False, True])
    np.testing.assert_array_equal(gt.isfinite(gt.tensor([1.0, np.inf, np.nan])).numpy(), [True, False, False])
    np.testing.assert_array_equal(gt.isinf(gt.tensor([1.0, -np.inf, np.nan])).numpy(), [False, True, False])
    p, q = gt.tensor([True, True, False]), gt.tensor([True, False, False])
    np.testing.assert_array_equal((p & q).numpy(), [True, False, False])
    np.testing.assert_array_equal((p | q).numpy(), [True, True, False])
    np.testing.assert_array_equal((p ^ q).numpy(), [False, True, False])
    np.testing.assert_array_equal((~q).numpy(), [False, True, True])
    np.testing.assert_array_equal(gt.logical_and(p, True).numpy(), [True, True, False])


# --- operators with NumPy arrays and Python scalars ---------------------------------------------------

ARITHMETIC = [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
              operator.pow]


@pytest.mark.parametrize("op", ARITHMETIC, ids=lambda op: op.__name__)
def test_reflected_operators_with_numpy_arrays_give_tensors(op):
    arr = np.array([[0.5, 1.5, 2.5]])
    x = gt.tensor(np.array([[1.25], [0.75]]), requires_grad=True)
    for out, expected in [(op(arr, x), op(arr, x.numpy())), (op(x, arr), op(x.numpy(), arr)),
                          (op(arr.astype(np.float32), x), op(arr, x.numpy()))]:
        assert type(out) is gt.Tensor  # never a NumPy object array
        assert out.shape == (2, 3) and out.dtype == gt.float64
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-15)


def test_reflected_operator_gradient_flows_to_the_tensor():
    arr = np.array([[1.0, 2.0, 3.0]])
    x = gt.tensor(np.array([[1.0], [2.0]]), requires_grad=True)
    (arr * x - arr / x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[6.0 + 6.0], [6.0 + 6.0 / 4]])


def test_reflected_python_scalars():
    x = gt.tensor([1.0, 2.0, 4.0])
    for out, expected in [(2 * x, [2, 4, 8]), (2 + x, [3, 4, 6]), (2 - x, [1, 0, -2]), (2 / x, [2, 1, 0.5]),
                          (2**x, [2, 4, 16]), (5 // x, [5, 2, 1]), (5 % x, [0, 1, 1])]:
        assert type(out) is gt.Tensor and out.dtype == gt.float32
        np.testing.assert_array_equal(out.numpy(), np.float32(expected))


def test_matmul_operator_and_reflected_matmul():
    a, x = np.arange(6.0).reshape(2, 3), gt.tensor(np.arange(3.0))
    out = a @ x
    assert type(out) is gt.Tensor
    np.testing.assert_array_equal(out.numpy(), a @ np.arange(3.0))
    np.testing.assert_array_equal((gt.tensor(a) @ x).numpy(), a @ np.arange(3.0))


# --- size-0 tensors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn, shapes", [
    (gt.exp, [(0,)]), (gt.sigmoid, [(2, 0, 3)]), (gt.floor, [(0, 3)]),
    (operator.add, [(0, 3), (3,)]), (operator.mul, [(0, 3), (1, 3)]), (operator.truediv, [(2, 0), (2, 1)]),
    (gt.maximum, [(0,), ()]), (operator.pow, [(3, 0), (0,)]),
    (lambda a, b: gt.where(a > 0, a, b), [(0, 2), (2,)]), (lambda x, lo: gt.clip(x, lo, 1.0), [(0, 2), (2,)]),
], ids=str)
def test_size_zero_tensors_forward_and_backward(fn, shapes):
    tensors = [gt.tensor(np.ones(s) + 0.5, requires_grad=True) for s in shapes]
    out = fn(*tensors)
    assert out.size == 0 and out.shape == np.broadcast_shapes(*shapes)
    out.sum().backward()
    for t in tensors:
        assert t.grad.shape == t.shape
        np.testing.assert_array_equal(t.grad.numpy(), np.zeros(t.shape))


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fn", [
    ("add", operator.add), ("sub", operator.sub), ("mul", operator.mul), ("div", operator.truediv),
    ("floor_divide", operator.floordiv), ("remainder", operator.mod), ("pow", operator.pow),
    ("arctan2", gt.arctan2), ("maximum", gt.maximum), ("minimum", gt.minimum), ("less", operator.lt),
    ("equal", gt.equal), ("clip", lambda x, y: gt.clip(x, y)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_broadcast_mismatch_names_the_op_and_both_shapes(name, fn):
    x, y = gt.tensor(np.ones((2, 3)), requires_grad=True), gt.tensor(np.ones(4))
    with pytest.raises(ValueError) as info:
        fn(x, y)
    assert str(info.value) == f"{name}: operands with shapes (2, 3) and (4,) cannot be broadcast together"


def test_three_operand_broadcast_mismatch_names_all_shapes():
    x = gt.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^where: operands with shapes \(2,\), \(2, 3\) and \(\) cannot"):
        gt.where(gt.tensor([True, False]), x, 0.0)
    with pytest.raises(ValueError, match=r"^clip: operands with shapes \(2, 3\), \(2,\) and \(3,\) cannot"):
        gt.clip(x, np.zeros(2), np.ones(3))


def test_argument_errors():
    with pytest.raises(TypeError, match="exp: expected a Tensor, got list"):
        gt.exp([1.0])
    with pytest.raises(TypeError, match="round: expected a Tensor"):
        gt.round(1.5)
    with pytest.raises(TypeError, match="clip: expected a Tensor"):
        gt.clip(np.ones(2), 0, 1)
    with pytest.raises(ValueError, match="clip: at least one of min and max"):
        gt.clip(gt.tensor([1.0]))
    with pytest.raises(TypeError, match="add: expected at least one Tensor operand"):
        gt.add(1.0, 2.0)
    with pytest.raises(TypeError, match="where: expected a Tensor"):
        gt.where(True, 1.0, 2.0)
    with pytest.raises(TypeError, match="unsupported operand type str"):
        gt.tensor([1.0]) + "a"


# --- optional oracle: PyTorch's gradient conventions ----------------------------------------------------


def test_gradient_conventions_match_pytorch():
    torch = pytest.importorskip("torch")
    a_np = np.array([0.0, 1.5, -2.5, 2.0, -1.0, 0.0, 0.5])  # ties at 1 and 4, zeros at 0 and 5
    b_np = np.array([2.0, 1.5, 2.0, -0.75, -1.0, 3.0, 0.5])
    ops = {
        "maximum": (gt.maximum, torch.maximum), "minimum": (gt.minimum, torch.minimum),
        "remainder": (operator.mod, torch.remainder),
        "clip": (lambda a, b: gt.clip(a, b, 1.0), lambda a, b: torch.clamp(a, b, torch.ones_like(b))),
        "pow": (lambda a, b: gt.abs(a) ** b, lambda a, b: a.abs() ** b),
        "abs*relu": (lambda a, b: gt.abs(a) * gt.relu(b), lambda a, b: a.abs() * b.relu()),
    }
    for name, (ours, theirs) in ops.items():
        ga, gb = _grads(ours, a_np, b_np)
        ta = torch.tensor(a_np, requires_grad=True)
        tb = torch.tensor(b_np, requires_grad=True)
        expected = theirs(ta, tb)
        expected.sum().backward()
        np.testing.assert_allclose(ours(gt.tensor(a_np), gt.tensor(b_np)).numpy(), expected.detach().numpy(),
                                   err_msg=name)
        np.testing.assert_allclose(ga, ta.grad.numpy(), err_msg=name)
        np.testing.assert_allclose(gb, tb.grad.numpy(), err_msg=name)


# --- Tensor subclasses (nn.Parameter) are tensors, not foreign operands -----------------------------------


def test_parameters_work_as_operands():
    p = gt.nn.Parameter(gt.tensor(np.array([1.0, 2.0])))
    x = gt.tensor(np.array([3.0, 0.5]))
    out = p * x + 2 * p - gt.exp(p) + gt.maximum(p, 1.5) + gt.where(p > 1.5, p, 0.0) + gt.clip(p, max=1.5) + p**2
    assert type(out) is gt.Tensor
    out.sum().backward()
    expected = x.numpy() + 2 - np.exp([1.0, 2.0]) + [0.0, 1.0] + [0.0, 1.0] + [1.0, 0.0] + 2 * np.array([1.0, 2.0])
    np.testing.assert_allclose(p.grad.numpy(), expected)
    assert (p > x).dtype == gt.bool
