"""Agreement with SCIP's MIQP (test-only oracle) on per-row instances with d = 30–60."""
from __future__ import annotations

import numpy as np
import pytest

from maskopt.solve.bnb.lmo import MaskLMO
from maskopt.solve.bnb.mask import solve_row

pytest.importorskip("pyscipopt")
from maskopt.testing import scip_row  # noqa: E402


def activation_like(seed: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated inputs with a shared mean direction and uneven scales, like LLM activations."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, 4 * d)) * rng.uniform(0.3, 3.0, (d, 1))
    X += 0.5 * rng.standard_normal((1, 4 * d)) * rng.uniform(0.5, 1.5, (d, 1))
    return rng.standard_normal(d), X @ X.T


@pytest.mark.parametrize(
    "seed,d,pattern",
    [(0, 30, "per_row"), (1, 32, "nm"), (2, 40, "per_row"), (3, 60, "nm")],
)
def test_same_optimum_as_scip(seed: int, d: int, pattern: str) -> None:
    w, G = activation_like(seed, d)
    keep = d // 2 if pattern == "per_row" else 2
    ours = solve_row(w, G, MaskLMO.for_pattern(d, pattern, keep, 4))
    ref = scip_row(w, G, pattern, keep, 4, time_limit=8.0)
    assert ours.status == "optimal"
    assert ours.lower_bound <= ref["value"] * (1 + 1e-6)
    if ref["status"] == "optimal":
        assert ours.error == pytest.approx(ref["value"], rel=1e-5)
        assert ref["bound"] <= ours.error * (1 + 1e-5)
    else:  # SCIP hit its limit: ours is at least as good and within its bound
        assert ours.error <= ref["value"] * (1 + 1e-6)
