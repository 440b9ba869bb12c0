"""Recovery after pruning: layer-wise reconstruction and parameter-efficient retraining (PERP).

The mask never changes: the pruned weights (W == 0 at the start) stay exactly zero.
"""
from .config import GRANULARITIES, PERP_MODES, PERPConfig, ReconstructConfig, RecoveryError
from ..solve.lstsq import layer_lstsq, masked_lstsq
from .lora import MaskLoRA, ScaleLoRA, attach_lora, merge_lora
from .perp import perp_retrain
from .reconstruct import reconstruct

__all__ = ["GRANULARITIES", "PERP_MODES", "PERPConfig", "ReconstructConfig", "RecoveryError",
           "MaskLoRA", "ScaleLoRA", "attach_lora", "merge_lora", "layer_lstsq", "masked_lstsq",
           "perp_retrain", "reconstruct"]
