"""Resampling prunings for a pipeline-level bootstrap: a pipeline pruned n times (other calibration windows) is
judged by the mean over its prunings, and each resample redraws those n prunings with replacement."""
from __future__ import annotations

import torch


def pruning_weights(n_a: int, n_b: int, n_boot: int, gen: torch.Generator,
                    paired: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_boot × n_a, n_boot × n_b) share of each pruning in a resample's mean (each row sums to 1): n draws with
    replacement per side, or one draw for both sides when ``paired`` (A's i-th and B's i-th share their windows)."""
    if n_a < 1 or n_b < 1:
        raise ValueError("each pipeline needs at least one pruning")
    if paired and n_a != n_b:
        raise ValueError(f"paired prunings need as many on each side ({n_a} vs {n_b})")

    def weights(n: int, draws: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_boot, n, dtype=torch.float64).scatter_add_(
            1, draws, torch.full((n_boot, n), 1.0 / n, dtype=torch.float64))

    da = torch.randint(n_a, (n_boot, n_a), generator=gen)
    db = da if paired else torch.randint(n_b, (n_boot, n_b), generator=gen)
    return weights(n_a, da), weights(n_b, db)


def percentiles(x: torch.Tensor, level: float) -> tuple[float, float]:
    """The (1 − level)/2 and (1 + level)/2 quantiles of bootstrap draws ``x``: a percentile interval."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(x, q).tolist()
    return lo, hi
