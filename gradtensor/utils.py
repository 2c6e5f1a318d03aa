"""Small training diagnostics shared by the examples: gradient norms and parameter counts."""
import collections

from . import backend
from .nn.utils import array_norm


def _named_parameters(module_or_named_params):
    """(name, tensor) pairs from a Module, a dict name -> tensor, or an iterable of pairs."""
    if hasattr(module_or_named_params, "named_parameters"):
        return module_or_named_params.named_parameters()
    if isinstance(module_or_named_params, dict):
        return module_or_named_params.items()
    return module_or_named_params


def grad_norms(module_or_named_params, norm_type=2.0):
    """An ordered dict name -> norm of that parameter's gradient, as a Python float.

    Accepts a Module (its named_parameters()), a dict or an iterable of (name, tensor) pairs;
    parameters without a gradient are left out. Use it to watch gradients vanish or explode
    layer by layer.
    """
    norms = collections.OrderedDict()
    for name, param in _named_parameters(module_or_named_params):
        if param.grad is not None:
            norms[name] = float(backend.to_host(array_norm(param.grad.data, float(norm_type))))
    return norms


def count_parameters(module, trainable_only=False):
    """The number of scalar parameters of a module (only those requiring grad, if trainable_only)."""
    return sum(p.size for p in module.parameters() if p.requires_grad or not trainable_only)
