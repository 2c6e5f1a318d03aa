"""Neural-network functions with torch.nn.functional's signatures, built on gradtensor ops.

Most functions are compositions of differentiable ops, so every order of derivative comes for
free; a few are dedicated Functions where that is clearly better for stability or speed
(softmax, log_softmax, fused softmax + cross-entropy, GELU, im2col convolution, max pooling).
Their backward passes are written with Tensor ops too, so double backward works through them.
"""
from .activation import elu, gelu, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, softplus, tanh
from .attention import scaled_dot_product_attention
from .conv import conv1d, conv2d
from .dropout import dropout
from .embedding import embedding, one_hot
from .linear import linear
from .loss import (
    binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, huber_loss, kl_div, l1_loss,
    mse_loss, nll_loss,
)
from .normalization import batch_norm, layer_norm
from .pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "relu", "leaky_relu", "elu", "gelu", "silu", "softplus", "sigmoid", "tanh", "softmax", "log_softmax",
    "dropout", "linear", "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "layer_norm", "batch_norm", "embedding", "one_hot", "scaled_dot_product_attention",
    "mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "cross_entropy", "nll_loss", "kl_div",
]
