"""Activations, softmax and log_softmax.

On the GPU (float16/float32, see gradtensor.fused.available_for) softmax and log_softmax over the
last axis run one kernel each; elsewhere the kernels' array references (gradtensor.fused_reference,
float16 computed in float32). Backward passes are Tensor ops either way.
"""
import math

from ... import backend, fused, fused_reference, ops
from ...autograd.engine import grad as autograd_grad
from ...autograd.function import Function
from ...autograd.grad_mode import enable_grad, state
from ...tensor import Tensor
from ...ops._util import normalize_axis
from ...ops.inplace import in_place
from ._util import as_float, check_tensor
from ...ops._autocast import autocast_op


def sigmoid(input):
    """gt.sigmoid under PyTorch's parameter name."""
    return ops.sigmoid(input)


def tanh(input):
    """gt.tanh under PyTorch's parameter name."""
    return ops.tanh(input)


def relu(input, inplace=False):
    return in_place(ops.relu, input, "relu(inplace=True)") if inplace else ops.relu(input)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    def leaky(x):
        x = as_float(x, "leaky_relu")
        return ops.where(x > 0, x, x * negative_slope)  # the slope applies at 0 too, as PyTorch's gradient does

    return in_place(leaky, input, "leaky_relu(inplace=True)") if inplace else leaky(input)


def elu(input, alpha=1.0, inplace=False):
    def exponential_linear(x):
        x = as_float(x, "elu")
        positive = x > 0
        # expm1 sees only the non-positive part: its gradient at large x would be inf * 0 = NaN through where
        negative_part = alpha * ops.where(positive, 0.0, x).expm1()
        return ops.where(positive, x, negative_part)

    return in_place(exponential_linear, input, "elu(inplace=True)") if inplace else exponential_linear(input)


def _silu_composite(x):
    return x * ops.sigmoid(x)


def _silu(x):
    return _with_activation_kernel(as_float(x, "silu"), "silu", _silu_composite)


def silu(input, inplace=False):
    return in_place(_silu, input, "silu(inplace=True)") if inplace else _silu(input)


# --- activations through the fused bias + activation kernel ------------------------------------
# Nothing in gradtensor's public API applies a bias and an activation together (nn.Linear and the
# activation modules are separate calls, and F.linear has no activation argument), so the kernel runs
# with a zero bias: the activation's forward and backward are then one pass each over the data
# instead of a chain of elementwise kernels with their temporaries. ReLU is a single op already.


class _ActivationKernel(Function):
    """act(x) for act in fused.ACTIVATIONS, on the GPU kernel; `composite` is the same activation from
    differentiable ops (the double-backward path)."""

    @staticmethod
    def forward(ctx, x, act, composite):
        ctx.act, ctx.composite = act, composite
        ctx.save_for_backward(x)
        return fused.bias_act_forward(x.data, _zero_bias(x.data), act)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if state.grad_enabled:  # create_graph: a differentiable gradient
            return composite_vjp(ctx.composite, (x,), (True,), g)[0]
        dx, _ = fused.bias_act_backward(g.data, x.data, _zero_bias(x.data), ctx.act, bias_grad=False)
        return Tensor(dx)


_zero_biases = {}  # (width, dtype, device) -> zeros: the kernel only reads its bias, so one serves every call


def _zero_bias(a):
    key = (a.shape[-1], a.dtype, backend.device_of(a))
    bias = _zero_biases.get(key)
    if bias is None:
        bias = _zero_biases[key] = backend.xp(a).zeros(a.shape[-1:], dtype=a.dtype)
    return bias


def _with_activation_kernel(x, act, composite):
    """act(x) through the fused kernel where it applies, else composite(x)."""
    if x.ndim >= 1 and fused.available_for(x.data):
        return _ActivationKernel.apply(x, act, composite)
    return composite(x)


# --- GELU: a dedicated Function (one saved tensor instead of a chain of five ops) ------------------
# Forward and the unrecorded backward run the kernels' array reference (gradtensor.fused_reference);
# the Tensor formula is the differentiable one (create_graph), and the op tests hold the two equal.

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_C = math.sqrt(2.0 / math.pi)
_TANH_A = 0.044715


class _GeluExact(Function):
    """x * Phi(x), Phi the standard normal CDF."""

    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return fused_reference.activation(x.data, "gelu_erf")

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if not isinstance(g, Tensor):  # unrecorded: the kernel's array reference
            return fused_reference.activation_backward(g, x, "gelu_erf")
        cdf = 0.5 * (1.0 + ops.erf(x * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * ops.exp(-0.5 * x * x)
        return g * (cdf + x * pdf)


class _GeluTanh(Function):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return fused_reference.activation(x.data, "gelu_tanh")

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if not isinstance(g, Tensor):  # unrecorded: the kernel's array reference, in a few arrays
            return fused_reference.activation_backward(g, x, "gelu_tanh")
        t = ops.tanh(_TANH_C * (x + _TANH_A * x * x * x))
        d_inner = _TANH_C * (1.0 + 3.0 * _TANH_A * x * x)
        return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner)


def gelu(input, approximate="none"):
    input = as_float(input, "gelu")
    if approximate == "none":
        return _with_activation_kernel(input, "gelu_erf", _GeluExact.apply)
    if approximate == "tanh":
        return _with_activation_kernel(input, "gelu_tanh", _GeluTanh.apply)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# --- softplus ---------------------------------------------------------------------------------


class _Softplus(Function):
    """log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): finite for any x; derivative sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        xd = x.data
        mod = backend.xp(xd)
        return mod.maximum(xd, 0) + mod.log1p(mod.exp(-mod.abs(xd)))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ops.sigmoid(x)


def stable_softplus(x):
    """softplus with beta 1 and no threshold: the building block of the logit losses."""
    return _Softplus.apply(x)


@autocast_op("softplus")
def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    input = as_float(input, "softplus")
    scaled = input * beta if beta != 1 else input
    soft = stable_softplus(scaled)
    if beta != 1:
        soft = soft / beta
    return ops.where(scaled > threshold, input, soft)


# --- softmax and log_softmax: shifted by the max, so +-1e4 neither overflows nor underflows to NaN ---


def composite_vjp(composite, inputs, needs, grad):
    """The gradients of composite(*inputs), an op rebuilt from differentiable ops, with respect to the
    inputs that `needs` marks, recorded on the tape (`grad`: a tuple, one per output, when composite
    returns several). A fused Function's backward uses it when it must
    itself be differentiable (create_graph): the kernels' gradients are not."""
    wrt = [t for t, need in zip(inputs, needs) if need]
    with enable_grad():
        outs = composite(*inputs)
    if isinstance(outs, tuple):  # several outputs: `grad` holds one gradient (or None) per output
        pairs = [(o, g) for o, g in zip(outs, grad) if g is not None]
        outs, grad = [o for o, _ in pairs], [g for _, g in pairs]
    else:
        outs, grad = [outs], [grad]
    found = iter(autograd_grad(outs, wrt, grad, create_graph=True, allow_unused=True))
    return tuple(next(found) if need else None for need in needs)


def _on_last_axis_kernel(a, axis):
    return axis == a.ndim - 1 and fused.available_for(a)


class _Softmax(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x, axis):
        ctx.axis = axis
        if _on_last_axis_kernel(x.data, axis):
            return ctx.save_output(fused.softmax(x.data))
        return ctx.save_output(fused_reference.softmax(x.data, axis))

    @staticmethod
    def backward(ctx, g):
        y = ctx.saved_output()
        gy = g * y
        return gy - y * gy.sum(axis=ctx.axis, keepdims=True)


class _LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        ctx.axis = axis
        if _on_last_axis_kernel(x.data, axis):
            return ctx.save_output(fused.log_softmax(x.data))
        return ctx.save_output(fused_reference.log_softmax(x.data, axis))

    @staticmethod
    def backward(ctx, g):
        probs = ctx.saved_output().exp()
        return g - probs * g.sum(axis=ctx.axis, keepdims=True)


def _softmax_like(fn, name, input, axis, dtype):
    check_tensor(input, name)
    if dtype is not None:
        input = input.astype(dtype)
    input = as_float(input, name)
    if input.ndim == 0:  # a single element: softmax 1, log_softmax 0, as PyTorch
        normalize_axis(axis, 1, name)
        return fn.apply(input.reshape(1), 0).reshape(())
    axis = normalize_axis(axis, input.ndim, name)
    if input.size == 0:
        return input * 1  # nothing to normalise; keeps the graph and dtype
    return fn.apply(input, axis)


@autocast_op("softmax")
def softmax(input, axis=-1, dtype=None):
    """exp(x) / sum(exp(x)) along axis, computed from x - max(x)."""
    return _softmax_like(_Softmax, "softmax", input, axis, dtype)


@autocast_op("log_softmax")
def log_softmax(input, axis=-1, dtype=None):
    """x - logsumexp(x) along axis, stable for large |x|."""
    return _softmax_like(_LogSoftmax, "log_softmax", input, axis, dtype)
