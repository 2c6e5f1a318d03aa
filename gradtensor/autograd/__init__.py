"""Autograd: the tape's nodes (Function), the backward engine, grad modes and checks."""
from . import functional, graph
from .checkpoint import SegmentPlan, checkpoint, checkpoint_sequential, plan_segments
from .engine import grad
from .function import Function
from .grad_mode import detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck, gradgradcheck

__all__ = [
    "Function", "grad", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "detect_anomaly", "gradcheck", "gradgradcheck", "GradcheckError", "checkpoint", "checkpoint_sequential",
    "plan_segments", "SegmentPlan",
]
