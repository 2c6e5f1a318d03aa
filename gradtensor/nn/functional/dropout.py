"""dropout with the device's seeded generator (gt.manual_seed makes masks reproducible)."""
from ... import backend
from ...tensor import Tensor
from ._util import check_floating, inplace_result


def dropout_mask(shape, p, dtype, device):
    """Keep each element with probability 1 - p, scaled by 1 / (1 - p) so the expectation is unchanged."""
    keep = backend.generator(device).random(shape) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return (keep * scale).astype(dtype)


def dropout(input, p=0.5, training=True, inplace=False):
    check_floating(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    out = input * Tensor(dropout_mask(input.shape, p, input.dtype, input.device))
    return inplace_result(input, out, "dropout") if inplace else out
