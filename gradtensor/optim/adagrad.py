"""Adagrad (Duchi et al.), with learning-rate decay."""
from .. import backend
from ..tensor import Tensor
from .optimizer import Optimizer, check_nonnegative


def adagrad_update(param, grad, state_sum, *, step, lr, lr_decay, weight_decay, eps, maximize):
    """One Adagrad step on arrays, in place on `param` and `state_sum`, as PyTorch's Adagrad computes it."""
    xp = backend.xp(param)
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad + weight_decay * param
    decayed_lr = lr / (1 + (step - 1) * lr_decay)
    state_sum += grad * grad
    std = xp.sqrt(state_sum)
    std += eps
    param += -decayed_lr * grad / std


class Adagrad(Optimizer):
    """Adagrad: scales each coordinate by the root of its summed squared gradients."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, *,
                 maximize=False):
        check_nonnegative("Adagrad", lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                          initial_accumulator_value=initial_accumulator_value, eps=eps)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        if not state:
            state["step"] = 0
            state["sum"] = Tensor(backend.xp(param.data).full_like(param.data, group["initial_accumulator_value"]))
        state["step"] += 1
        adagrad_update(
            param.data, grad, state["sum"].data, step=state["step"], lr=group["lr"], lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
        )
