"""SCIP (pyscipopt) as a test-only oracle: MIQP of one mask row, and generic convex MIQPs."""
from __future__ import annotations

import numpy as np


def scip_row(w: np.ndarray, G: np.ndarray, kind: str, keep: int, m: int = 0, time_limit: float = 600.0, threads: int = 1) -> dict:
    """min_m (w⊙(1−m))ᵀ G (w⊙(1−m)) s.t. group counts, m binary; epigraph form t ≥ zᵀQz."""
    from pyscipopt import Model, quicksum

    d = len(w)
    Q = w[:, None] * G * w[None, :]
    model = Model()
    model.hideOutput()
    model.setParam("limits/time", time_limit)
    model.setParam("parallel/maxnthreads", threads)
    model.setParam("limits/gap", 1e-6)
    z = [model.addVar(vtype="B", name=f"z{j}") for j in range(d)]  # z = 1 − m (pruned)
    t = model.addVar(lb=0.0, name="t")
    groups = [range(d)] if kind != "nm" else [range(b, b + m) for b in range(0, d, m)]
    size = d if kind != "nm" else m
    for grp in groups:
        model.addCons(quicksum(z[j] for j in grp) == size - keep)
    quad = quicksum(Q[i, j] * z[i] * z[j] for i in range(d) for j in range(d) if Q[i, j] != 0)
    model.addCons(quad <= t)
    model.setObjective(t, "minimize")
    model.optimize()
    zv = np.array([model.getVal(v) for v in z])
    return {
        "value": float(model.getObjVal()),
        "bound": float(model.getDualbound()),
        "status": model.getStatus(),
        "time": float(model.getSolvingTime()),
        "mask": np.round(1.0 - zv).astype(bool),
    }
