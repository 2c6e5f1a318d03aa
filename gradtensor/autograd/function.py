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
itself recorded and any order of derivative works. A formula that uses only what arrays have too
(arithmetic operators, @, reshape, transpose, sum, comparisons, ops._util.sum_to) may set
`backward_on_arrays = True`: a backward pass that records nothing then runs it on raw arrays
(gradients, saved tensors and saved outputs all read as arrays), without a Tensor per step.
"""
import numpy as np

from .. import backend
from ..dtypes import bfloat16 as _bfloat16
from ..tensor import AccumulateGrad, Tensor, next_sequence_nr  # noqa: F401 (AccumulateGrad re-exported for the engine)
from .grad_mode import state


class Function:
    __slots__ = (
        "needs_input_grad",
        # per input: (node, output_nr, shape, dtype), or None when no gradient flows there; the shape and
        # dtype check the gradient backward returns
        "next_edges",
        "_seq",  # see tensor.next_sequence_nr
        "__dict__",  # ops keep small extras (axes, shapes, masks) as ctx attributes
        "__weakref__",
    )
    # Defaults read through the class until an instance sets them (saves per-op initialisation).
    _saved = None  # the tensors (or None/numbers) forward saved
    _saved_versions = None  # their version counters at save time, taken when the op is recorded
    _saved_output = None  # the output array, when forward asked to keep it (ctx.save_output)
    _output_version = None  # (version counter, version at record time) of that output's tensor
    _saved_output_nr = 0  # which output it is
    _hooks = None  # {output_nr: [hook]} of non-leaf tensors
    _freed = False
    _output_meta = None  # per output (shape, dtype) when there are several: unused ones get zero gradients
    backward_on_arrays = False  # see the module docstring

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = _new(cls)
        prev = state.grad_enabled
        if not prev and not state.anomaly and state.observer is None:  # nothing recorded (backward): lean path
            ctx.needs_input_grad = _NO_GRADS.get(len(args)) or [False] * len(args)
            return _untracked(_run_forward(cls, ctx, args, kwargs), args)
        needs, edges = _needs_and_edges(args)
        ctx.needs_input_grad = needs
        state.grad_enabled = False
        try:
            out = cls.forward(ctx, *args, **kwargs)  # (_run_forward inlined: this is the hot path)
        except Exception:
            _raise_if_devices_differ(cls, args)
            raise
        finally:
            state.grad_enabled = prev
        if type(out) is not _ndarray:
            out = _as_arrays(out)
        if state.anomaly:
            _check_finite((out,) if type(out) is not tuple else out, f"{cls.op_name()} (forward)")

        if state.observer is not None and True in needs:
            state.observer(args, needs)
        if not (prev and True in needs):
            return _untracked(out, args)
        return ctx._record(args, edges, out)

    def _record(self, args, edges, out):
        """Link this node into the tape (edges from _needs_and_edges): outputs that point back here."""
        self.next_edges = edges
        self._seq = next_sequence_nr()
        saved = self._saved
        if saved:
            if len(saved) == 2:  # (a binary op's pair written out: the hot case)
                a, b = saved
                self._saved_versions = (a._version[0] if isinstance(a, Tensor) else None,
                                        b._version[0] if isinstance(b, Tensor) else None)
            else:
                versions = self._saved_versions = []  # (a loop: cheaper than a comprehension here)
                for t in saved:
                    versions.append(t._version[0] if isinstance(t, Tensor) else None)
        if type(out) is not tuple:
            dtype = out.dtype
            result = Tensor(out, dtype.kind == "f" or dtype == _bfloat16, self, 0,
                            None if out.base is None else _shared_version(out, args))
            if self._saved_output is not None:
                self._output_version = result._version, result._version[0]
            return result
        self._output_meta = tuple((o.shape, o.dtype) for o in out)
        results = tuple(
            Tensor(o, o.dtype.kind == "f" or o.dtype == _bfloat16, self, i, _shared_version(o, args))
            for i, o in enumerate(out)
        )
        for i, result in enumerate(results):
            if result.data is self._saved_output:
                self._output_version = result._version, result._version[0]
                self._saved_output_nr = i
        return results

    def input_shape(self, i):
        """Shape of input i (recorded for inputs that need a gradient)."""
        return self.next_edges[i][2]

    # --- the ctx interface --------------------------------------------------------
    def save_for_backward(self, *tensors):
        self._saved = tensors

    @property
    def saved_tensors(self):
        if self._freed:
            raise _freed_error(self)
        saved = self._saved
        if not saved:
            return ()
        on_arrays = state.backward_on_arrays  # a backward run on arrays reads their data
        versions = self._saved_versions
        if on_arrays and len(saved) == 2 and versions:  # (a binary op's pair written out: the hot case)
            a, b = saved
            va, vb = versions
            if (va is None or a._version[0] == va) and (vb is None or b._version[0] == vb):
                return (a.data if isinstance(a, Tensor) else a, b.data if isinstance(b, Tensor) else b)
        arrays = [] if on_arrays else None
        for t, version in zip(saved, versions or (None,) * len(saved)):
            if version is not None and t._version[0] != version:
                raise RuntimeError(
                    f"{self.name()}: a tensor it saved for backward (shape {t.shape}, dtype {t.dtype}) was "
                    f"modified in place after it was saved (version {t._version[0]}, expected {version}); "
                    "compute on a copy (x.clone()) instead of writing into a tensor the graph needs"
                )
            if arrays is not None:
                arrays.append(t.data if version is not None or isinstance(t, Tensor) else t)
        return saved if arrays is None else tuple(arrays)

    def save_output(self, array):
        """Keep the forward output for backward without a reference cycle (output -> node -> output)."""
        self._saved_output = array if type(array) is _ndarray else _as_array(array)
        return array

    def saved_output(self):
        """The output kept by save_output, as a tensor whose graph leads back to this node."""
        if self._freed:
            raise _freed_error(self)
        if self._output_version is not None and self._output_version[0][0] != self._output_version[1]:
            version, expected = self._output_version[0][0], self._output_version[1]
            raise RuntimeError(
                f"{self.name()}: its output (shape {self._saved_output.shape}), which backward needs, was modified "
                f"in place (version {version}, expected {expected}); compute on a copy (y.clone()) instead"
            )
        if state.backward_on_arrays:
            return self._saved_output
        out = Tensor(self._saved_output, grad_fn=self if state.grad_enabled else None, output_nr=self._saved_output_nr)
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
        """Free what backward kept (saved tensors, outputs, extras); a later backward through it raises."""
        self.__dict__.clear()
        self._freed = True

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("Function subclasses define a static forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError("Function subclasses define a static backward(ctx, *grads)")


_ndarray = np.ndarray
_new = object.__new__
_NO_GRADS = {n: (False,) * n for n in range(1, 9)}  # shared needs_input_grad of unrecorded calls


def _needs_and_edges(args):
    """Per input: whether it needs a gradient, and the edge to the node its gradient goes to:
    (node, output_nr, shape, dtype), or None. One loop for both (a comprehension's frame costs more
    for a few arguments)."""
    needs = []
    edges = []
    for a in args:
        if isinstance(a, Tensor) and a.requires_grad:
            data = a.data
            fn = a.grad_fn
            if fn is None:  # a leaf: its AccumulateGrad node
                fn = a._accumulator or a._get_accumulator()
            edges.append((fn, a._output_nr, data.shape, data.dtype))
            needs.append(True)
        else:
            edges.append(None)
            needs.append(False)
    return needs, edges


def _run_forward(cls, ctx, args, kwargs):
    """cls.forward's result as an array, or a tuple of arrays."""
    try:
        out = cls.forward(ctx, *args, **kwargs)
    except Exception:
        _raise_if_devices_differ(cls, args)  # a clearer message than the array library's
        raise
    return out if type(out) is _ndarray else _as_arrays(out)


def _as_arrays(out):
    """forward's result (an array or a tuple of arrays; NumPy scalars, Tensors) as arrays."""
    if type(out) is not tuple:
        return _as_array(out)
    return tuple(o if type(o) is _ndarray else _as_array(o) for o in out)


def _untracked(out, args):
    """Tensors off the tape for forward's array(s)."""
    if type(out) is not tuple:
        return Tensor(out, version=None if out.base is None else _shared_version(out, args))
    return tuple(Tensor(o, version=_shared_version(o, args)) for o in out)


def _shared_version(out, args):
    """A view of an input (the first, or another: einsum's operands follow its subscripts), or the
    input's array itself (a checkpointed region may return its input), shares that input's version
    counter (as in PyTorch), so writing through either invalidates what the graph saved of the other;
    other outputs get a fresh counter."""
    base = out.base
    for a in args:
        if isinstance(a, Tensor):
            src = a.data
            if out is src or (base is not None and (base is src or base is src.base)):
                return a._version
    return None


def _raise_if_devices_differ(cls, args):
    arrays = [a.data for a in args if isinstance(a, Tensor)]
    if len(arrays) > 1 and not backend.same_device(arrays):
        devices = ", ".join(str(backend.device_of(a)) for a in arrays)
        raise RuntimeError(f"{cls.op_name()}: operands are on different devices ({devices}); move them to one")


def _as_array(o):
    """Forward results as arrays: NumPy turns 0-d results into scalars, a Tensor gives its data."""
    if isinstance(o, Tensor):
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
        if not bool(backend.host_read(mod.isfinite(a).all(), "detect_anomaly")):
            kind = "NaN" if bool(backend.host_read(mod.isnan(a).any(), "detect_anomaly")) else "inf"
            raise RuntimeError(f"detect_anomaly: {where} produced {kind} values (output shape {a.shape})")

