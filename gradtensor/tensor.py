"""Tensor: an array (NumPy or CuPy) plus its place on the autograd tape.

The differentiable methods (x.exp(), x + y, x.sum(...)) are installed by `gradtensor.ops`,
which keeps the one direction of imports: ops use the tensor, never the reverse.
"""
import itertools
import weakref

import numpy as np

from . import backend, dtypes
from .autograd import grad_mode


class Tensor:
    __slots__ = (
        "data",  # the raw NumPy/CuPy array
        "requires_grad",
        "grad",
        "grad_fn",  # the Function node that made this tensor, None for leaves
        "_output_nr",  # which output of grad_fn this is
        "_version",  # one-element list shared with detached aliases; bumped by in-place writes
        "_accumulator",  # this leaf's AccumulateGrad node (made on first use, kept for every graph after)
        "_hooks",  # gradient hooks of a leaf
        "__weakref__",
    )

    # NumPy defers to our reflected operators (np_array + x gives a Tensor, never an object array)
    __array_priority__ = 1000
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, grad_fn=None, output_nr=0, version=None):
        self.data = data
        self.grad = None
        self.grad_fn = grad_fn
        self._output_nr = output_nr
        self._version = [0] if version is None else version
        self._accumulator = None
        self._hooks = None
        if requires_grad and grad_fn is None and not dtypes.is_floating(data.dtype):
            raise TypeError(
                f"requires_grad: only floating-point tensors can require gradients, got dtype {data.dtype}"
            )
        self.requires_grad = requires_grad

    # --- attributes -------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def T(self):
        return self.transpose()

    @property
    def mT(self):
        return self.swapaxes(-1, -2)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        values = self.numpy()
        if self.dtype == dtypes.bfloat16:  # (NumPy prints bfloat16 without a decimal point)
            values = values.astype(np.float32)
        body = np.array2string(values, separator=", ", prefix="tensor(")
        extra = f", size={self.shape}" if self.size == 0 and self.ndim != 1 else ""
        if self.device.type != "cpu":
            extra += f", device='{self.device}'"
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool):
            extra += f", dtype={self.dtype}"
        if self.grad_fn is not None:
            extra += f", grad_fn=<{self.grad_fn.name()}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # --- autograd -------------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        if not self.is_leaf:
            raise RuntimeError(
                "requires_grad_: only leaf tensors can change requires_grad; "
                "use .detach().requires_grad_() for a new leaf"
            )
        if requires_grad and not dtypes.is_floating(self.dtype):
            raise TypeError(
                f"requires_grad_: only floating-point tensors can require gradients, got dtype {self.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """A new leaf sharing this tensor's data (and version counter), off the tape."""
        return Tensor(self.data, version=self._version)

    def backward(self, grad=None, retain_graph=None, create_graph=False):
        if not self.requires_grad:
            raise RuntimeError(
                f"backward: this tensor (shape {self.shape}) does not require grad and has no grad_fn; "
                "mark an input with requires_grad=True before computing it"
            )
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implied only for a single-element output, but this tensor has "
                    f"shape {self.shape}; pass grad= (e.g. y.backward(gt.ones_like(y))) or reduce it first "
                    "(e.g. y.sum().backward())"
                )
        if retain_graph is None:
            retain_graph = create_graph
        engine.run_backward((self,), (grad,), retain_graph=retain_graph, create_graph=create_graph)

    def register_hook(self, hook):
        """Call hook(grad) when this tensor's gradient is computed; a returned tensor replaces it."""
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not require grad")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            hooks = self.grad_fn._tensor_hooks(self._output_nr)
        hooks.append(hook)
        return _RemovableHandle(hooks, hook)

    def retain_grad(self):
        """Keep .grad for this non-leaf tensor after backward (leaves always keep it)."""
        if self.grad_fn is None:
            if not self.requires_grad:
                raise RuntimeError("retain_grad: the tensor does not require grad")
            return
        hooks = self.grad_fn._tensor_hooks(self._output_nr)
        if not any(isinstance(h, _RetainGrad) for h in hooks):
            hooks.append(_RetainGrad(self))

    def _rebase(self, grad_fn, output_nr):
        """Continue this tensor's history from output output_nr of grad_fn, as after an in-place op.
        retain_grad moves along (.grad is then the new value's gradient); hooks registered before
        stay with the old value, as in PyTorch."""
        fn = self.grad_fn
        hooks = fn._hooks.get(self._output_nr, []) if fn is not None and fn._hooks else []
        retained = [h for h in hooks if isinstance(h, _RetainGrad) and h.tensor() is self]
        for hook in retained:
            hooks.remove(hook)
        self.grad_fn, self._output_nr = grad_fn, output_nr
        if retained:
            self.retain_grad()

    def _get_accumulator(self):
        """The AccumulateGrad node of this leaf, shared by every op that uses it."""
        acc = self._accumulator
        if acc is None:
            acc = self._accumulator = AccumulateGrad(self)
        return acc

    # --- conversion -------------------------------------------------------------------
    def numpy(self):
        """A host (NumPy) copy of the data; works on tensors that require grad."""
        out = backend.to_host(self.data)
        return out.copy() if out is self.data else out

    def __array__(self, dtype=None, copy=None):
        """A host array; a copy unless copy=False was asked for (and then only when it can share)."""
        out = backend.to_host(self.data)
        if copy is False and (out is not self.data or (dtype is not None and out.dtype != dtype)):
            raise ValueError(  # (NumPy 2's protocol: copy=False must share or raise)
                f"__array__: copy=False, but a {self.dtype} tensor on {self.device} cannot be shown as a host "
                f"array{'' if dtype is None else f' of dtype {np.dtype(dtype)}'} without a copy"
            )
        if dtype is not None and out.dtype != dtype:
            return out.astype(dtype)
        if copy is False:
            return out
        return out.copy() if out is self.data else out

    def item(self):
        if self.size != 1:
            raise ValueError(f"item: only single-element tensors convert to a Python number, got shape {self.shape}")
        return backend.host_read(self.data, "Tensor.item()").item()

    def tolist(self):
        return backend.to_host(self.data).tolist()

    def __float__(self):
        return float(self.item())

    def __format__(self, spec):
        """A 0-d tensor formats as its number (f"{loss:.3f}"); others as their repr."""
        if self.ndim == 0:
            return format(self.item(), spec)
        return object.__format__(self, spec)

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.size != 1:
            raise ValueError(
                f"the truth value of a tensor with shape {self.shape} is ambiguous; use .any() or .all()"
            )
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.size != 1:
            raise TypeError(f"only integer tensors of one element can be used as an index, got {self.dtype} {self.shape}")
        return int(self.item())

    def __dlpack__(self, *args, **kwargs):
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=None):
        return self.to("cuda" if index is None else f"cuda:{index}")

    # --- in-place writes ----------------------------------------------------------------
    def __setitem__(self, index, value):
        if self.requires_grad and grad_mode.state.grad_enabled:
            raise RuntimeError(
                f"__setitem__: cannot write in place into a tensor that requires grad (shape {self.shape}); "
                "the graph needs its values. Compute a new tensor (e.g. gt.where), or write under gt.no_grad() "
                "or into x.detach()"
            )
        if isinstance(value, Tensor):
            if value.requires_grad and grad_mode.state.grad_enabled:
                raise RuntimeError(
                    f"__setitem__: the value (shape {value.shape}) requires grad, but a write into a tensor is "
                    "not recorded, so its gradient would be lost; build the result with gt.where, gt.concatenate "
                    "or gt.stack instead, or write value.detach() if no gradient should flow"
                )
            if not backend.same_device((self.data, value.data)):
                raise RuntimeError(
                    f"__setitem__: value is on {value.device} but the tensor is on {self.device}"
                )
            value = value.data
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        self.data[index] = value
        self._version[0] += 1

    def _bump_version(self):
        """Record an in-place change of the data (saved copies of it become stale)."""
        self._version[0] += 1

    def __deepcopy__(self, memo):
        """A new leaf with copied data (and grad); graph links and hooks are not copied."""
        if not self.is_leaf:
            raise RuntimeError("deepcopy: only leaf tensors can be deep-copied; detach() first")
        out = Tensor(self.data.copy(), self.requires_grad)
        if self.grad is not None:
            out.grad = Tensor(self.grad.data.copy())
        memo[id(self)] = out
        return out

    def __hash__(self):
        return id(self)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))


# Tape nodes are numbered as they are made, each after the nodes of its inputs: the backward engine
# runs the highest number first, which is a reverse topological order.
next_sequence_nr = itertools.count().__next__


class AccumulateGrad:
    """The node that ends every path at a leaf: backward adds the incoming gradient to leaf.grad.

    The leaf keeps its node for every graph it enters (one node per leaf, not one per graph); the node
    refers to the leaf weakly, so no leaf <-> node cycle keeps either alive. A graph that outlives
    its leaf has nowhere to put that gradient, and nobody to read it: `variable` is then None.
    """

    __slots__ = ("_variable", "next_edges", "_seq", "__weakref__")
    _output_meta = None  # one output (as a Function's default)

    def __init__(self, variable):
        self._variable = weakref.ref(variable)
        self.next_edges = ()
        self._seq = next_sequence_nr()

    @property
    def variable(self):
        return self._variable()

    def name(self):
        return "AccumulateGrad"


class _RemovableHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


class _RetainGrad:
    """A hook that stores a non-leaf tensor's gradient in its .grad."""

    def __init__(self, tensor):
        self.tensor = weakref.ref(tensor)

    def __call__(self, grad):
        tensor = self.tensor()
        if tensor is not None:  # (a copy: the engine goes on with grad's memory, and .grad may be written in place)
            tensor.grad = grad.clone() if tensor.grad is None else tensor.grad + grad
        return None


from .autograd import engine  # noqa: E402 (the engine builds on Tensor: bound here, after it)
