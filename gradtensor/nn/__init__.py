"""Neural-network building blocks: Module, Parameter, layers, losses, init and gradient utilities."""
from . import functional, init, utils
from .module import Module, Parameter
from .modules import *  # noqa: F401,F403
