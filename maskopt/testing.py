"""Test-only code shipped with the package (never used by a method or a run): reference oracles for small
instances (brute force over every feasible mask, SCIP's MIQP, random problems), the relaxed objective in the form
the autograd tests check, and crash injection for the resume tests (``python -m maskopt.testing prune …`` with
$MASKOPT_KILL_AFTER=STAGE:BLOCK).

``brute_force`` enumerates every mask
of W (rows × d) for per-row / N:M patterns row by row (d ≤ 16) and for 'unstructured' over the whole tiny
matrix; ``brute_force_row`` / ``row_masks`` are the NumPy view of one row; ``scip_row`` solves one row as a
MIQP with SCIP (pyscipopt, a test dependency, imported when called); ``random_problem`` makes W and a
correlated G with outlier features.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .solve.layer_math import grad_from_residual_gram, residual_gram, row_errors
from .solve.patterns import Pattern


def feasible_row_masks(d: int, pattern: Pattern, keep: int) -> torch.Tensor:
    """All 0/1 rows (float64, shape (n, d)) with ``keep`` ones per group (row, or block of M)."""
    if pattern.kind == "nm":
        m = pattern.m
        blocks = list(itertools.combinations(range(m), keep))
        out = []
        for choice in itertools.product(blocks, repeat=d // m):
            v = torch.zeros(d, dtype=torch.float64)
            for b, idx in enumerate(choice):
                v[[b * m + i for i in idx]] = 1.0
            out.append(v)
        return torch.stack(out)
    out = []
    for idx in itertools.combinations(range(d), keep):
        v = torch.zeros(d, dtype=torch.float64)
        v[list(idx)] = 1.0
        out.append(v)
    return torch.stack(out)


def row_values(w: torch.Tensor, G: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """f(v) = (w ⊙ (1 − v))ᵀ G (w ⊙ (1 − v)) for every row v of V."""
    R = w.double()[None, :] * (1.0 - V)
    return ((R @ G.double()) * R).sum(1)


def brute_force(W: torch.Tensor, G: torch.Tensor, pattern: Pattern | str, keep: int) -> tuple[float, torch.Tensor]:
    """(optimal error, an optimal bool mask) over all masks feasible for ``pattern`` with ``keep`` per group."""
    pattern = Pattern.parse(pattern)
    W, G = W.double(), G.double()
    rows, d = W.shape
    if pattern.kind == "unstructured":
        n = rows * d
        best, arg = float("inf"), None
        for idx in itertools.combinations(range(n), keep):
            v = torch.zeros(n, dtype=torch.float64)
            v[list(idx)] = 1.0
            M = v.reshape(rows, d)
            R = W * (1 - M)
            val = float(((R @ G) * R).sum())
            if val < best:
                best, arg = val, M
        return best, arg.bool()
    V = feasible_row_masks(d, pattern, keep)
    total, mask = 0.0, torch.zeros(rows, d, dtype=torch.bool)
    for i in range(rows):
        vals = row_values(W[i], G, V)
        k = int(torch.argmin(vals))
        total += float(vals[k])
        mask[i] = V[k].bool()
    return total, mask


def random_problem(rows: int, d: int, seed: int, tokens: int | None = None, dtype=torch.float64):
    """W ~ N(0,1) with a few heavy columns, G = X Xᵀ from correlated inputs with outlier features."""
    g = torch.Generator().manual_seed(seed)
    tokens = tokens or 2 * d
    W = torch.randn(rows, d, generator=g, dtype=torch.float64)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 + torch.eye(d, dtype=torch.float64)
    X = A @ torch.randn(d, tokens, generator=g, dtype=torch.float64)
    scale = torch.ones(d, dtype=torch.float64)
    scale[torch.randint(0, d, (max(1, d // 8),), generator=g)] = 5.0
    X = X * scale[:, None]
    return W.to(dtype), (X @ X.T).to(dtype)


def row_masks(d: int, kind: str, keep: int, m: int = 0) -> np.ndarray:
    """Every 0/1 mask of length d with ``keep`` ones per group (whole row, or blocks of m), as a NumPy array."""
    return feasible_row_masks(d, Pattern("nm", keep, m) if kind == "nm" else Pattern("per_row"), keep).numpy()


def brute_force_row(w: np.ndarray, G: np.ndarray, kind: str, keep: int, m: int = 0) -> tuple[float, np.ndarray]:
    """(min f, argmin) of f(v) = (w⊙(1−v))ᵀG(w⊙(1−v)) over every feasible mask v of one row."""
    V = torch.as_tensor(row_masks(len(w), kind, keep, m))
    vals = row_values(torch.as_tensor(w), torch.as_tensor(G), V)
    k = int(torch.argmin(vals))
    return float(vals[k]), V[k].numpy()



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


# ---- relaxed objective in the form the tests check autograd against ---------------------------------------
def quad_rows(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Relaxed per-row objective L_i(m) = (w_i ⊙ (1 − m_i))ᵀ G (w_i ⊙ (1 − m_i)), shape (rows,)."""
    return row_errors(W, G, m)


def quad_grad(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor, WG: torch.Tensor | None = None) -> torch.Tensor:
    """∇_m L = −2 · W ⊙ (W G − (W ⊙ m) G), shape (rows, d); pass WG = W @ G to save a matmul."""
    return grad_from_residual_gram(W, residual_gram(W, G, m, WG))


# ---- crash injection ------------------------------------------------------------------------------------------
KILL_ENV = "MASKOPT_KILL_AFTER"  # "STAGE:BLOCK": SIGKILL right after that block's checkpoint (0-based)


def install_kill_hook(spec: str | None = None) -> None:
    """Kill this process (SIGKILL, as a crash) right after the checkpoint of block BLOCK of stage STAGE."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from .run.checkpoint import AFTER_BLOCK  # noqa: PLC0415

    spec = spec if spec is not None else os.environ.get(KILL_ENV)
    if spec:
        AFTER_BLOCK.append(lambda stage, block: spec == f"{stage}:{block}" and os.kill(os.getpid(), signal.SIGKILL))


if __name__ == "__main__":  # python -m maskopt.testing ARGS: the command line, with $MASKOPT_KILL_AFTER honoured
    from .cli import app

    install_kill_hook()
    app()
