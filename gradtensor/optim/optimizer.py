"""Optimizer base class: parameter groups, per-parameter state, state_dict in PyTorch's layout.

An optimizer subclass implements `_update(param, grad, state, group)`, which keeps its bookkeeping
(state initialisation, step counts) and hands the raw arrays to one update function per algorithm.
Optimizers with a multi-tensor GPU kernel (SGD, Adam, AdamW) also override `_step_group`, which
updates a whole group: the parameters the kernel takes in one launch, the others one by one.
Updates write into `param.data` in place, off the autograd tape: a parameter keeps its identity
and memory, and its version counter is bumped so stale saved copies are detected.
"""
from collections import defaultdict

from .. import backend, dtypes, fused
from ..autograd.grad_mode import enable_grad
from ..tensor import Tensor


class Optimizer:
    """Base of all optimizers.

    `params` is an iterable of tensors, or of dicts each holding "params" (tensors) and options that
    override `defaults` for that group.
    """

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)  # parameter -> its state dict (tensors hash by identity)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(
                f"{type(self).__name__}: params must be an iterable of tensors or of dicts, got a single Tensor; "
                "pass [tensor] or model.parameters()"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {value}" for key, value in sorted(group.items()) if key != "params")
        lines.append(")")
        return "\n".join(lines)

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing options take the defaults)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}.add_param_group: expected a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: parameters must be given in an ordered collection, not a set")
        else:
            params = list(params)
        for param in params:
            if not isinstance(param, Tensor):
                raise TypeError(f"{name}: can only optimize Tensors, got {type(param).__name__}")
            if not param.is_leaf:
                raise ValueError(f"{name}: can't optimize a non-leaf tensor (shape {param.shape})")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter group contains the same parameter more than once")
        existing = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group = dict(param_group, params=params)
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all optimized parameters: to None (default) or to zeros."""
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns closure()'s loss when a closure is given.

        The closure re-evaluates the model (zero_grad, forward, backward) and returns the loss; it runs with
        gradient recording enabled even when step() is called under no_grad.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if params:
                self._step_group(params, group)
                for param in params:
                    param._bump_version()
        return loss

    def _step_group(self, params, group):
        """Update `params` (those of `group` that have a gradient)."""
        for param in params:
            self._update(param, param.grad.data, self.state[param], group)

    def _kernel_params(self, params, group, state_keys=()):
        """The parameters of `params` that the multi-tensor kernel takes; the others are updated here,
        one by one. The kernel takes a parameter when its data, gradient and existing state tensors
        `state_keys` share one kernel dtype on the GPU (gradtensor.fused.available_for)."""
        kernel = []
        for param in params:
            state = self.state[param]
            arrays = [param.data, param.grad.data] + [state[key].data for key in state_keys if key in state]
            if fused.available_for(*arrays):
                kernel.append(param)
            else:
                self._update(param, param.grad.data, state, group)
        return kernel

    def _update(self, param, grad, state, group):
        """Apply one step to `param` (a Tensor) given its gradient array, its state dict and its group."""
        raise NotImplementedError

    # --- checkpointing ---------------------------------------------------------------------
    def state_dict(self):
        """The optimizer's state as {"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}.

        Parameters are replaced by their position across all groups (PyTorch's layout); state tensors are
        returned by reference, not copied.
        """
        index_of = {}
        param_groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
            packed["params"] = [index_of[id(param)] for param in group["params"]]
            param_groups.append(packed)
        state = {index_of[id(param)]: dict(values) for param, values in self.state.items() if values}
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Restore state saved by state_dict(); parameters are matched by position, group by group.

        Floating-point state is copied to each parameter's dtype and device, so the loaded optimizer never
        shares memory with `state_dict`.
        """
        name = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter groups, "
                f"the optimizer has {len(self.param_groups)}"
            )
        param_of = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} has {len(saved['params'])} parameters in the "
                    f"state dict but {len(group['params'])} in the optimizer"
                )
            param_of.update(zip(saved["params"], group["params"]))
        self.state = defaultdict(dict)
        for index, values in state_dict["state"].items():
            if index not in param_of:
                raise ValueError(f"{name}.load_state_dict: state for parameter {index!r}, which no group holds")
            param = param_of[index]
            self.state[param] = {key: _state_value_for(param, value) for key, value in values.items()}
        self.param_groups = [
            {**{key: value for key, value in saved.items() if key != "params"}, "params": group["params"]}
            for saved, group in zip(saved_groups, self.param_groups)
        ]


def _state_value_for(param, value):
    """A copy of a saved state value on the parameter's device (and in its dtype when floating)."""
    if not isinstance(value, Tensor):
        return value
    array = backend.to_device(value.data, param.device)
    if dtypes.is_floating(array.dtype):
        array = array.astype(param.dtype)
    return Tensor(array.copy() if array is value.data else array)


def zero_grads(params, set_to_none=True):
    """Reset the gradients of `params`: to None, or to zeros in place (a create_graph gradient is replaced)."""
    for param in params:
        grad = param.grad
        if grad is None:
            continue
        if set_to_none:
            param.grad = None
        elif grad.grad_fn is not None:  # recorded with create_graph: cut it loose from its graph
            param.grad = Tensor(backend.xp(grad.data).zeros_like(grad.data))
        else:
            grad.data[...] = 0
            grad._bump_version()


def zeros_state(param):
    """A zero state tensor with the parameter's shape, dtype and device."""
    return Tensor(backend.xp(param.data).zeros_like(param.data))


def lerp_(start, end, weight):
    """start += weight * (end - start), in place, rounded as PyTorch's lerp (exact at weight 0 and 1)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        diff = end - start
        diff *= 1 - weight
        backend.xp(start).subtract(end, diff, out=start)


def check_nonnegative(owner, **values):
    for name, value in values.items():
        if not value >= 0.0:
            raise ValueError(f"{owner}: invalid {name} {value!r} (must be >= 0)")


def check_betas(owner, betas):
    if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
        raise ValueError(f"{owner}: invalid betas {betas!r} (two values in [0, 1))")
