"""Module and Parameter: the containers that own a model's trainable tensors and its state.

As in PyTorch, assigning a Parameter to a module attribute registers it, assigning a Module registers
a submodule, and `register_buffer` adds non-trainable state (running statistics) that travels with
`to()` and `state_dict()`.
"""
import collections
import itertools

from .. import backend, creation, dtypes
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that a Module registers as trainable when assigned to one of its attributes.

    `Parameter(t)` shares t's memory (and in-place version counter), as PyTorch's does.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = creation.empty(0)
        elif not isinstance(data, Tensor):
            data = creation.asarray(data)
        super().__init__(data.data, version=data._version)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        # Tensor's slot-wise copy would share the autograd accumulator (grads would reach the original)
        result = Parameter(Tensor(self.data.copy()), requires_grad=self.requires_grad)
        memo[id(self)] = result
        return result


def new_parameter(shape, device=None, dtype=None):
    """An uninitialised float parameter of `shape` (layers fill it in reset_parameters)."""
    return Parameter(creation.empty(shape, dtype=dtype, device=device))


IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

_hook_ids = itertools.count()


class RemovableHandle:
    """Returned by register_*_hook: `handle.remove()` unregisters the hook."""

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = next(_hook_ids)

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Module:
    """Base class of every layer and model: subclasses set attributes in __init__ and define forward."""

    def __init__(self):
        setattr_ = super().__setattr__
        setattr_("training", True)
        setattr_("_parameters", {})
        setattr_("_buffers", {})
        setattr_("_non_persistent_buffers", set())
        setattr_("_modules", {})
        setattr_("_forward_pre_hooks", {})
        setattr_("_forward_hooks", {})

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks:
            for hook in tuple(self._forward_pre_hooks.values()):
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in tuple(self._forward_hooks.values()):
                result = hook(self, args, output)
                if result is not None:
                    output = result
        return output

    # --- registration -----------------------------------------------------------------
    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError(f"cannot assign parameter {name!r} before Module.__init__() call")
            self._forget(name)
            params[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} of {type(self).__name__} "
                    "(gt.nn.Parameter or None expected)"
                )
            params[name] = None
        elif isinstance(value, Module):
            modules = self.__dict__.get("_modules")
            if modules is None:
                raise AttributeError(f"cannot assign module {name!r} before Module.__init__() call")
            self._forget(name)
            modules[name] = value
        elif name in self.__dict__.get("_modules", ()):
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} of {type(self).__name__} "
                    "(gt.nn.Module or None expected)"
                )
            self._modules[name] = None
        elif name in self.__dict__.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(
                    f"cannot assign {type(value).__name__} as buffer {name!r} of {type(self).__name__} "
                    "(gt.Tensor or None expected)"
                )
            self._buffers[name] = value
        else:
            super().__setattr__(name, value)

    def _forget(self, name):
        """Drop `name` from every registry, so one attribute lives in exactly one of them."""
        self.__dict__.pop(name, None)
        for registry in ("_parameters", "_buffers", "_modules"):
            self.__dict__[registry].pop(name, None)
        self._non_persistent_buffers.discard(name)

    def __getattr__(self, name):
        # only called when normal lookup fails; reads __dict__ directly so a half-built module
        # (during copy.deepcopy) cannot recurse
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(registry, ()):
                del self.__dict__[registry][name]
                self._non_persistent_buffers.discard(name)
                return
        super().__delattr__(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    def _check_new_name(self, name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{kind} name must be a non-empty string without '.', got {name!r}")
        if name not in self._registry_of(kind) and hasattr(self, name):
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")

    def _registry_of(self, kind):
        return {"parameter": self._parameters, "buffer": self._buffers, "module": self._modules}[kind]

    def register_parameter(self, name, param):
        """Add a parameter (or None, a declared but absent parameter such as a disabled bias)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        self._check_new_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: cannot assign {type(param).__name__} as parameter {name!r} "
                "(gt.nn.Parameter or None expected)"
            )
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add state that is not trained (e.g. running statistics); persistent ones go in state_dict()."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        self._check_new_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: cannot assign {type(tensor).__name__} as buffer {name!r} (gt.Tensor or None expected)")
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {type(module).__name__} is not a gt.nn.Module")
        self._check_new_name(name, "module")
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target):
        """The submodule at a dotted path ("encoder.layers.0"); "" is the module itself."""
        module = self
        for part in target.split(".") if target else ():
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (looking up {target!r})")
            module = module._modules[part]
        return module

    # --- traversal ------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module and every descendant, each module once."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, members_of, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in members_of(module):
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, parameter) pairs; a parameter shared by two layers appears once (first name)."""
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    # --- modes -------------------------------------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise TypeError(f"train: mode is expected to be a bool, got {type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Reset every parameter's gradient: to None (default) or to zeros in place."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            elif param.grad.grad_fn is not None:  # a gradient recorded with create_graph: cut it loose
                param.grad = Tensor(backend.xp(param.grad.data).zeros_like(param.grad.data))
            else:
                param.grad.data[...] = 0
                param.grad._bump_version()

    def apply(self, fn):
        """Call fn on every submodule (children first) and then on this module; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # --- device and dtype --------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move parameters and buffers to `device` and cast the floating ones to `dtype`, in place.

        Parameters keep their identity (their .data is replaced, as in PyTorch), so an optimizer
        built before the call still updates them. `module.to(gt.float64)` is also accepted.
        """
        if device is not None and not isinstance(device, (str, backend.Device)):
            device, dtype = None, device  # a dtype in the first position
        device = backend.as_device(device)
        dtype = dtypes.as_dtype(dtype)
        if dtype is not None and not dtypes.is_floating(dtype):
            raise TypeError(f"Module.to: only floating dtypes are accepted, got {dtype}")

        def convert(array):
            if device is not None:
                array = backend.to_device(array, device)
            if dtype is not None and dtypes.is_floating(array.dtype) and array.dtype != dtype:
                array = array.astype(dtype)
            return array

        return self._apply_to_arrays(convert)

    def _apply_to_arrays(self, convert):
        """Replace the data of every parameter, its gradient and every buffer by convert(data)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            tensor.data = convert(tensor.data)
            if tensor.grad is not None:
                tensor.grad.data = convert(tensor.grad.data)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=None):
        return self.to("cuda" if index is None else f"cuda:{index}")

    def float(self):
        return self.to(dtype=dtypes.float32)

    def double(self):
        return self.to(dtype=dtypes.float64)

    def half(self):
        return self.to(dtype=dtypes.float16)

    # --- state ------------------------------------------------------------------------------
    def _persistent_state(self):
        """(name, tensor) of this module's own parameters and persistent buffers, as state_dict stores them."""
        for name, param in self._parameters.items():
            if param is not None:
                yield name, param
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers:
                yield name, buf

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """An ordered dict of parameters and persistent buffers by dotted name.

        The values are detached tensors sharing memory with the module (keep_vars=True gives the
        parameters themselves).
        """
        if destination is None:
            destination = collections.OrderedDict()
        for name, tensor in self._persistent_state():
            destination[prefix + name] = tensor if keep_vars else tensor.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        return destination

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from `state_dict` into the parameters and buffers, in place.

        Raises on shape mismatches (ValueError) and, when strict, on missing or unexpected keys
        (RuntimeError), listing every problem at once. Returns (missing_keys, unexpected_keys).
        """
        expected = {}
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            for name, tensor in module._persistent_state():
                expected[f"{module_prefix}.{name}" if module_prefix else name] = tensor
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        mismatched = []
        for key, target in expected.items():
            if key in state_dict:
                value = _as_state_tensor(state_dict[key], key)
                if tuple(value.shape) != tuple(target.shape):
                    mismatched.append(
                        f"size mismatch for {key}: copying a tensor of shape {tuple(value.shape)}, "
                        f"the shape in the current model is {tuple(target.shape)}"
                    )
        problems = list(mismatched)
        if strict:
            if unexpected:
                problems.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected))
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
        if problems:
            error = ValueError if mismatched else RuntimeError
            raise error(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(problems)
            )
        for key, target in expected.items():
            if key in state_dict:
                value = _as_state_tensor(state_dict[key], key)
                array = backend.to_device(value.data, target.device)
                target.data[...] = array.astype(target.dtype, copy=False)
                target._bump_version()
        return IncompatibleKeys(missing, unexpected)

    # --- hooks ------------------------------------------------------------------------------
    def register_forward_hook(self, hook):
        """hook(module, inputs, output) runs after forward; a returned value replaces the output."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook):
        """hook(module, inputs) runs before forward; a returned value (tuple or single) replaces the inputs."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # --- printing ------------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses in repr(); layers override it."""
        return ""

    def __repr__(self):
        lines = [line for line in self.extra_repr().split("\n") if line]
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _indent(repr(module)))
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _indent(text):
    return text.replace("\n", "\n  ")


def _as_state_tensor(value, key):
    if isinstance(value, Tensor):
        return value
    try:
        return creation.asarray(value)
    except TypeError:
        raise TypeError(f"load_state_dict: value for {key!r} is a {type(value).__name__}, expected a tensor or array") from None
