"""Learning-rate schedules: the original (dense) training schedule and the retraining schedules of IMP.

All schedules map an optimizer step t ∈ {0, …, T−1} to a learning rate.

Original schedule η_orig over T_o steps (``TrainSchedule``): 'step' (η, ×γ at each milestone
fraction), 'linear' (η → final), 'cosine' (η → final), 'constant'; optional linear warm-up.
η_max = its largest value, η_min = its smallest value after warm-up.

Retraining schedules over a budget of T steps (Zimmer, Spiegel, Pokutta, ICLR 2023, and the
schedules they compare; w = ⌊0.1 T⌋ warm-up steps where noted, warm-up η(t) = η₀ (t+1)/(w+1)):
    FT    fine-tuning: η(t) = η_min                                 (Han et al. 2015)
    LRW   learning-rate rewinding: η(t) = η_orig(T_o − T + t)       (Renda et al. 2020)
    SLR   scaled lr restarting: warm-up to η_max, then the original schedule (warm-up part set to
          η_max) compressed to T − w steps: η(w + j) = η_orig'(⌊j T_o / (T − w)⌋)  (Le & Hua 2021)
    CLR   cyclic lr restarting: warm-up to η_max, then cosine η_max → η_min   (Le & Hua 2021)
    LLR   linear lr restarting: warm-up to η_max, then linear η_max → 0
    ALLR  adaptive LLR: as LLR with η₀ = clip(η_max · d / √s, min(T / T_o, 1) · η_max, η_max),
          d = ‖θ − θ_pruned‖₂ / ‖θ‖₂ over the prunable weights, s = fraction of the weights that
          were still nonzero and got pruned in this phase.
Linear decay after warm-up: η(t) = η₀ (1 − (t − w)/(T − w)), so the last step still moves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import BudgetError

RETRAIN_SCHEDULES = ("FT", "LRW", "SLR", "CLR", "LLR", "ALLR")
TRAIN_KINDS = ("step", "linear", "cosine", "constant")
WARMUP_FRACTION = 0.1


def _check_steps(steps: int, what: str) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise BudgetError(f"{what} needs at least one step, got {steps!r}")


@dataclass(frozen=True)
class TrainSchedule:
    """The original training schedule: ``kind`` from peak ``lr`` over ``steps`` (after ``warmup`` steps)."""

    kind: str = "step"
    lr: float = 0.1
    steps: int = 1000
    warmup: int = 0
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the post-warm-up steps ('step')
    gamma: float = 0.1
    final_lr: float = 0.0  # end value of 'linear' and 'cosine'

    def __post_init__(self) -> None:
        if self.kind not in TRAIN_KINDS:
            raise ValueError(f"schedule kind must be one of {TRAIN_KINDS}, got {self.kind!r}")
        _check_steps(self.steps, "the training schedule")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must lie in [0, steps), got {self.warmup}")
        if not 0 <= self.final_lr <= self.lr:
            raise ValueError(f"final_lr must lie in [0, lr], got {self.final_lr}")

    def __call__(self, t: int) -> float:
        t = min(max(int(t), 0), self.steps - 1)
        w = self.warmup
        if t < w:
            return self.lr * (t + 1) / (w + 1)
        u = (t - w) / (self.steps - w)  # ∈ [0, 1)
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** sum(u >= m for m in self.milestones)
        if self.kind == "linear":
            return self.lr + (self.final_lr - self.lr) * u
        return self.final_lr + (self.lr - self.final_lr) * 0.5 * (1 + math.cos(math.pi * u))

    def values(self) -> list[float]:
        return [self(t) for t in range(self.steps)]

    @property
    def max_lr(self) -> float:
        return max(self.values())

    @property
    def min_lr(self) -> float:
        """Smallest value after the warm-up (the lr the dense model ends training with)."""
        return min(self(t) for t in range(self.warmup, self.steps))

    def scaled(self, steps: int) -> "TrainSchedule":
        """The same schedule over another number of steps (warm-up scaled proportionally)."""
        return TrainSchedule(self.kind, self.lr, steps, min(steps - 1, round(self.warmup * steps / self.steps)),
                             self.milestones, self.gamma, self.final_lr)


def allr_initial_lr(original: TrainSchedule, retrain_steps: int, rel_norm_drop: float,
                    phase_sparsity: float) -> float:
    """η₀ of ALLR: clip(η_max · d / √s, min(T / T_o, 1) · η_max, η_max)."""
    if not 0 < phase_sparsity <= 1:
        raise ValueError(f"phase sparsity must lie in (0, 1], got {phase_sparsity}")
    if not (math.isfinite(rel_norm_drop) and rel_norm_drop >= 0):
        raise ValueError(f"relative norm drop must be finite and ≥ 0, got {rel_norm_drop}")
    eta_max = original.max_lr
    lo = min(retrain_steps / original.steps, 1.0) * eta_max
    return min(max(eta_max * rel_norm_drop / math.sqrt(phase_sparsity), lo), eta_max)


@dataclass(frozen=True)
class RetrainSchedule:
    """The lr of retraining schedule ``name`` at step t of a ``steps``-step retraining phase.

    ``allr_lr`` is ALLR's η₀ (see :func:`allr_initial_lr`); required for ALLR only.
    """

    name: str
    steps: int
    original: TrainSchedule = field(default_factory=TrainSchedule)
    allr_lr: float | None = None

    def __post_init__(self) -> None:
        if self.name not in RETRAIN_SCHEDULES:
            raise ValueError(f"retraining schedule must be one of {', '.join(RETRAIN_SCHEDULES)}, got {self.name!r}")
        _check_steps(self.steps, "a retraining phase")
        if self.name == "ALLR" and self.allr_lr is None:
            raise ValueError("ALLR needs its initial lr (allr_initial_lr)")

    @property
    def warmup(self) -> int:
        return 0 if self.name in ("FT", "LRW") else int(WARMUP_FRACTION * self.steps)

    @property
    def peak(self) -> float:
        o = self.original
        return {"FT": o.min_lr, "LRW": o(o.steps - self.steps), "ALLR": self.allr_lr}.get(self.name, o.max_lr)

    def __call__(self, t: int) -> float:
        if not 0 <= t < self.steps:
            raise IndexError(f"step {t} outside the retraining phase of {self.steps} steps")
        o, T, w = self.original, self.steps, self.warmup
        if self.name == "FT":
            return o.min_lr
        if self.name == "LRW":
            return o(max(o.steps - T + t, 0))
        if t < w:
            return self.peak * (t + 1) / (w + 1)
        j = t - w
        if self.name == "SLR":
            idx = math.floor(j * o.steps / (T - w))
            return o.max_lr if idx < o.warmup else o(idx)
        if self.name == "CLR":
            lo = o.min_lr
            return lo + (o.max_lr - lo) * 0.5 * (1 + math.cos(math.pi * j / (T - w)))
        return self.peak * (1 - j / (T - w))  # LLR, ALLR

    def values(self) -> list[float]:
        return [self(t) for t in range(self.steps)]
