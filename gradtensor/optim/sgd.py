"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay."""
from .. import backend, fused
from ..tensor import Tensor
from .optimizer import Optimizer, check_nonnegative, zeros_state


def sgd_update(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """One SGD step on arrays, in place on `param`, as PyTorch's SGD computes it.

    `momentum_buffer` is updated in place; on the first step (None) a new one is made from the gradient.
    Returns the momentum buffer (None without momentum).
    """
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad + weight_decay * param
    if momentum != 0:
        if momentum_buffer is None:
            # an array even for a 0-d parameter, whose arithmetic gives NumPy scalars: updated in place later
            momentum_buffer = backend.xp(param).array(grad, copy=True)
        else:
            momentum_buffer *= momentum
            momentum_buffer += grad if dampening == 0 else (1 - dampening) * grad
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    param += -lr * grad
    return momentum_buffer


class SGD(Optimizer):
    """SGD: p -= lr * g, with g the gradient plus weight decay, through (Nesterov) momentum when enabled."""

    _capturable = True

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False):
        check_nonnegative("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        buffer = state.get("momentum_buffer")
        new_buffer = sgd_update(
            param.data, grad, None if buffer is None else buffer.data, lr=group["lr"], momentum=group["momentum"],
            dampening=group["dampening"], weight_decay=group["weight_decay"], nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if buffer is None and new_buffer is not None:
            state["momentum_buffer"] = Tensor(new_buffer)

    def _step_group(self, params, group):
        """The parameters the multi-tensor kernel takes are updated in one launch per kind of step (a
        momentum buffer's first step copies the gradient), the others by _update. In the capturable
        form all take the multi-tensor path, with the device learning rate and GradScaler's mask."""
        momentum = group["momentum"]
        kernel = params if self._graph_mode else self._kernel_params(params, group, ("momentum_buffer",))
        first = [param for param in kernel if "momentum_buffer" not in self.state[param]]
        later = [param for param in kernel if "momentum_buffer" in self.state[param]]
        if first and momentum != 0 and group["dampening"] != 0 and self._skips_first_step():
            first = []
        for batch, first_step in ((first, True), (later, False)):
            if not batch:
                continue
            buffers = None
            if momentum != 0:
                if first_step:
                    for param in batch:
                        self._new_state(param)
                        self.state[param]["momentum_buffer"] = zeros_state(param)
                buffers = [self.state[param]["momentum_buffer"].data for param in batch]
            fused.sgd_momentum_step_(
                [param.data for param in batch], [param.grad.data for param in batch], buffers, self._lr_for(group),
                momentum, group["dampening"], group["nesterov"], group["weight_decay"], first_step,
                maximize=group["maximize"], skip=self._skip,
            )

    def _skips_first_step(self):
        """Whether GradScaler's mask skips this step, asked before a momentum buffer's first step: a
        buffer made by a masked step would stay zero, and with dampening the next step (buf =
        momentum * 0 + (1 - dampening) * g) would not give the first step's buf = g. That case reads
        the flag on the host, so a graph whose warm-up meets it falls back to eager steps."""
        if self._skip is None:
            return False
        return bool(backend.host_read(self._skip, "SGD's first momentum step with dampening under a GradScaler"))
