"""LAMB (You et al., 2019): Adam's direction scaled per parameter by a trust ratio, for large batches."""
from .. import backend
from .optimizer import Optimizer, check_betas, check_nonnegative, lerp_, zeros_state


def lamb_update(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay):
    """One LAMB step on arrays, in place on `param` and the moment arrays.

    update = m_hat / (sqrt(v_hat) + eps) + weight_decay * p (bias-corrected moments, as Adam);
    p -= lr * trust * update with trust = ||p|| / ||update||, or 1 when either norm is 0.
    The trust ratio stays an array, so a GPU step never waits for the host.
    """
    xp = backend.xp(param)
    lerp_(exp_avg, grad, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    update = exp_avg / (1 - beta1**step)
    denom = xp.sqrt(exp_avg_sq / (1 - beta2**step))
    denom += eps
    update /= denom
    if weight_decay != 0:
        update += weight_decay * param
    param_norm = xp.linalg.norm(param.ravel())
    update_norm = xp.linalg.norm(update.ravel())
    both_positive = (param_norm > 0) & (update_norm > 0)
    trust_ratio = xp.where(both_positive, param_norm / xp.where(both_positive, update_norm, 1), 1)
    param -= (lr * trust_ratio) * update


class LAMB(Optimizer):
    """Layer-wise Adaptive Moments for Batch training."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0):
        check_nonnegative("LAMB", lr=lr, eps=eps, weight_decay=weight_decay)
        check_betas("LAMB", betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, param, grad, state, group):
        if not state:
            state["step"] = 0
            state["exp_avg"] = zeros_state(param)
            state["exp_avg_sq"] = zeros_state(param)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        lamb_update(
            param.data, grad, state["exp_avg"].data, state["exp_avg_sq"].data, step=state["step"], lr=group["lr"],
            beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
        )
