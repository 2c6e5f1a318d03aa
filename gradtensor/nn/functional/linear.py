"""linear: x @ weight.T + bias."""
import math

from ._util import check_tensor
from ...ops._autocast import autocast_op


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
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(f"linear: bias must have shape ({out_features},), got {bias.shape}")
    # One 2-D matmul (a batched one would build per-batch weight gradients, then sum them), written as
    # (W @ x^T)^T so that backward makes the weight's gradient g^T @ x directly in the weight's own
    # C order (x @ W^T would give it as a transposed view, which slows every optimizer step).
    out = (weight @ input.reshape(math.prod(input.shape[:-1]), in_features).mT).mT
    if bias is not None:
        out = out + bias
    return out.reshape(input.shape[:-1] + (out_features,))
