"""Per-layer records and the run report: JSON plus a short Markdown summary."""
from __future__ import annotations

import platform
import resource
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class LayerRecord:
    name: str
    shape: tuple[int, int]
    kept_fraction: float
    error: float
    relative_error: float
    reference_error: float | None = None
    reference_relative_error: float | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PruneReport:
    config: dict[str, Any]
    model: str = ""
    layers: list[LayerRecord] = field(default_factory=list)
    perplexity: dict[str, dict[str, float]] = field(default_factory=dict)  # text → {"dense": .., "pruned": ..}
    sparsity: float = 0.0  # zeros / prunable weights
    wall_seconds: float = 0.0
    prune_seconds: float = 0.0
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)
    output: str | None = None

    # ---- summaries ------------------------------------------------------------------
    def mean_relative_error(self) -> float:
        return statistics.fmean(r.relative_error for r in self.layers) if self.layers else 0.0

    def mean_reference_relative_error(self) -> float | None:
        vals = [r.reference_relative_error for r in self.layers if r.reference_relative_error is not None]
        return statistics.fmean(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {
            "mean_relative_error": self.mean_relative_error(),
            "mean_reference_relative_error": self.mean_reference_relative_error(),
        }
        return d

    def to_markdown(self) -> str:
        c = self.config
        lines = [f"# maskopt report: {self.model}", "",
                 f"method **{c.get('method')}**, pattern {c.get('pattern')}, sparsity {c.get('sparsity'):.3f} "
                 f"(achieved {self.sparsity:.4f} of prunable weights); calibration {c.get('nsamples')} × {c.get('seqlen')} tokens, seed {c.get('seed')}", ""]
        if self.perplexity:
            lines += ["| text | dense ppl | pruned ppl |", "|---|---:|---:|"]
            for text, v in self.perplexity.items():
                lines.append(f"| {text} | {_f(v.get('dense'))} | {_f(v.get('pruned'))} |")
            lines.append("")
        ref = self.mean_reference_relative_error()
        lines.append(f"mean relative layer error {self.mean_relative_error():.4f}"
                     + (f" (Wanda reference {ref:.4f})" if ref is not None else ""))
        lines.append(f"time {self.wall_seconds:.1f} s (pruning {self.prune_seconds:.1f} s); peak memory "
                     + ", ".join(f"{k} {v:.0f} MB" for k, v in self.peak_memory_mb.items()))
        lines += ["", "| layer | shape | kept | rel. error | Wanda rel. error | s |", "|---|---|---:|---:|---:|---:|"]
        for r in self.layers:
            lines.append(f"| {r.name} | {r.shape[0]}×{r.shape[1]} | {r.kept_fraction:.3f} | {r.relative_error:.4f} | "
                         f"{_f(r.reference_relative_error, 4)} | {r.seconds:.2f} |")
        return "\n".join(lines) + "\n"


def _f(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def peak_memory_mb() -> dict[str, float]:
    out = {"cpu_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def versions() -> dict[str, str]:
    import transformers  # noqa: PLC0415

    from ._version import __version__  # noqa: PLC0415

    return {"maskopt": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}
