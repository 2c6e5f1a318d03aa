"""Adam (with AMSGrad) and AdamW (decoupled weight decay)."""
import numpy as np  # dtype names only

from .. import backend, fused
from ..tensor import Tensor
from .optimizer import Optimizer, check_betas, check_nonnegative, lerp_, step_count, zeros_state


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay,
                decoupled_weight_decay, maximize):
    """One Adam step on arrays, in place on `param` and the moment arrays, as PyTorch's Adam computes it.

    `step` counts this step (1 on the first); `max_exp_avg_sq` is None unless AMSGrad is on. With
    `decoupled_weight_decay` (AdamW) the weights shrink by lr * weight_decay instead of the decay
    entering the gradient.
    """
    xp = backend.xp(param)
    if maximize:
        grad = -grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    lerp_(exp_avg, grad, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    second_moment = exp_avg_sq
    if max_exp_avg_sq is not None:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    denom = xp.sqrt(second_moment)
    denom /= bias_correction2**0.5
    denom += eps
    param += -step_size * exp_avg / denom


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; `amsgrad` uses the running maximum of the second moment."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False):
        name = type(self).__name__
        check_nonnegative(name, lr=lr, eps=eps, weight_decay=weight_decay)
        check_betas(name, betas)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)
        self._graph_counts = []  # capturable form: [group, float64 device array of its parameters' step counts]

    _STATE_TENSORS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _capturable = True

    def _init_state(self, param, state, group):
        """The state of a parameter's first step (its step count 0, or in the capturable form its
        entry of the group's device counts)."""
        self._new_state(param)
        state["step"] = self._device_step(param, group) if self._graph_mode else 0
        state["exp_avg"] = zeros_state(param)
        state["exp_avg_sq"] = zeros_state(param)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_state(param)

    def _count_step(self, param, state, group):
        """Create the state on the first step; count this step."""
        if not state:
            self._init_state(param, state, group)
        state["step"] += 1

    def _step_group(self, params, group):
        """The parameters the multi-tensor kernel takes are updated in one launch per step count (the
        bias corrections depend on it; usually all share one), the others by _update. In the capturable
        form all take the multi-tensor path in one launch, reading their step counts on the device."""
        if self._graph_mode:
            self._count_steps_on_device(params, group)
            batches = [([self.state[param]["step"].data for param in params], params)]
        else:
            by_step = {}
            for param in self._kernel_params(params, group, self._STATE_TENSORS):
                state = self.state[param]
                self._count_step(param, state, group)
                by_step.setdefault(state["step"], []).append(param)
            batches = by_step.items()
        beta1, beta2 = group["betas"]
        for step, batch in batches:
            states = [self.state[param] for param in batch]
            exp_avgs = [state["exp_avg"].data for state in states]
            exp_avg_sqs = [state["exp_avg_sq"].data for state in states]
            max_exp_avg_sqs = [state["max_exp_avg_sq"].data for state in states] if group["amsgrad"] else None
            fused.adam_step_(
                [param.data for param in batch], [param.grad.data for param in batch], exp_avgs, exp_avg_sqs,
                max_exp_avg_sqs, step, self._lr_for(group), beta1, beta2, group["eps"], group["weight_decay"],
                group["decoupled_weight_decay"], group["amsgrad"], maximize=group["maximize"], skip=self._skip,
            )

    # --- the capturable form: step counts in one float64 device array per group --------------------

    def _count_steps_on_device(self, params, group):
        """Count this step (unless GradScaler's mask skips it) in the device counts of `params`: one
        op when the whole group steps, as it does in a captured training step."""
        for param in params:
            if not self.state[param]:
                self._init_state(param, self.state[param], group)
        counted = 1 if self._skip is None else self._skip == 0
        if len(params) == len(group["params"]):
            counts = self._group_counts(group)[1]
            counts += counted  # in place: the parameters' step tensors are views of it
        else:
            for param in params:
                step = self.state[param]["step"].data
                step += counted

    def _group_counts(self, group):
        """[group, float64 device array of its parameters' step counts], made on first use."""
        for entry in self._graph_counts:
            if entry[0] is group:
                return entry
        if backend.capturing():
            backend.capture_blocker(f"{type(self).__name__}: a parameter group first stepped inside the capture")
        counts = np.array([step_count(self.state[p]["step"]) if self.state.get(p) else 0 for p in group["params"]],
                          dtype=np.float64)
        entry = [group, backend.to_device(counts, group["params"][0].device)]
        self._graph_counts.append(entry)
        return entry

    def _device_step(self, param, group):
        """The 0-d view of `param`'s entry in its group's device counts, as a Tensor."""
        index = next(i for i, p in enumerate(group["params"]) if p is param)
        counts = self._group_counts(group)[1]
        return Tensor(counts[index:index + 1].reshape(()))

    def _state_to_device_form(self):
        self._graph_counts = []
        for group in self.param_groups:
            for param in group["params"]:
                if self.state.get(param):
                    self.state[param]["step"] = self._device_step(param, group)

    def _state_to_host_form(self):
        for state in self.state.values():
            if state:
                state["step"] = step_count(state["step"])
        self._graph_counts = []

    def _update(self, param, grad, state, group):
        self._count_step(param, state, group)
        beta1, beta2 = group["betas"]
        max_exp_avg_sq = state["max_exp_avg_sq"].data if group["amsgrad"] else None
        adam_update(
            param.data, grad, state["exp_avg"].data, state["exp_avg_sq"].data, max_exp_avg_sq, step=state["step"],
            lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"],
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay before the Adam step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
