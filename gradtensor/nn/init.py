"""Weight initialisation (PyTorch's torch.nn.init): each function fills a tensor in place and returns it.

Values are drawn from the seeded generator of the tensor's device (`gt.manual_seed`), in float64,
then cast to the tensor's dtype. Nothing is recorded on the autograd tape.
"""
import math

from .. import backend
from ..creation import below_bound

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
]

_UNIT_GAIN = {"linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d"}


def calculate_gain(nonlinearity, param=None):
    """The recommended scale of weights feeding `nonlinearity` (PyTorch's table)."""
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope {slope!r} is not a number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fill(tensor, array):
    """Write `array` (float64, any device) into tensor's data in place."""
    tensor.data[...] = backend.to_device(array, tensor.device).astype(tensor.dtype, copy=False)
    tensor._bump_version()
    return tensor


def _generator(tensor):
    return backend.generator(tensor.device)


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b): in [a, b), also after rounding to the tensor's dtype."""
    if not a <= b:
        raise ValueError(f"uniform_: expected a <= b, got a={a}, b={b}")
    samples = backend.to_device(_generator(tensor).random(tensor.shape) * (b - a) + a, tensor.device)
    return _fill(tensor, below_bound(samples.astype(tensor.dtype, copy=False), a, b))


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std**2)."""
    return _fill(tensor, _generator(tensor).standard_normal(tensor.shape) * std + mean)


def constant_(tensor, val):
    tensor.data[...] = val
    tensor._bump_version()
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0)


def ones_(tensor):
    return constant_(tensor, 1)


def eye_(tensor):
    """Fill a 2-D tensor with the identity matrix."""
    if tensor.ndim != 2:
        raise ValueError(f"eye_: only 2-D tensors are supported, got shape {tensor.shape}")
    return _fill(tensor, tensor.device.xp.eye(*tensor.shape))


def _fan_in_and_fan_out(tensor, op):
    if tensor.ndim < 2:
        raise ValueError(
            f"{op}: fan in and fan out cannot be computed for a tensor with fewer than 2 dimensions "
            f"(shape {tensor.shape})"
        )
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _fan(tensor, mode, op):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{op}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fan_in_and_fan_out(tensor, op)
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(tensor, gain=1.0):
    """Glorot & Bengio (2010): U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fan_in_and_fan_out(tensor, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """Glorot & Bengio (2010): N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fan_in_and_fan_out(tensor, "xavier_normal_")
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He et al. (2015): U(-b, b) with b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)."""
    fan = _fan(tensor, mode, "kaiming_uniform_")
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """He et al. (2015): N(0, std**2) with std = gain / sqrt(fan)."""
    fan = _fan(tensor, mode, "kaiming_normal_")
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def orthogonal_(tensor, gain=1.0):
    """Saxe et al. (2013): a (semi-)orthogonal matrix from the QR decomposition of a Gaussian one.

    Tensors with more than 2 dimensions are treated as (shape[0], prod(shape[1:])) matrices.
    """
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_: only tensors with 2 or more dimensions are supported, got shape {tensor.shape}")
    if tensor.size == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.size // rows
    flat = _generator(tensor).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    xp = backend.xp(flat)
    q, r = xp.linalg.qr(flat)
    q = q * xp.sign(xp.diag(r))  # makes the decomposition unique, so Q is uniformly distributed
    if rows < cols:
        q = q.T
    return _fill(tensor, (q * gain).reshape(tensor.shape))
