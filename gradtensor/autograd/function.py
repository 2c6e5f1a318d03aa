"""Function: one differentiable operation, its forward and backward side by side.

An instance of a Function subclass is both the `ctx` its forward/backward receive and the
node of the tape: it keeps edges to the nodes of its inputs and only what backward needs.

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):            # Tensors in, an array (or Tensor) out
            ctx.save_for_backward(a, b)
            return a.data * b.data

        @staticmethod
        def backward(ctx, grad):           # Tensors in, one gradient (or None) per input out
            a, b = ctx.saved_tensors
            return grad * b, grad * a

Backward formulas are written with Tensor ops, so with create_graph=True the backward pass is
itself recorded and any order of derivative works.
"""
import numpy as np

from .. import backend
from ..dtypes import bfloat16 as _bfloat16
from ..tensor import Tensor
from .grad_mode import state


class Function:
    __slots__ = (
        "needs_input_grad",
        "next_edges",  # per input: (node, output_nr), or None when no gradient flows there
        "_input_meta",  # per input: (shape, dtype) to check the gradients backward returns
        "_output_meta",  # per output: (shape, dtype), to fill gradients of unused outputs
        "_saved",  # [(tensor, version at save time)]
        "_saved_output",  # the output array, when forward asked to keep it (ctx.save_output)
        "_hooks",  # {output_nr: [hook]} of non-leaf tensors
        "_freed",
        "__dict__",  # ops keep small extras (axes, shapes, masks) as ctx attributes
        "__weakref__",
    )

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls.__new__(cls)
        ctx._saved = None
        ctx._saved_output = None
        ctx._hooks = None
        ctx._freed = False
        needs = tuple(type(a) is Tensor and a.requires_grad for a in args)
        ctx.needs_input_grad = needs
        record = state.grad_enabled and True in needs

        arrays = [a.data for a in args if type(a) is Tensor]
        if len(arrays) > 1 and not backend.same_device(arrays):
            devices = ", ".join(str(backend.device_of(a)) for a in arrays)
            raise RuntimeError(f"{cls.op_name()}: operands are on different devices ({devices}); move them to one")

        prev = state.grad_enabled
        state.grad_enabled = False
        try:
            out = cls.forward(ctx, *args, **kwargs)
        finally:
            state.grad_enabled = prev

        multiple = type(out) is tuple
        outs = out if multiple else (out,)
        outs = tuple(o if type(o) is _ndarray else _as_array(o) for o in outs)
        if state.anomaly:
            _check_finite(outs, f"{cls.op_name()} (forward)")

        if not record:
            ctx._saved = None
            results = tuple(Tensor(o) for o in outs)
            return results if multiple else results[0]

        edges = []
        meta = []
        for a, need in zip(args, needs):
            if need:
                fn = a.grad_fn
                edges.append((fn, a._output_nr) if fn is not None else (a._get_accumulator(), 0))
                meta.append((a.data.shape, a.data.dtype))
            else:
                edges.append(None)
                meta.append(None)
        ctx.next_edges = edges
        ctx._input_meta = meta
        ctx._output_meta = tuple((o.shape, o.dtype) for o in outs) if multiple else None
        results = []
        for i, o in enumerate(outs):
            t = Tensor(o, grad_fn=ctx, output_nr=i)
            t.requires_grad = o.dtype.kind == "f" or o.dtype == _bfloat16
            results.append(t)
        return tuple(results) if multiple else results[0]

    # --- the ctx interface --------------------------------------------------------
    def save_for_backward(self, *tensors):
        self._saved = [(t, t._version[0]) if type(t) is Tensor else (t, None) for t in tensors]

    @property
    def saved_tensors(self):
        if self._freed:
            raise _freed_error(self)
        saved = self._saved or ()
        out = []
        for t, version in saved:
            if version is not None and t._version[0] != version:
                raise RuntimeError(
                    f"{self.name()}: a tensor it saved for backward (shape {t.shape}, dtype {t.dtype}) was "
                    f"modified in place after it was saved (version {t._version[0]}, expected {version}); "
                    "compute on a copy (x.clone()) instead of writing into a tensor the graph needs"
                )
            out.append(t)
        return tuple(out)

    def save_output(self, array):
        """Keep the forward output for backward without a reference cycle (output -> node -> output)."""
        self._saved_output = array
        return array

    def saved_output(self):
        """The output kept by save_output, as a tensor whose graph leads back to this node."""
        if self._freed:
            raise _freed_error(self)
        out = Tensor(self._saved_output, grad_fn=self if state.grad_enabled else None)
        out.requires_grad = state.grad_enabled
        return out

    def mark_non_differentiable(self, *tensors):  # accepted for PyTorch compatibility
        pass

    # --- the node interface ---------------------------------------------------------
    @classmethod
    def op_name(cls):
        return cls.__name__

    def name(self):
        return f"{type(self).__name__}Backward"

    def _tensor_hooks(self, output_nr):
        if self._hooks is None:
            self._hooks = {}
        return self._hooks.setdefault(output_nr, [])

    def _release(self):
        """Free what backward kept; a later backward through this node raises."""
        self._saved = None
        self._saved_output = None
        self.__dict__.clear()
        self._freed = True

    def _run_backward(self, grads):
        if self._freed:
            raise _freed_error(self)
        return type(self).backward(self, *grads)

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("Function subclasses define a static forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("Function subclasses define a static backward(ctx, *grads)")


class AccumulateGrad:
    """The node that ends every path at a leaf: it adds the incoming gradient to leaf.grad."""

    __slots__ = ("variable", "next_edges", "__weakref__")

    def __init__(self, variable):
        self.variable = variable
        self.next_edges = ()

    def name(self):
        return "AccumulateGrad"


_ndarray = np.ndarray


def _as_array(o):
    """Forward results as arrays: NumPy turns 0-d results into scalars, a Tensor gives its data."""
    if type(o) is Tensor:
        return o.data
    if isinstance(o, (np.generic, int, float, bool)):
        return np.asarray(o)
    return o


def _freed_error(node):
    return RuntimeError(
        f"backward through {node.name()} a second time: its saved values were freed after the first "
        "backward. Pass retain_graph=True to the first backward (or autograd.grad) if you need to "
        "go through the graph again"
    )


def _check_finite(arrays, where):
    for a in arrays:
        if a is None or a.dtype.kind != "f":
            continue
        mod = backend.xp(a)
        if not bool(mod.isfinite(a).all()):
            kind = "NaN" if bool(mod.isnan(a).any()) else "inf"
            raise RuntimeError(f"detect_anomaly: {where} produced {kind} values (output shape {a.shape})")

