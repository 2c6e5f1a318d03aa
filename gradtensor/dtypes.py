"""dtype names and inference rules. gradtensor dtypes are NumPy dtype objects."""
import builtins

import numpy as np

float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
bool = np.dtype("bool")  # noqa: A001 - mirrors numpy's name

try:  # bfloat16 comes from ml_dtypes (on CuPy >= 14 too, which takes the same dtype: minimal support)
    import ml_dtypes as _ml_dtypes

    bfloat16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    bfloat16 = None

# The half-width floats this installation has (bfloat16 needs ml_dtypes). Test membership here, not
# against bfloat16 itself: when it is None, NumPy reads `dtype == None` as a comparison with float64.
half_precision = (float16,) if bfloat16 is None else (float16, bfloat16)

_default_float = float32


def get_default_dtype():
    return _default_float


def set_default_dtype(dtype):
    global _default_float
    dtype = as_dtype(dtype)
    if dtype is None or not is_floating(dtype):
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {dtype}")
    _default_float = dtype


def as_dtype(dtype):
    """Normalise anything NumPy accepts as a dtype (or None) to a np.dtype."""
    if dtype is None or isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, str) and dtype == "bfloat16":
        if bfloat16 is None:
            raise TypeError("bfloat16 on the CPU needs the ml_dtypes package (pip install ml_dtypes)")
        return bfloat16
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"not a dtype: {dtype!r}") from None


def is_floating(dtype):
    return dtype.kind == "f" or (bfloat16 is not None and dtype == bfloat16)


def infer_dtype(data):
    """Python floats give the default float dtype, ints int64, bools bool; arrays keep theirs."""
    if isinstance(data, float):
        return _default_float
    if isinstance(data, builtins.bool):
        return bool
    if isinstance(data, int):
        return int64
    if isinstance(data, complex):
        raise TypeError("gradtensor does not support complex numbers")
    return None

