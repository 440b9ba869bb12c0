"""Dataclass configs of the two recovery stages (reconstruction, PERP retraining)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

GRANULARITIES = ("matrix", "subblock", "block", "blocks")  # the built-in ones; see units.UNIT_MAKERS
PERP_MODES = ("norms_biases", "masklora", "scalelora", "full")  # the built-in ones; see lora.KINDS


class RecoveryError(FloatingPointError):
    """The loss became non-finite; the unit (or model) was restored to its state before."""


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass
class ReconstructConfig:
    """Layer-wise reconstruction: fit each unit of the pruned model to the dense model's outputs.

    ``granularity``: 'matrix' (closed-form masked least squares per linear, optional gradient
    steps), 'subblock' (attention and MLP separately; default), 'block', or 'blocks'
    (``n_blocks`` consecutive blocks). Targets are the dense unit's outputs on dense inputs;
    inputs are the pruned model's inputs to the unit (``dense_inputs=True``: the dense ones).
    AdamW with MSE loss; ``batch_size`` sequences per step (capped by the capture batch).
    """

    granularity: str = "subblock"
    n_blocks: int = 2
    lr: float = 1e-4  # tuning text (protocol v2), Wanda 50%, subblock, 1 epoch: 1e-4 → 53.73, 1e-3 → 56.23 (none 59.41)
    epochs: int = 1
    batch_size: int = 8
    weight_decay: float = 0.0
    dense_inputs: bool = False
    train_norms_biases: bool = False
    matrix_lstsq: bool = True  # closed form for 'matrix'; False: gradient steps only
    matrix_grad_steps: int = 0  # AdamW epochs over the cached data after the closed form
    damp: float = 1e-2  # relative ridge of the least squares: λ = damp · mean(diag G)
    revert_if_worse: bool = True  # keep the unit as it was if its MSE went up
    lora: str = "none"  # train sparsity-keeping LoRA factors instead of the weights: 'masklora' | 'scalelora'
    lora_r: int = 8  # LoRA rank inside reconstruction
    lora_alpha: float = 16.0  # LoRA scale α (the product is scaled by α / r)
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad setting (also called by the recovery functions)."""
        from .units import UNIT_MAKERS  # noqa: PLC0415

        if self.granularity not in UNIT_MAKERS:
            raise ValueError(f"granularity must be one of {tuple(UNIT_MAKERS)}, got {self.granularity!r}")
        _positive("lr", self.lr)
        if self.epochs < 0 or self.matrix_grad_steps < 0:
            raise ValueError("epochs and matrix_grad_steps must be ≥ 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.n_blocks < 1:
            raise ValueError(f"n_blocks must be ≥ 1, got {self.n_blocks}")
        from .lora import KINDS as _LORA  # noqa: PLC0415

        if self.lora != "none" and self.lora not in _LORA:
            raise ValueError(f"lora must be 'none' or one of {tuple(_LORA)}, got {self.lora!r}")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be ≥ 1, got {self.lora_r}")
        if self.damp < 0 or self.weight_decay < 0:
            raise ValueError("damp and weight_decay must be ≥ 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# PERP's default learning rates: LM_LR from PERP's ranges (protocol v1); KD_LR (LoRA-type modes) and FULL_KD_LR (mode
# 'full': every kept weight) chosen on the tuning text of protocol v2 (bench/results/recovery_v2.md; where every default
# comes from: bench/results/defaults.md)
LM_LR = 5e-4
KD_LR = 2e-3
FULL_KD_LR = 5e-4


@dataclass
class PERPConfig:
    """Parameter-efficient retraining with the language-modelling loss.

    ``mode``: 'norms_biases' (only biases and normalization parameters), 'masklora'
    (plus W + (α/r)·M⊙(BA)), 'scalelora' (plus W⊙(1 + (α/r)·BA)); LoRA is merged at the end;
    'full' (every kept weight, the mask re-applied after each step: the full-retraining baseline).
    ``steps`` (if set) overrides ``epochs``. Linear warm-up over ``warmup`` of the steps, then
    linear decay to 0. ``loss='kd'`` trains the same parameters to match the dense model's next-token
    distribution instead of the text (no adaptation to the text's own style; needs the dense model).
    """

    mode: str = "masklora"
    r: int = 16
    alpha: float = 32.0
    lr: float | None = None  # None: LM_LR for loss='lm'; for loss='kd' KD_LR, FULL_KD_LR with mode 'full' (tuning text)
    epochs: int = 1
    steps: int | None = None
    batch_size: int = 8
    warmup: float = 0.1
    weight_decay: float = 0.0
    grad_checkpointing: bool = False
    max_grad_norm: float | None = 1.0
    seed: int = 0
    # 'lm': next-token loss on the windows; 'kd': distillation from the dense model, KL(p_dense ‖ p_model) per token
    # at temperature τ (× τ²), optionally mixed with the LM loss: (1 − lm_weight)·KD + lm_weight·LM
    loss: str = "lm"
    lm_weight: float = 0.0
    temperature: float = 1.0
    # 'kd' only: + hidden_weight · (1/L) Σ_blocks mean_t ‖h_model − h_dense‖² / ‖h_dense‖² (each block's output,
    # per token: intermediate-layer distillation)
    hidden_weight: float = 0.0
    micro_batch: int = 0  # sequences per forward/backward, gradients accumulated over the batch (0: the whole batch)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = LM_LR if self.loss != "kd" else FULL_KD_LR if self.mode == "full" else KD_LR
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on a bad setting (also called by the recovery functions)."""
        from .lora import KINDS  # noqa: PLC0415

        if self.mode not in ("norms_biases", "full") and self.mode not in KINDS:
            raise ValueError(f"mode must be one of {('norms_biases', 'full', *KINDS)}, got {self.mode!r}")
        _positive("lr", self.lr)
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be ≥ 1, got {self.r}")
        _positive("alpha", self.alpha)
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be ≥ 1 (or None to use epochs), got {self.steps}")
        if self.steps is None and self.epochs < 1:
            raise ValueError(f"epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.loss not in ("lm", "kd"):
            raise ValueError(f"loss must be 'lm' (next token) or 'kd' (distillation from the dense model), got {self.loss!r}")
        if not 0 <= self.lm_weight <= 1 or (self.lm_weight and self.loss != "kd"):
            raise ValueError(f"lm_weight mixes the LM loss into loss='kd' and lies in [0, 1], got {self.lm_weight!r}")
        _positive("temperature", self.temperature)
        if self.hidden_weight < 0 or (self.hidden_weight and self.loss != "kd"):
            raise ValueError(f"hidden_weight adds block-output distillation to loss='kd' and is ≥ 0, got {self.hidden_weight!r}")
        if self.micro_batch < 0:
            raise ValueError(f"micro_batch must be ≥ 0 (0: the whole batch), got {self.micro_batch}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
