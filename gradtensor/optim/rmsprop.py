"""RMSprop (Hinton), optionally centered and with momentum."""
from .. import backend
from .optimizer import Optimizer, check_nonnegative, lerp_, zeros_state


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, *, lr, alpha, eps, weight_decay, momentum,
                   maximize):
    """One RMSprop step on arrays, in place, as PyTorch's RMSprop computes it.

    `grad_avg` is None unless centered; `momentum_buffer` is None unless momentum > 0.
    """
    xp = backend.xp(param)
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * grad * grad
    if grad_avg is not None:
        lerp_(grad_avg, grad, 1 - alpha)
        avg = xp.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = xp.sqrt(square_avg)
    avg += eps
    if momentum_buffer is not None:
        momentum_buffer *= momentum
        momentum_buffer += grad / avg
        param += -lr * momentum_buffer
    else:
        param += -lr * grad / avg


class RMSprop(Optimizer):
    """RMSprop: divides the gradient by a running root mean square (minus the mean's square when centered)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, *,
                 maximize=False):
        check_nonnegative("RMSprop", lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        if not state:
            state["step"] = 0
            state["square_avg"] = zeros_state(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = zeros_state(param)
            if group["centered"]:
                state["grad_avg"] = zeros_state(param)
        state["step"] += 1
        grad_avg = state["grad_avg"].data if group["centered"] else None
        buffer = state["momentum_buffer"].data if group["momentum"] > 0 else None
        rmsprop_update(
            param.data, grad, state["square_avg"].data, grad_avg, buffer, lr=group["lr"], alpha=group["alpha"],
            eps=group["eps"], weight_decay=group["weight_decay"], momentum=group["momentum"],
            maximize=group["maximize"],
        )
