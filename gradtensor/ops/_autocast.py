"""Autocast policy: which ops run in low precision and which in float32, in one place.

`gt.amp.autocast` switches `state` on; ops consult it through `cast_inputs` at their entry.
The lists follow PyTorch's CUDA lists, and serve every device alike.
"""
import functools

from .. import dtypes
from ..autograd.grad_mode import state as grad_state
from ..tensor import Tensor

# Matrix products: the work that tensor cores speed up.
LOW_PRECISION_OPS = frozenset({
    "matmul", "dot", "outer", "tensordot", "einsum", "linear", "conv1d", "conv2d",
    "scaled_dot_product_attention",
})

# Ops whose accuracy needs float32: reductions, exp/log, softmax, norms, losses.
FLOAT32_OPS = frozenset({
    "sum", "mean", "var", "std", "prod", "logsumexp", "norm", "cumsum",
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "pow", "reciprocal", "rsqrt",
    "softmax", "log_softmax", "softplus", "layer_norm", "batch_norm",
    "mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "cross_entropy", "nll_loss", "kl_div",
})


class _State:
    __slots__ = ("enabled", "dtype", "device_type", "cache")

    def __init__(self):
        self.enabled = False
        self.dtype = None
        self.device_type = None
        self.cache = {}  # id(parameter) -> (parameter, version, cast copy), for one outermost region


state = _State()


def cast_inputs(op, *tensors):
    """The op's tensor inputs in the dtype the autocast policy gives `op` (unchanged when autocast is off)."""
    if not state.enabled:
        return tensors
    if op in LOW_PRECISION_OPS:
        target = state.dtype
    elif op in FLOAT32_OPS:
        target = dtypes.float32
    else:
        return tensors
    return tuple(_cast(t, target) for t in tensors)


def _cast(t, target):
    if not isinstance(t, Tensor) or t.dtype == target or not dtypes.is_floating(t.dtype):
        return t
    if t.device.type != state.device_type:
        return t
    if target == dtypes.float32 and t.dtype == dtypes.float64:
        return t  # float32 ops only widen low-precision inputs
    # a parameter: cast once per region, not per use; a cast made off the tape (no_grad) is not cached,
    # or a later recorded use would get a copy that does not lead back to the parameter
    if t.is_leaf and t.requires_grad and grad_state.grad_enabled:
        hit = state.cache.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == t._version[0]:
            return hit[2]
        cast = t.astype(target)
        state.cache[id(t)] = (t, t._version[0], cast)
        return cast
    return t.astype(target)


def autocast_op(name, keep=()):
    """Decorator for a function in one of the lists: under autocast its tensor arguments arrive cast.

    `keep` names keyword/positional parameters never cast (state updated in place, e.g. running stats).
    """

    def wrap(fn):
        params = fn.__code__.co_varnames[: fn.__code__.co_argcount]

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            if state.enabled:
                args = tuple(a if params[i] in keep else cast_inputs(name, a)[0] for i, a in enumerate(args))
                kwargs = {k: v if k in keep else cast_inputs(name, v)[0] for k, v in kwargs.items()}
            return fn(*args, **kwargs)

        return inner

    return wrap
