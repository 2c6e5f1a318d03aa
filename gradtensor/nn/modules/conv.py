"""Convolutions over 1 and 2 spatial dimensions (cross-correlation, as in PyTorch)."""
from .. import functional as F
from ..module import Module, new_parameter
from .linear import reset_fan_in_uniform

__all__ = ["Conv1d", "Conv2d"]


def ntuple(value, n, name, op):
    """An int or an n-sequence of ints as an n-tuple."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{op}: {name} must be an int or {n} ints, got {value}")
    return value


class _ConvNd(Module):
    spatial_dims = None  # set by subclasses

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by "
                f"groups ({groups})"
            )
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only padding_mode='zeros' is supported, got {padding_mode!r}")
        n = self.spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ntuple(kernel_size, n, "kernel_size", name)
        self.stride = ntuple(stride, n, "stride", name)
        self.padding = padding if isinstance(padding, str) else ntuple(padding, n, "padding", name)
        self.dilation = ntuple(dilation, n, "dilation", name)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = new_parameter((out_channels, in_channels // groups) + self.kernel_size, device, dtype)
        if bias:
            self.bias = new_parameter((out_channels,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_fan_in_uniform(self.weight, self.bias)

    def _conv_arguments(self):
        return self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.spatial_dims:
            text += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1,) * self.spatial_dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class Conv1d(_ConvNd):
    """Input (N, C_in, L) or (C_in, L); weight (C_out, C_in / groups, k)."""

    spatial_dims = 1

    def forward(self, x):
        return F.conv1d(x, *self._conv_arguments())


class Conv2d(_ConvNd):
    """Input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in / groups, kH, kW)."""

    spatial_dims = 2

    def forward(self, x):
        return F.conv2d(x, *self._conv_arguments())
