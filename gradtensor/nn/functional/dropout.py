"""dropout with the device's seeded random state (gt.manual_seed makes masks reproducible).

On the GPU (see gradtensor.fused.available_for) the mask comes from the fused kernel's counter-based
Philox stream, keyed by the device's seed and an offset that each call advances
(backend.philox_advance); the offset is part of the device's RNG state, so a checkpointed region
replays the same mask. The kernel keeps a one-byte mask for backward. Elsewhere the mask is drawn
from the device's generator and applied with a product.
"""
from ... import backend, fused
from ...autograd.function import Function
from ...autograd.grad_mode import state
from ...fused_reference import dropout_scale
from ...tensor import Tensor
from ...ops.inplace import in_place
from ._util import check_floating


def dropout_mask(shape, p, dtype, device):
    """Keep each element with probability 1 - p, scaled by 1 / (1 - p) so the expectation is unchanged."""
    keep = backend.generator(device).random(shape) >= p
    return (keep * dropout_scale(p)).astype(dtype)


class _DropoutKernel(Function):
    """Dropout by the fused kernel: elements of x kept where the Philox stream (seed, offset) says so."""

    @staticmethod
    def forward(ctx, x, p, seed, offset):
        ctx.p = p
        y, ctx.mask = fused.dropout_forward(x.data, p, seed, offset)
        return y

    @staticmethod
    def backward(ctx, g):
        if state.grad_enabled:  # create_graph: the gradient is g times a constant, as a Tensor op
            return g * Tensor((ctx.mask * dropout_scale(ctx.p)).astype(g.dtype))
        return Tensor(fused.dropout_backward(g.data, ctx.mask, ctx.p))


def dropout(input, p=0.5, training=True, inplace=False):
    check_floating(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability p must be in [0, 1], got {p}")
    if not training or p == 0:
        return input

    def drop(x):
        if fused.available_for(x.data):
            seed, offset = backend.philox_advance(x.device, x.size)
            return _DropoutKernel.apply(x, p, seed, offset)
        return x * Tensor(dropout_mask(x.shape, p, x.dtype, x.device))

    return in_place(drop, input, "dropout(inplace=True)") if inplace else drop(input)
