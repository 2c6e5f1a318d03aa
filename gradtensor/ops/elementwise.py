"""Elementwise ops: arithmetic, math functions, comparisons. Each backward sits under its forward."""
import math
import numbers
import operator

from .. import backend, dtypes
from ..autograd.function import Function
from ..tensor import Tensor
from . import _autocast
from ._util import (
    as_tensor_like, binary_operands, broadcast_errors, data_of, raise_if_broadcast_error, shape_of,
    sum_to,
)

__all__ = [
    "add", "sub", "mul", "div", "true_divide", "floor_divide", "remainder", "pow", "neg", "positive",
    "abs", "sign", "exp", "exp2", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt",
    "square", "reciprocal", "sin", "cos", "tan", "tanh", "sinh", "cosh", "arcsin", "arccos",
    "arctan", "arctan2", "sigmoid", "relu", "maximum", "minimum", "clip", "where", "erf",
    "floor", "ceil", "round", "equal", "not_equal", "less", "less_equal", "greater",
    "greater_equal", "logical_and", "logical_or", "logical_xor", "logical_not", "isnan", "isinf",
    "isfinite", "zeros_like_grad",
]


def _xp(t):
    return backend.xp(t.data)


def _xp_of(a, b):
    """The array module of a binary op's Tensor operand (the other may be a Python scalar)."""
    return _xp(a if isinstance(a, Tensor) else b)


def zeros_like_grad(g):
    """A zero gradient shaped like g (for ops whose derivative is zero almost everywhere)."""
    return Tensor(_xp(g).zeros_like(g.data))


def _binary_op(fn, op, doc):
    """The public function `op(a, b)` of a binary Function (operands: Tensors, arrays or Python numbers;
    a broadcast failure names op and the shapes). A closure per op rather than one shared helper: one
    frame less on the hottest call of all."""

    def apply(a, b):
        if type(a) is not Tensor or type(b) is not Tensor:  # (the common case skips the conversion call)
            a, b = binary_operands(a, b, op)
        try:
            return fn.apply(a, b)
        except ValueError as e:
            raise_if_broadcast_error(e, op, a, b)
            raise

    apply.__name__ = apply.__qualname__ = op
    apply.__doc__ = doc
    return apply


def _promoted(out, a, b, c=None):
    """PyTorch's promotion where NumPy's differs: integer tensors and scalars never widen a float result
    (float32 * int64 stays float32, bfloat16 * 0.5 stays bfloat16), and a float result of integer tensors
    has the default float dtype (int / int, int * 0.5, as a Python float alone gives)."""
    dtype = out.dtype
    # the common case: every tensor operand already has the result's dtype (two operands written out, and
    # `is` before `!=`, since NumPy's built-in dtypes are singletons: this runs on every arithmetic op)
    if ((not isinstance(a, Tensor) or a.data.dtype is dtype or a.data.dtype == dtype)
            and (not isinstance(b, Tensor) or b.data.dtype is dtype or b.data.dtype == dtype)
            and (c is None or not isinstance(c, Tensor) or c.dtype == dtype)):
        return out
    if not dtypes.is_floating(dtype):
        return out
    float_dtypes = [x.dtype for x in (a, b, c) if isinstance(x, Tensor) and dtypes.is_floating(x.dtype)]
    dtype = backend.xp(out).result_type(*float_dtypes) if float_dtypes else dtypes.get_default_dtype()
    return out if out.dtype == dtype else out.astype(dtype)


# --- arithmetic ---------------------------------------------------------------------------


def _arithmetic(op, a, b):
    """op on the operands' arrays (a Python scalar stays a scalar), in PyTorch's result dtype."""
    x = a.data if isinstance(a, Tensor) else a
    y = b.data if isinstance(b, Tensor) else b
    out = op(x, y)
    dtype = out.dtype
    if (x is a or x.dtype is dtype) and (y is b or y.dtype is dtype):  # (_promoted's common case, inline)
        return out
    return _promoted(out, a, b)


class Add(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, a, b):
        return _arithmetic(operator.add, a, b)

    @staticmethod
    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(g, ctx.input_shape(0)) if need_a else None, sum_to(g, ctx.input_shape(1)) if need_b else None)


class Sub(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, a, b):
        return _arithmetic(operator.sub, a, b)

    @staticmethod
    def backward(ctx, g):
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(g, ctx.input_shape(0)) if need_a else None, sum_to(-g, ctx.input_shape(1)) if need_b else None)


class Mul(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad  # each operand is kept only for the other's gradient
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        return _arithmetic(operator.mul, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (sum_to(g * b, ctx.input_shape(0)) if need_a else None,
                sum_to(g * a, ctx.input_shape(1)) if need_b else None)


class Div(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None, b)  # a only for b's gradient
        return _arithmetic(operator.truediv, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = sum_to(g / b, ctx.input_shape(0)) if need_a else None
        gb = sum_to(-g * a / (b * b), ctx.input_shape(1)) if need_b else None
        return ga, gb


class FloorDivide(Function):
    @staticmethod
    def forward(ctx, a, b):
        return _arithmetic(operator.floordiv, a, b)

    @staticmethod
    def backward(ctx, g):  # piecewise constant: zero gradient
        zero = zeros_like_grad(g)
        return tuple(sum_to(zero, ctx.input_shape(i)) if need else None for i, need in enumerate(ctx.needs_input_grad))


class Remainder(Function):
    """a % b with Python's (and PyTorch's) sign convention; d/da = 1, d/db = -floor(a / b)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _arithmetic(operator.mod, a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = sum_to(g, shape_of(a)) if need_a else None
        gb = sum_to(-g * floor_divide(a, b), shape_of(b)) if need_b else None
        return ga, gb


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        base = data_of(a)
        if isinstance(a, Tensor) and a.dtype.kind in "iub" and isinstance(b, numbers.Number) and b < 0:
            base = base.astype(dtypes.get_default_dtype())  # NumPy refuses ints to negative powers
        elif isinstance(a, Tensor) and a.dtype.kind == "b":
            base = base.astype(dtypes.int64)  # NumPy's power has no bool loop (it would take int8)
        out = _promoted(base ** data_of(b), a, b)
        return ctx.save_output(out) if ctx.needs_input_grad[1] else out  # (the exponent's gradient uses it)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = gb = None
        if need_a:
            # a^0 has derivative 0 also at a == 0, where b * a^(b-1) would be 0 * inf (as PyTorch)
            lowered = where(b == 0, 0.0, b - 1) if isinstance(b, Tensor) else (b - 1 if b != 0 else 0)
            ga = sum_to(g * b * a ** lowered, shape_of(a))
        if need_b:
            base = a if isinstance(a, Tensor) else Tensor(_xp(g).asarray(a, dtype=g.dtype))  # 2 ** x
            # d/db a^b = a^b log a; taken as 0 where a == 0 (the limit for b > 0), as PyTorch does
            at_zero = base == 0
            log_a = where(at_zero, 0.0, log(where(at_zero, 1.0, base)))
            gb = sum_to(g * ctx.saved_output() * log_a, shape_of(b))
        return ga, gb


add = _binary_op(Add, "add", "a + b, broadcasting as NumPy.")
sub = _binary_op(Sub, "sub", "a - b, broadcasting as NumPy.")
mul = _binary_op(Mul, "mul", "a * b, broadcasting as NumPy.")
div = _binary_op(Div, "div", "a / b, broadcasting as NumPy; integers divide to the default float dtype.")


true_divide = div


floor_divide = _binary_op(FloorDivide, "floor_divide", "a // b, rounding toward -inf; no gradient.")
remainder = _binary_op(Remainder, "remainder", "a % b with the divisor's sign, as Python and PyTorch.")
_pow = _binary_op(Pow, "pow", "a ** b.")


def pow(a, b):  # noqa: A001 - the array-API name
    if _autocast.state.enabled:
        a, b = _autocast.cast_inputs("pow", a, b)
    return _pow(a, b)


class Neg(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return -x.data

    @staticmethod
    def backward(ctx, g):
        return -g


def positive(x):
    return x


# --- unary math: out = f(x), backward = g * f'(x) --------------------------------------------


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).abs(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * sign(x)


class Exp(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).exp(x.data))

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_output()


class Exp2(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).exp2(x.data))

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_output() * math.log(2.0)


class Expm1(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).expm1(x.data))

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.saved_output() + 1)


class Log(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).log(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


class Log2(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).log2(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (x * math.log(2.0))


class Log10(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).log10(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (x * math.log(10.0))


class Log1p(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).log1p(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (x + 1)


class Sqrt(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).sqrt(x.data))

    @staticmethod
    def backward(ctx, g):
        return g / (2 * ctx.saved_output())


class Rsqrt(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(1 / _xp(x).sqrt(x.data))

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_output()
        return g * -0.5 * out * out * out


class Square(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.data * x.data

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 2 * x


class Reciprocal(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).reciprocal(x.data))

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_output()
        return -g * out * out


class Sin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).sin(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * cos(x)


class Cos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).cos(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return -g * sin(x)


class Tan(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).tan(x.data))

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_output()
        return g * (1 + out * out)


class Tanh(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).tanh(x.data))

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_output()
        return g * (1 - out * out)


class Sinh(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).sinh(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * cosh(x)


class Cosh(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).cosh(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * sinh(x)


class Arcsin(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).arcsin(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * rsqrt(1 - x * x)


class Arccos(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).arccos(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return -g * rsqrt(1 - x * x)


class Arctan(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _xp(x).arctan(x.data)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + x * x)


def _float_data(v):
    """A Tensor operand's data, integers and bools in the default float dtype; other operands as they are."""
    if not isinstance(v, Tensor):
        return v
    return v.data.astype(dtypes.get_default_dtype()) if v.data.dtype.kind in "iub" else v.data


class Arctan2(Function):
    @staticmethod
    def forward(ctx, y, x):
        ctx.save_for_backward(y, x)
        # integer operands in the default float dtype first (NumPy would take small ints in float16)
        y_data, x_data = (_float_data(v) for v in (y, x))
        return _promoted(_xp_of(y, x).arctan2(y_data, x_data), y, x)

    @staticmethod
    def backward(ctx, g):
        y, x = ctx.saved_tensors
        need_y, need_x = ctx.needs_input_grad
        denom = x * x + y * y
        gy = sum_to(g * x / denom, shape_of(y)) if need_y else None
        gx = sum_to(-g * y / denom, shape_of(x)) if need_x else None
        return gy, gx


class Sigmoid(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        mod = _xp(x)
        # exp of -|x| never overflows; the two branches agree where both are finite
        z = mod.exp(-mod.abs(x.data))
        return ctx.save_output(mod.where(x.data >= 0, 1 / (1 + z), z / (1 + z)))

    @staticmethod
    def backward(ctx, g):
        out = ctx.saved_output()
        return g * out * (1 - out)


class Relu(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        return ctx.save_output(_xp(x).maximum(x.data, 0))

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.saved_output() > 0)


class Erf(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return backend.erf(x.data).astype(x.data.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (2 / math.sqrt(math.pi)) * exp(-x * x)


class _Rounding(Function):
    """floor / ceil / round: piecewise constant, so the gradient is zero."""

    @staticmethod
    def backward(ctx, g):
        return zeros_like_grad(g)


class Floor(_Rounding):
    @staticmethod
    def forward(ctx, x):
        return _xp(x).floor(x.data)


class Ceil(_Rounding):
    @staticmethod
    def forward(ctx, x):
        return _xp(x).ceil(x.data)


class Round(_Rounding):
    @staticmethod
    def forward(ctx, x, decimals=0):
        return _xp(x).round(x.data, decimals)


class Sign(_Rounding):
    @staticmethod
    def forward(ctx, x):
        # (NumPy has no bool loop; a bool is its own sign, as in PyTorch)
        return x.data.copy() if x.data.dtype.kind == "b" else _xp(x).sign(x.data)


def _check_tensor(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")


def _unary(fn, name, float_only=True):
    def op(x):
        _check_tensor(x, name)
        if float_only and x.data.dtype.kind in "iub":
            x = Tensor(x.data.astype(dtypes.get_default_dtype()))
        if _autocast.state.enabled:
            (x,) = _autocast.cast_inputs(name, x)
        return fn.apply(x)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Elementwise {name}, differentiable."
    return op


neg = _unary(Neg, "neg", float_only=False)
abs = _unary(Abs, "abs", float_only=False)  # noqa: A001
sign = _unary(Sign, "sign", float_only=False)
exp = _unary(Exp, "exp")
exp2 = _unary(Exp2, "exp2")
expm1 = _unary(Expm1, "expm1")
log = _unary(Log, "log")
log2 = _unary(Log2, "log2")
log10 = _unary(Log10, "log10")
log1p = _unary(Log1p, "log1p")
sqrt = _unary(Sqrt, "sqrt")
rsqrt = _unary(Rsqrt, "rsqrt")
square = _unary(Square, "square", float_only=False)
reciprocal = _unary(Reciprocal, "reciprocal")
sin = _unary(Sin, "sin")
cos = _unary(Cos, "cos")
tan = _unary(Tan, "tan")
tanh = _unary(Tanh, "tanh")
sinh = _unary(Sinh, "sinh")
cosh = _unary(Cosh, "cosh")
arcsin = _unary(Arcsin, "arcsin")
arccos = _unary(Arccos, "arccos")
arctan = _unary(Arctan, "arctan")
sigmoid = _unary(Sigmoid, "sigmoid")
relu = _unary(Relu, "relu", float_only=False)
erf = _unary(Erf, "erf")
floor = _unary(Floor, "floor", float_only=False)
ceil = _unary(Ceil, "ceil", float_only=False)


def round(x, decimals=0):  # noqa: A001
    """Round half to even (as NumPy); zero gradient."""
    _check_tensor(x, "round")
    return Round.apply(x, decimals=decimals)


arctan2 = _binary_op(Arctan2, "arctan2", "arctan2(y, x): the angle of the point (x, y), in (-pi, pi].")


# --- selection ----------------------------------------------------------------------------------


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _promoted(_xp_of(a, b).maximum(data_of(a), data_of(b)), a, b)

    @staticmethod
    def backward(ctx, g):
        return _select_backward(ctx, g, greater)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _promoted(_xp_of(a, b).minimum(data_of(a), data_of(b)), a, b)

    @staticmethod
    def backward(ctx, g):
        return _select_backward(ctx, g, less)


def _select_backward(ctx, g, wins):
    """Gradient of max/min: to the winner; split evenly on ties (as PyTorch)."""
    a, b = ctx.saved_tensors
    need_a, need_b = ctx.needs_input_grad
    share_a = where(wins(a, b), 1.0, where(equal(a, b), 0.5, 0.0)).astype(g.dtype)
    ga = sum_to(g * share_a, shape_of(a)) if need_a else None
    gb = sum_to(g * (1 - share_a), shape_of(b)) if need_b else None
    return ga, gb


maximum = _binary_op(Maximum, "maximum", "The elementwise larger of a and b (NaN if either is).")
minimum = _binary_op(Minimum, "minimum", "The elementwise smaller of a and b (NaN if either is).")


class Clip(Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x, lo, hi)
        out = x.data
        mod = _xp(x)
        if lo is not None:
            out = mod.maximum(out, data_of(lo))
        if hi is not None:
            out = mod.minimum(out, data_of(hi))
        return _promoted(out, x, lo, hi)

    @staticmethod
    def backward(ctx, g):
        x, lo, hi = ctx.saved_tensors
        need_x, need_lo, need_hi = ctx.needs_input_grad
        mod, xd = _xp(x), x.data
        below = mod.zeros(xd.shape, bool) if lo is None else xd < data_of(lo)
        above = mod.zeros(xd.shape, bool) if hi is None else xd > data_of(hi)
        if lo is not None and hi is not None:  # hi wins where lo > hi, as in NumPy's clip
            above = above | (data_of(lo) > data_of(hi))
            below = below & ~above
        inside = ~(below | above)
        gx = sum_to(g * Tensor(inside), x.shape) if need_x else None
        glo = sum_to(g * Tensor(below), shape_of(lo)) if need_lo else None
        ghi = sum_to(g * Tensor(above), shape_of(hi)) if need_hi else None
        return gx, glo, ghi


def clip(x, min=None, max=None):  # noqa: A002 - NumPy's keyword names
    """Limit x to [min, max] (either may be None); the gradient flows to x inside the range, to the bound outside."""
    _check_tensor(x, "clip")
    if min is None and max is None:
        raise ValueError("clip: at least one of min and max must be given")
    lo, hi = (None if bound is None else as_tensor_like(bound, x) for bound in (min, max))
    with broadcast_errors("clip", *(t for t in (x, lo, hi) if t is not None)):
        return Clip.apply(x, lo, hi)


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)  # (saved, so an in-place change of the condition is caught)
        c = cond.data
        return _promoted(backend.xp(c).where(c, data_of(a), data_of(b)), a, b)

    @staticmethod
    def backward(ctx, g):
        _, need_a, need_b = ctx.needs_input_grad
        (cond,) = ctx.saved_tensors
        zero = zeros_like_grad(g)
        ga = sum_to(where(cond, g, zero), ctx.input_shape(1)) if need_a else None
        gb = sum_to(where(cond, zero, g), ctx.input_shape(2)) if need_b else None
        return None, ga, gb


def where(condition, a, b):
    """Elementwise a where condition else b, broadcasting all three."""
    like = next((t for t in (condition, a, b) if isinstance(t, Tensor)), None)
    if like is None:
        raise TypeError("where: expected a Tensor among condition, a and b")
    mod = backend.xp(like.data)
    if not isinstance(condition, Tensor) or condition.dtype != dtypes.bool:
        condition = Tensor(mod.asarray(data_of(condition)).astype(bool))
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):  # two scalars: float ones give the default dtype
        a = Tensor(mod.asarray(a, dtype=dtypes.get_default_dtype() if isinstance(a, float) else None))
    a, b = binary_operands(a, b, "where")
    with broadcast_errors("where", condition, a, b):
        return Where.apply(condition, a, b)


# --- comparisons and logic: bool results, no gradient ---------------------------------------------


def _no_grad_binary(ufunc_name, op):
    def fn(a, b):
        a, b = binary_operands(a, b, op)
        mod = _xp_of(a, b)
        with broadcast_errors(op, a, b):
            return Tensor(mod.asarray(getattr(mod, ufunc_name)(data_of(a), data_of(b))))

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = f"Elementwise {op}; returns a bool tensor with no gradient."
    return fn


def _no_grad_unary(ufunc_name):
    def fn(x):
        return Tensor(backend.xp(x.data).asarray(getattr(backend.xp(x.data), ufunc_name)(x.data)))

    fn.__name__ = fn.__qualname__ = ufunc_name
    fn.__doc__ = f"Elementwise {ufunc_name}; no gradient."
    return fn


def _check_bitwise(op, *operands):
    for v in operands:
        kind = v.dtype.kind if isinstance(v, Tensor) else ("f" if isinstance(v, float) else "i")
        if kind not in "biu":
            dtype = v.dtype if isinstance(v, Tensor) else type(v).__name__
            raise TypeError(f"{op}: bitwise operators take bool and integer operands, got {dtype}")


def _bitwise_binary(ufunc_name):
    """The operator & | ^ as NumPy's and PyTorch's: logical on bools, bitwise on integers."""
    def fn(a, b):
        a, b = binary_operands(a, b, ufunc_name)
        _check_bitwise(ufunc_name, a, b)
        with broadcast_errors(ufunc_name, a, b):
            return Tensor(_xp_of(a, b).asarray(getattr(_xp_of(a, b), ufunc_name)(data_of(a), data_of(b))))

    fn.__name__ = fn.__qualname__ = ufunc_name
    return fn


bitwise_and = _bitwise_binary("bitwise_and")
bitwise_or = _bitwise_binary("bitwise_or")
bitwise_xor = _bitwise_binary("bitwise_xor")


def bitwise_invert(x):
    """~x: logical not of bools, bitwise not of integers."""
    _check_bitwise("bitwise_invert", x)
    return Tensor(_xp(x).asarray(_xp(x).invert(x.data)))


equal = _no_grad_binary("equal", "equal")
not_equal = _no_grad_binary("not_equal", "not_equal")
less = _no_grad_binary("less", "less")
less_equal = _no_grad_binary("less_equal", "less_equal")
greater = _no_grad_binary("greater", "greater")
greater_equal = _no_grad_binary("greater_equal", "greater_equal")
logical_and = _no_grad_binary("logical_and", "logical_and")
logical_or = _no_grad_binary("logical_or", "logical_or")
logical_xor = _no_grad_binary("logical_xor", "logical_xor")
logical_not = _no_grad_unary("logical_not")
isnan = _no_grad_unary("isnan")
isinf = _no_grad_unary("isinf")
isfinite = _no_grad_unary("isfinite")
