"""Mask-selection methods; see registry.py."""
from .registry import available, get_method, method_options, register

__all__ = ["available", "get_method", "method_options", "register"]
