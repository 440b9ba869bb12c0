"""The run report: per-layer records, perplexities, recovery and certificates; one writer, one reader.

``write_report(report, folder)`` writes ``maskopt_report.json`` (everything), ``maskopt_report.md``
(a summary) and ``maskopt_report.png`` (per-layer relative error of the chosen mask beside the Wanda
reference and the certified lower bound, where computed); ``load_report(folder)`` reads it back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPORT_JSON, REPORT_MD, REPORT_PNG = "maskopt_report.json", "maskopt_report.md", "maskopt_report.png"


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

    @property
    def lower_bound_relative(self) -> float | None:
        """Certified lower bound on the best error of the layer, relative to its dense energy."""
        cert = self.info.get("certificate")
        if not cert or self.relative_error <= 0 or self.error <= 0:
            return None
        return cert["lower_bound"] * self.relative_error / self.error

    @property
    def refit_lower_bound_relative(self) -> float | None:
        """Certified lower bound on the best error any mask of the layer reaches with its kept weights re-solved
        (the bound the shipped weights are compared with), relative to the dense energy."""
        cert = self.info.get("certificate")
        if not cert or cert.get("refit_lower_bound") is None or self.relative_error <= 0 or self.error <= 0:
            return None
        return cert["refit_lower_bound"] * self.relative_error / self.error


def _gaps(cert: dict[str, Any] | None) -> str:
    """'mask gap / shipped gap' of a certificate (– where absent)."""
    if not cert:
        return "–"
    mask = f"{100 * cert['gap']:.1f}%" if cert.get("gap") is not None else "–"
    shipped = f"{100 * cert['refit_gap']:.1f}%" if cert.get("refit_gap") is not None else "–"
    return f"{mask} / {shipped}"


@dataclass
class RunReport:
    config: dict[str, Any]
    model: str = ""
    layers: list[LayerRecord] = field(default_factory=list)
    perplexity: dict[str, dict[str, float]] = field(default_factory=dict)  # text → {label: ppl}
    zero_shot: dict[str, dict[str, Any]] = field(default_factory=dict)  # label → {tasks: {task: metrics}, mean_acc, …}
    sparsity: float = 0.0  # zeros / prunable weights
    wall_seconds: float = 0.0
    prune_seconds: float = 0.0
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)  # stage name → its summary
    certificates: list[dict[str, Any]] = field(default_factory=list)  # from a certify stage
    exports: dict[str, Any] = field(default_factory=dict)  # export folder → what an export stage wrote
    inputs: dict[str, Any] = field(default_factory=dict)  # resolved model / texts with hashes, device
    stages: list[str] = field(default_factory=list)  # the stage list of the run(s), in order
    dense_layers: list[str] = field(default_factory=list)  # prunable linears left dense by targets/ignore
    output: str | None = None
    output_id: str | None = None  # the id in the output folder's marker (maskopt.output)
    # explicit masks by layer name (parameter layout); saved beside the report, not inside it
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # ---- summaries ------------------------------------------------------------------
    def mean_relative_error(self) -> float:
        return statistics.fmean(r.relative_error for r in self.layers) if self.layers else 0.0

    def mean_reference_relative_error(self) -> float | None:
        vals = [r.reference_relative_error for r in self.layers if r.reference_relative_error is not None]
        return statistics.fmean(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "masks"}
        d["layers"] = [asdict(r) for r in self.layers]
        d["summary"] = {
            "mean_relative_error": self.mean_relative_error(),
            "mean_reference_relative_error": self.mean_reference_relative_error(),
        }
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunReport":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["layers"] = [LayerRecord(**{**r, "shape": tuple(r["shape"])}) for r in d.get("layers", [])]
        kw.setdefault("config", {})
        return cls(**kw)

    def to_markdown(self, plot: str | None = None) -> str:
        c = self.config
        lines = [f"# maskopt report: {self.model}", ""]
        if "method" in c:
            lines += [f"method **{c.get('method')}**, pattern {c.get('pattern')}, sparsity {c.get('sparsity'):.3f} "
                      f"(achieved {self.sparsity:.4f} of prunable weights); calibration {c.get('nsamples')} × "
                      f"{c.get('seqlen')} tokens, seed {c.get('seed')}", ""]
        if self.dense_layers:
            shown = ", ".join(self.dense_layers[:8]) + (f" and {len(self.dense_layers) - 8} more" if len(self.dense_layers) > 8 else "")
            lines += [f"left dense (targets/ignore): {len(self.dense_layers)} linears: {shown}", ""]
        if self.stages:
            lines += ["stages: " + " → ".join(self.stages), ""]
        if self.perplexity:
            labels = list(dict.fromkeys(k for v in self.perplexity.values() for k in v))
            lines += ["| text | " + " | ".join(f"{lab} ppl" for lab in labels) + " |",
                      "|---|" + "---:|" * len(labels)]
            for text, v in self.perplexity.items():
                lines.append(f"| {text} | " + " | ".join(_f(v.get(lab)) for lab in labels) + " |")
            lines.append("")
        if self.zero_shot:
            labels = list(self.zero_shot)
            tasks = list(dict.fromkeys(t for v in self.zero_shot.values() for t in v["tasks"]))
            lines += ["| zero-shot task | " + " | ".join(f"{lab} acc / acc_norm" for lab in labels) + " |",
                      "|---|" + "---:|" * len(labels)]
            for t in tasks:
                cells = []
                for lab in labels:
                    m = self.zero_shot[lab]["tasks"].get(t, {})
                    cells.append(f"{_f(m.get('acc'), 4)} ± {_f(m.get('acc_stderr'), 4)} / {_f(m.get('acc_norm'), 4)}"
                                 if m else "–")
                lines.append(f"| {t} | " + " | ".join(cells) + " |")
            lines.append("| mean | " + " | ".join(f"{_f(self.zero_shot[lab]['mean_acc'], 4)} / "
                                                   f"{_f(self.zero_shot[lab]['mean_acc_norm'], 4)}" for lab in labels) + " |")
            limits = {lab: v.get("limit") for lab, v in self.zero_shot.items() if v.get("limit")}
            if limits:
                lines.append("(at most " + ", ".join(f"{n} examples per task for {lab}" for lab, n in limits.items()) + ")")
            lines.append("")
        if self.layers:
            ref = self.mean_reference_relative_error()
            lines.append(f"mean relative layer error {self.mean_relative_error():.4f}"
                         + (f" (Wanda reference {ref:.4f})" if ref is not None else ""))
        lines.append(f"time {self.wall_seconds:.1f} s (pruning {self.prune_seconds:.1f} s); peak memory "
                     + ", ".join(f"{k} {v:.0f} MB" for k, v in self.peak_memory_mb.items()))
        for name, rec in self.recovery.items():
            lines.append(f"recovery {name}: " + ", ".join(f"{k} {_g(v)}" for k, v in rec.items()
                                                           if isinstance(v, (int, float)) and not isinstance(v, bool)))
        if plot:
            lines += ["", f"![per-layer relative error]({plot})"]
        if self.layers:
            certified = any(r.info.get("certificate") for r in self.layers)
            lines += ["", "| layer | shape | kept | rel. error | Wanda rel. error | certified LB (rel.) | s |"
                      + (" refit LB (rel.) | gap mask / shipped |" if certified else ""),
                      "|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if certified else "")]
            for r in self.layers:
                lines.append(f"| {r.name} | {r.shape[0]}×{r.shape[1]} | {r.kept_fraction:.3f} | {r.relative_error:.4f} | "
                             f"{_f(r.reference_relative_error, 4)} | {_f(r.lower_bound_relative, 4)} | {r.seconds:.2f} |"
                             + (f" {_f(r.refit_lower_bound_relative, 4)} | {_gaps(r.info.get('certificate'))} |"
                                if certified else ""))
        if self.certificates:
            rows = self.certificates
            mean = lambda k: sum(c.get(k) or 0.0 for c in rows) / len(rows)  # noqa: E731
            lines += ["", f"certified gaps: mean over {len(rows)} layers {100 * mean('gap'):.1f}% (mask) / "
                      f"{100 * mean('refit_gap'):.1f}% (shipped weights vs the refit bound)", "",
                      "| layer | rel. error of the mask | gap | shipped rel. error | refit LB (rel.) | shipped gap |",
                      "|---|---:|---:|---:|---:|---:|"]
            for c in rows:
                lines.append(f"| {c.get('name')} | {_f(c.get('relative_error'), 4)} | {_f(100 * c['gap'], 1)}% | "
                             f"{_f(c.get('shipped_relative_error'), 4)} | {_f(c.get('refit_lower_bound_relative'), 4)} | "
                             + (f"{100 * c['refit_gap']:.1f}% |" if c.get("refit_gap") is not None else "– |"))
        if self.inputs:
            lines += ["", "## inputs", "", "```", json.dumps(self.inputs, indent=2, default=str), "```"]
        return "\n".join(lines) + "\n"


PruneReport = RunReport  # the name of the first release


def _f(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _g(x: float) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def jsonable(obj: Any) -> Any:
    """Plain JSON values: tensors become numbers/lists, paths and the rest strings."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)


def plot_layers(report: RunReport, path: str | Path) -> bool:
    """Bar chart of the per-layer relative error (chosen mask, Wanda reference, certified lower bound).
    Returns False (and writes nothing) when the report has no layers or matplotlib is missing."""
    if not report.layers:
        return False
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    n = len(report.layers)
    x = list(range(n))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * n + 2), 4.0), dpi=110)
    series = [("chosen mask", [r.relative_error for r in report.layers], "C0")]
    if any(r.reference_relative_error is not None for r in report.layers):
        series.append(("Wanda", [r.reference_relative_error or 0.0 for r in report.layers], "C1"))
    if any(r.lower_bound_relative is not None for r in report.layers):
        series.append(("certified lower bound (mask)", [r.lower_bound_relative or 0.0 for r in report.layers], "C2"))
    if any(r.refit_lower_bound_relative is not None for r in report.layers):
        series.append(("certified lower bound (refit)", [r.refit_lower_bound_relative or 0.0 for r in report.layers], "C3"))
    width = 0.8 / len(series)
    for j, (label, ys, color) in enumerate(series):
        ax.bar([i + (j - (len(series) - 1) / 2) * width for i in x], ys, width, label=label, color=color)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("relative error ‖WX − ŴX‖² / ‖WX‖²")
    ax.set_title(f"{report.config.get('method', '')} {report.config.get('pattern', '')} "
                 f"{report.config.get('sparsity', '')}".strip())
    ticks = x if n <= 28 else x[:: max(1, n // 28)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([_short_layer(report.layers[i].name) for i in ticks], rotation=90, fontsize=6)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _short_layer(name: str) -> str:
    parts = name.split(".")
    idx = next((p for p in parts if p.isdigit()), "")
    return f"{idx}.{parts[-1]}"


def write_report(report: RunReport, folder: str | Path) -> None:
    """maskopt_report.json / .md / .png into ``folder`` (each file replaced atomically)."""
    folder = Path(folder)
    has_plot = plot_layers(report, folder / REPORT_PNG)
    write_json(folder / REPORT_JSON, report.to_dict())
    write_text(folder / REPORT_MD, report.to_markdown(REPORT_PNG if has_plot else None))


def load_report(folder: str | Path) -> RunReport | None:
    """The report of a maskopt output folder, or None when there is none."""
    p = Path(folder) / REPORT_JSON
    if not p.is_file():
        return None
    try:
        return RunReport.from_dict(json.loads(p.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{p} is not a readable maskopt report: {e}") from None


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(jsonable(obj), indent=2))


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
