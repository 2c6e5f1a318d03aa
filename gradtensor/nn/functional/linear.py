"""linear: x @ weight.T + bias, one node on the tape."""
import math

from ... import backend
from ...autograd.function import Function
from ._util import check_one_dtype, check_tensor
from ...ops._autocast import autocast_op
from ...ops._util import matmul_of


class _Linear(Function):
    """y = x @ W^T + b for a 2-D x. One node instead of the chain transpose, matmul, add: the layer is
    the hottest op of a training step, so its per-op overhead counts. Backward makes the weight's
    gradient g^T @ x directly in the weight's own C order (a transposed view would slow every
    optimizer step); it is written in Tensor ops, so double backward works."""

    backward_on_arrays = True

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        out = backend.matmul(x.data, weight.data.T)
        if bias is not None:
            out += bias.data
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        return (
            matmul_of(g, weight) if need_x else None,
            matmul_of(g.T, x) if need_weight else None,
            g.sum(axis=0) if need_bias else None,
        )


@autocast_op("linear")
def linear(input, weight, bias=None):
    """y = input @ weight.T + bias over the last axis; weight is (out_features, in_features)."""
    check_tensor(input, "linear")
    check_tensor(weight, "linear", "weight")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    out_features, in_features = weight.shape
    if input.ndim == 0 or input.shape[-1] != in_features:
        raise ValueError(
            f"linear: input of shape {input.shape} does not match weight of shape {weight.shape} "
            f"(expected last dimension {in_features})"
        )
    if bias is not None:
        check_tensor(bias, "linear", "bias")
        if bias.shape != (out_features,):
            raise ValueError(f"linear: bias must have shape ({out_features},), got {bias.shape}")
    check_one_dtype("linear", input, weight, bias)
    # One 2-D product: batch axes fold into the rows (a batched matmul would build per-batch weight
    # gradients, then sum them).
    rows = input.reshape(math.prod(input.shape[:-1]), in_features) if input.ndim != 2 else input
    out = _Linear.apply(rows, weight, bias)
    return out.reshape(input.shape[:-1] + (out_features,)) if input.ndim != 2 else out
