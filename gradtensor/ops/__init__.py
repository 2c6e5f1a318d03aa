"""The differentiable op set, grouped by family, and the Tensor methods and operators built on it."""
import numbers

import numpy as np

from ..tensor import Tensor
from . import elementwise, indexing, inplace, linalg, reduction, shape
from .elementwise import *  # noqa: F401,F403
from .indexing import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .reduction import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403

_FAMILIES = (elementwise, reduction, linalg, shape, indexing)
__all__ = [name for family in _FAMILIES for name in family.__all__]

# Functions that are not natural methods (their first argument is not "the" tensor).
_NOT_METHODS = {"where", "concatenate", "stack", "einsum", "zeros_like_grad"}


def _reflected(fn):
    return lambda self, other: fn(other, self)


def _comparable(value):
    return isinstance(value, (Tensor, numbers.Number, np.generic, list, tuple)) or hasattr(value, "__array__") \
        or hasattr(value, "__cuda_array_interface__")


def _equality(compare, result_for_others):
    """x == None or x == "a" is False (!= True), as for PyTorch tensors: `if x == None` and `x in
    [None, "a", x]` must not raise."""
    def operator(a, b):
        return compare(a, b) if _comparable(b) else result_for_others
    operator.__name__ = compare.__name__
    return operator


def _install_tensor_methods():
    for name in __all__:
        if name not in _NOT_METHODS and not hasattr(Tensor, name):
            setattr(Tensor, name, globals()[name])
    operators = {
        "__add__": add, "__sub__": sub, "__mul__": mul, "__truediv__": div, "__floordiv__": floor_divide,
        "__mod__": remainder, "__pow__": pow, "__matmul__": matmul,
        "__radd__": _reflected(add), "__rsub__": _reflected(sub), "__rmul__": _reflected(mul),
        "__rtruediv__": _reflected(div), "__rfloordiv__": _reflected(floor_divide),
        "__rmod__": _reflected(remainder), "__rpow__": _reflected(pow), "__rmatmul__": _reflected(matmul),
        "__neg__": neg, "__pos__": positive, "__abs__": abs,
        "__eq__": _equality(equal, False), "__ne__": _equality(not_equal, True), "__lt__": less, "__le__": less_equal,
        "__gt__": greater, "__ge__": greater_equal,
        # & | ^ ~ as in NumPy and PyTorch: logical on bools, bitwise on integers (floats raise)
        "__and__": elementwise.bitwise_and, "__or__": elementwise.bitwise_or, "__xor__": elementwise.bitwise_xor,
        "__invert__": elementwise.bitwise_invert, "__rand__": _reflected(elementwise.bitwise_and),
        "__ror__": _reflected(elementwise.bitwise_or), "__rxor__": _reflected(elementwise.bitwise_xor),
    }
    for name, fn in operators.items():
        setattr(Tensor, name, fn)
    inplace.install(Tensor)  # x += y, x.add_(y), ... (after the operators they build on)


_install_tensor_methods()
