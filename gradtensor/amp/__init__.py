"""Mixed precision: autocast regions and dynamic loss scaling."""
from .autocast import autocast, is_autocast_enabled
from .grad_scaler import GradScaler

__all__ = ["autocast", "is_autocast_enabled", "GradScaler"]
