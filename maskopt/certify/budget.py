"""Spend a time budget where the certified gap is largest (``maskopt certify --time-budget S``).

Every layer is first certified at the default effort (certify_layer). The layers are then deepened one step at a
time, always the one whose gap max(mask gap, refit gap) is largest: a step continues the layer's shift
optimisation from where it stopped (more rounds, longer relaxations; maskopt.certify.shift.optimise_shift) and
runs the refit relaxation twice as long as last time. Per row every bound ever computed stays valid, so a row
keeps the best. A layer whose step gained less than ``min_gain`` (absolute gap) is not deepened again; a step
is not started when its expected time (the layer's last step) exceeds what is left. Layers are kept on the CPU
in the order of their gap up to ``max_bytes`` (the smallest gaps are dropped first).
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..solve.problem import LayerProblem
from .bounds import LayerCertificate

__all__ = ["GapBudget", "deepen"]


def _priority(cert: LayerCertificate) -> float:
    return max(cert.gap, float(cert.info.get("refit_gap", 0.0) or 0.0))


def _combine(cert: LayerCertificate, problem: LayerProblem, mask_rows: torch.Tensor, refit_rows: torch.Tensor | None,
             info: dict[str, Any], seconds: float) -> LayerCertificate:
    """A certificate with the better bounds (per row) of ``cert`` and the new ones."""
    rowwise = problem.pattern.rowwise
    bounds = mask_rows if refit_rows is None else (torch.maximum(mask_rows, refit_rows) if rowwise
                                                   else torch.maximum(mask_rows.sum(), refit_rows.sum()).reshape(1))
    if rowwise:
        bounds = torch.minimum(torch.maximum(bounds, cert.row_bounds), cert.row_errors)
        lower = float(bounds.sum())
    else:
        lower = min(max(float(bounds.sum()), cert.lower_bound), cert.error)
    gap = max((cert.error - lower) / cert.error, 0.0) if cert.error > 0 else 0.0
    new_info = {**cert.info, **info}
    return LayerCertificate(error=cert.error, lower_bound=lower, gap=gap, method=cert.method,
                            row_errors=cert.row_errors, row_bounds=bounds if rowwise else None, rows_bnb=cert.rows_bnb,
                            rows_optimal=cert.rows_optimal, time=cert.time + seconds, info=new_info, state=cert.state)


@torch.no_grad()
def deepen(problem: LayerProblem, mask: torch.Tensor, cert: LayerCertificate, weight: torch.Tensor | None = None,
           *, level: int = 1, dtype: torch.dtype = torch.float32) -> LayerCertificate:
    """One deeper step on a certificate made by certify_layer (shift "opt"): see the module docstring."""
    from .refit import refit_certificate  # noqa: PLC0415
    from .shift import optimise_shift  # noqa: PLC0415

    if cert.state is None or cert.state.get("shift") is None:
        raise ValueError("deepen needs a certificate of the 'opt' shift (certify_layer keeps its state)")
    t0 = time.perf_counter()
    st = cert.state
    S, assign, Z = st["shift"]
    dev = problem.W.device
    best, S, assign, Z, sinfo = optimise_shift(problem, shifts=S.to(dev), assign=assign.to(dev), z0=Z.to(dev),
                                               best=st["mask_rows"].to(dev), rounds=2 + 2 * level,
                                               round_iterations=100 * (level + 1), iterations=300 * (level + 1),
                                               tol=1e-3 / (level + 1), dtype=dtype)
    mask_rows = torch.maximum(best.cpu().clamp_min(0.0), st["mask_rows"])
    info: dict[str, Any] = {"budget_level": level, "shift_median": sinfo["shift_median"]}
    refit_rows = st.get("refit_rows")
    if refit_rows is not None:
        iters = int(cert.info.get("refit_iterations", 150)) * 2
        rb, rinfo = refit_certificate(problem, mask, weight, (S, assign, Z), iterations=iters, dtype=dtype, tol=1e-4)
        refit_rows = torch.maximum(rb.cpu().clamp_min(0.0), refit_rows)
        shipped = rinfo["shipped_error"]
        lower = min(float(refit_rows.sum()), shipped)
        info.update(refit_iterations=iters, refit_lower_bound=lower,
                    refit_gap=max((shipped - lower) / shipped, 0.0) if shipped > 0 else 0.0)
    new = _combine(cert, problem, mask_rows, refit_rows, info, time.perf_counter() - t0)
    new.state = {"shift": (S.cpu(), assign.cpu(), Z.cpu()), "mask_rows": mask_rows, "refit_rows": refit_rows}
    return new


@dataclass(order=True)
class _Item:
    key: tuple
    name: str = field(compare=False)
    data: dict = field(compare=False)


class GapBudget:
    """Collects certified layers (``offer``) and deepens the worst ones within ``seconds`` (``spend``)."""

    def __init__(self, seconds: float, *, max_bytes: int = 2 << 30, min_gain: float = 0.002,
                 device: torch.device | str | None = None):
        self.seconds = float(seconds)
        self.max_bytes = int(max_bytes)
        self.min_gain = float(min_gain)
        self.device = device
        self._heap: list[_Item] = []
        self._bytes = 0
        self.dropped = 0
        self.log: list[dict[str, Any]] = []

    @staticmethod
    def _size(data: dict) -> int:
        n = 0
        for v in data.values():
            if isinstance(v, torch.Tensor):
                n += v.numel() * v.element_size()
        return n

    def offer(self, name: str, problem: LayerProblem, mask: torch.Tensor, cert: LayerCertificate,
              weight: torch.Tensor | None = None) -> None:
        if self.seconds <= 0 or cert.state is None or cert.state.get("shift") is None or _priority(cert) <= 0:
            return
        cpu = lambda t: None if t is None else t.detach().to("cpu")  # noqa: E731
        data = {"W": cpu(problem.W), "G": cpu(problem.G), "mask": cpu(mask), "weight": cpu(weight),
                "pattern": problem.pattern, "sparsity": problem.sparsity, "cert": cert, "level": 1,
                "last_s": cert.time}
        size = self._size(data) + sum(self._size({"a": t}) for t in cert.state["shift"] if isinstance(t, torch.Tensor))
        data["bytes"] = size
        heapq.heappush(self._heap, _Item((-_priority(cert), name), name, data))
        self._bytes += size
        while self._bytes > self.max_bytes and self._heap:  # drop the smallest gaps first
            worst = max(range(len(self._heap)), key=lambda i: self._heap[i].key)
            item = self._heap.pop(worst)
            heapq.heapify(self._heap)
            self._bytes -= item.data["bytes"]
            self.dropped += 1

    def spend(self) -> dict[str, LayerCertificate]:
        """Deepen the worst layers until the budget is spent; returns {name: improved certificate}."""
        t_start = time.perf_counter()
        out: dict[str, LayerCertificate] = {}
        while self._heap:
            left = self.seconds - (time.perf_counter() - t_start)
            item = heapq.heappop(self._heap)
            d = item.data
            if d["last_s"] * 2.0 > left:  # a deeper step costs about twice the last one
                continue
            dev = self.device or "cpu"
            problem = LayerProblem(d["W"].to(dev), d["G"].to(dev), d["pattern"], d["sparsity"], name=item.name)
            t0 = time.perf_counter()
            old = d["cert"]
            new = deepen(problem, d["mask"].to(dev), old, None if d["weight"] is None else d["weight"].to(dev),
                         level=d["level"])
            spent = time.perf_counter() - t0
            gain = _priority(old) - _priority(new)
            self.log.append({"layer": item.name, "level": d["level"], "seconds": spent, "gap_before": old.gap,
                             "gap_after": new.gap, "refit_gap_before": old.info.get("refit_gap"),
                             "refit_gap_after": new.info.get("refit_gap")})
            out[item.name] = new
            d.update(cert=new, level=d["level"] + 1, last_s=spent)
            if gain >= self.min_gain and _priority(new) > 0:
                heapq.heappush(self._heap, _Item((-_priority(new), item.name), item.name, d))
            else:
                self._bytes -= d["bytes"]
        return out
