"""gradtensor: NumPy-style tensors with reverse-mode autograd, on NumPy (CPU) or CuPy (GPU)."""
from . import autograd, backend, cuda, dtypes
from .autograd import checkpoint, checkpoint_sequential, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .backend import Device as device
from .creation import *  # noqa: F401,F403
from .dtypes import (
    bfloat16, bool, float16, float32, float64, get_default_dtype, int8, int16, int32, int64,
    set_default_dtype, uint8,
)
from .ops import *  # noqa: F401,F403
from .io import load, save
from .tensor import Tensor

from . import amp, nn, optim, utils  # noqa: E402  (they build on everything above)

__version__ = "0.1.0"
