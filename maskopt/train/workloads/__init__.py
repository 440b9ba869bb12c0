"""Training workloads: the digits classifier (the papers' setting) and a causal LM (maskopt's setting)."""
from .base import Workload
from .digits import DigitsWorkload
from .lm import LMWorkload

__all__ = ["DigitsWorkload", "LMWorkload", "Workload"]
