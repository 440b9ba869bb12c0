"""Recovery after pruning: layer-wise reconstruction and parameter-efficient retraining (PERP).

The mask never changes: the pruned weights (W == 0 at the start) stay exactly zero.
"""
from .config import GRANULARITIES, PERP_MODES, PERPConfig, ReconstructConfig, RecoveryError
from .lstsq import layer_lstsq, masked_lstsq
from .reconstruct import reconstruct

__all__ = ["GRANULARITIES", "PERP_MODES", "PERPConfig", "ReconstructConfig", "RecoveryError",
           "layer_lstsq", "masked_lstsq", "reconstruct"]
