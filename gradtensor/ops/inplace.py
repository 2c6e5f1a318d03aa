"""In-place forms of ops: x += y, x.add_(y), x.mul_(2), x.clip_(0, 1), x.copy_(src), x.zero_() ...
(PyTorch's method names; NumPy's and PyTorch's augmented assignment, which changes x itself).

Where nothing is recorded (no grad mode, or neither x nor the other operands need a gradient) the
result is written into x's memory, as NumPy and PyTorch do: views of x see it, and x's version
counter moves, so a node that saved x raises at backward instead of using the changed values.
On the tape x takes the result and its history continues from the op's node (see in_place)."""
import sys

from .. import backend
from ..autograd.grad_mode import state
from ..tensor import Tensor
from . import elementwise as E
from ._util import as_tensor_like
from .shape import broadcast_to

__all__ = ["in_place", "write_in_place"]


def in_place(fn, x, name):
    """fn(x) stored in x; returns x.

    Off the tape the result is written into x's memory. On the tape x takes the result's array (in
    x's dtype) and its history continues from fn's node, which computed from a stand-in for x's old
    values; the old array itself is left as it was (a node that kept it still reads the old values,
    and no memory goes to a second copy), and nodes that saved x see its version change and raise at
    backward. Refused on the tape: a leaf that requires grad, and a tensor whose memory another
    tensor shows (a view, its base, a detached alias), which would keep the old values."""
    if not state.grad_enabled:
        return _write(x, fn(x), name)
    if x.requires_grad and x.grad_fn is None:
        raise RuntimeError(
            f"{name}: the tensor (shape {x.shape}) is a leaf that requires grad: changing it in place would "
            "change the value its gradient is for; compute a new tensor, or change it under gt.no_grad()"
        )
    out = fn(Tensor(x.data, x.requires_grad, x.grad_fn, x._output_nr))
    if not out.requires_grad:  # nothing to record
        return _write(x, out, name)
    if _shared(x):
        raise RuntimeError(
            f"{name}: the tensor (shape {x.shape}) shares its memory with another tensor (a view, its base or "
            "a detached alias), which would not see the change on the tape; compute a new tensor"
        )
    out = _stored_as(x, out, name)
    x.data = out.data
    x._bump_version()
    x.requires_grad = True
    x._rebase(out.grad_fn, out._output_nr)
    return x


def _stored_as(x, out, name):
    """out as x can hold it: x's shape (an in-place op cannot change it) and dtype (cast when the
    kinds allow, as NumPy's same_kind: float64 into float32, not float into int)."""
    if out.shape != x.shape:
        raise ValueError(
            f"{name}: the result has shape {out.shape} but the tensor has shape {x.shape}; an in-place op "
            "cannot change a tensor's shape"
        )
    if out.dtype != x.dtype:
        if not backend.xp(x.data).can_cast(out.dtype, x.dtype, "same_kind"):
            raise TypeError(f"{name}: a {out.dtype} result cannot be stored in the tensor's dtype {x.dtype}")
        out = out.astype(x.dtype)
    return out


def _write(x, out, name):
    write_in_place(x, _stored_as(x, out, name).data)
    return x


def write_in_place(t, array):
    """Overwrite t's memory off the tape (also running statistics) and move its version counter."""
    t.data[...] = array
    t._bump_version()


def _references_of_one_holder():
    """sys.getrefcount of a version counter one tensor alone holds, measured (not a literal 2:
    interpreters differ in counting the call's own reference)."""
    probe = Tensor(None)
    return sys.getrefcount(probe._version)


_ONE_HOLDER = _references_of_one_holder()


def _shared(x):
    """Whether another tensor (a view, its base, a detached alias) holds x's version counter. The node
    that made x may hold it too, to check at backward that the output it kept is unchanged: that is
    no other tensor (writing into such an output raises at backward, as in PyTorch)."""
    holders = _ONE_HOLDER
    kept = x.grad_fn._output_version if x.grad_fn is not None else None
    if kept is not None and kept[0] is x._version:
        holders += 1
    return sys.getrefcount(x._version) > holders


# --- the methods ---------------------------------------------------------------------------------


def _method(name, fn):
    def method(self, *args, **kwargs):
        return in_place(lambda t: fn(t, *args, **kwargs), self, name)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"In place: {fn.__name__}'s result stored in this tensor (see gradtensor.ops.inplace)."
    return method


def _scaled(t, other, alpha, name):
    other = as_tensor_like(other, t, name)  # (a list times alpha would repeat the list)
    return other if alpha == 1 else other * alpha


def _add(t, other, alpha=1):
    return E.add(t, _scaled(t, other, alpha, "add_"))


def _sub(t, other, alpha=1):
    return E.sub(t, _scaled(t, other, alpha, "sub_"))


def _copy(t, src):
    """src's values, broadcast to t and cast to its dtype whatever the kinds (as PyTorch's copy_,
    fill_ and zero_); t's old values get a zero gradient."""
    src = as_tensor_like(src, t, "copy_")
    if not isinstance(src, Tensor):  # a Python number
        src = Tensor(backend.xp(t.data).full(t.shape, src, dtype=t.dtype))
    return E.where(True, broadcast_to(src, t.shape).astype(t.dtype), t)


def _zero(t):
    return _copy(t, 0)


INPLACE_METHODS = {
    "add_": _add, "sub_": _sub, "mul_": E.mul, "div_": E.div, "pow_": E.pow, "neg_": E.neg,
    "clip_": E.clip, "clamp_": E.clip, "copy_": _copy, "fill_": _copy, "zero_": _zero,
    "__iadd__": E.add, "__isub__": E.sub, "__imul__": E.mul, "__itruediv__": E.div, "__ifloordiv__": E.floor_divide,
    "__imod__": E.remainder, "__ipow__": E.pow,
    "__iand__": E.bitwise_and, "__ior__": E.bitwise_or, "__ixor__": E.bitwise_xor,
}


def install(tensor_class):
    for name, fn in INPLACE_METHODS.items():
        setattr(tensor_class, name, _method(name, fn))
