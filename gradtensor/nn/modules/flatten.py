"""Flatten: merge a range of axes into one."""
import math

from ..module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Merges axes start_dim..end_dim (PyTorch's names and defaults: the batch axis is kept)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x):
        ndim = max(x.ndim, 1)
        start, end = self.start_dim % ndim, self.end_dim % ndim
        if not (-ndim <= self.start_dim < ndim and -ndim <= self.end_dim < ndim) or start > end:
            raise ValueError(
                f"Flatten: start_dim {self.start_dim} and end_dim {self.end_dim} do not select a range of the "
                f"axes of an input of shape {x.shape}"
            )
        shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        return x.reshape(shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
