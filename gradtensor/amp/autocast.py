"""gt.amp.autocast: matrix products in float16/bfloat16, accuracy-critical ops in float32."""
import functools

from .. import dtypes
from ..ops import _autocast


class autocast:
    """Context manager (and decorator) for a mixed-precision region.

    Inside, the ops in `gradtensor.ops._autocast.LOW_PRECISION_OPS` run in `dtype`, those in
    `FLOAT32_OPS` in float32, on tensors of `device_type`. Parameters are cast once per outermost
    region. Gradients reaching float32 parameters are float32. Regions nest; an inner
    `enabled=False` region runs everything in the tensors' own dtypes.
    """

    def __init__(self, device_type="cuda", dtype=None, enabled=True):
        if device_type not in ("cuda", "cpu"):
            raise ValueError(f"autocast: device_type must be 'cuda' or 'cpu', got {device_type!r}")
        dtype = dtypes.as_dtype(dtype) if dtype is not None else (
            dtypes.float16 if device_type == "cuda" else dtypes.bfloat16 or dtypes.float16
        )
        if dtype not in dtypes.half_precision:
            raise TypeError(f"autocast: dtype must be float16 or bfloat16, got {dtype}")
        self.device_type, self.dtype, self.enabled = device_type, dtype, bool(enabled)

    def __enter__(self):
        s = _autocast.state
        self._prev = (s.enabled, s.dtype, s.device_type)
        self._outermost = not s.enabled
        s.enabled, s.dtype, s.device_type = self.enabled, self.dtype, self.device_type
        return self

    def __exit__(self, *exc):
        s = _autocast.state
        s.enabled, s.dtype, s.device_type = self._prev
        if self._outermost and self.enabled:
            s.cache.clear()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.dtype, self.enabled):
                return fn(*args, **kwargs)

        return wrapper


def is_autocast_enabled():
    return _autocast.state.enabled
