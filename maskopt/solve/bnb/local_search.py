"""1-swap local search for one row of a mask problem (seeds incumbents): the layer search of
maskopt.solve.swaps run on this one row, exhaustively and without a tolerance (best-improvement 1-swaps until
no swap lowers f beyond rounding noise)."""
from __future__ import annotations

import numpy as np
import torch

from ..swaps import swap_refine


def swap_descent(m: np.ndarray, w: np.ndarray, G: np.ndarray, lmo) -> np.ndarray:
    """Best-improvement 1-swaps inside the groups of ``lmo`` (its ``pattern`` and ``keep``); the new 0/1 mask."""
    if getattr(lmo, "pattern", None) is None:
        raise ValueError("swap_descent needs an oracle built with MaskLMO.for_pattern (it names the pattern)")
    res = swap_refine(torch.from_numpy(np.asarray(w, dtype=np.float64))[None],
                      torch.from_numpy(np.asarray(G, dtype=np.float64)),
                      torch.from_numpy(np.asarray(m) > 0.5)[None], lmo.pattern, lmo.keep,
                      search="exhaustive", swaps_per_iter=1, tol=0.0, mem_cap_bytes=64e6)
    return res.mask[0].numpy().astype(np.float64)
