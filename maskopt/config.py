"""Dataclass configs of a pruning run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .select import LayerSelection, check_patterns
from .solve.patterns import Pattern, check_sparsity


@dataclass
class PruneConfig:
    """What to prune and how.

    ``pattern``: 'per_row' (equal count per output row; default, as Wanda), 'unstructured'
    (one budget per matrix) or 'N:M' (keep N of every M consecutive inputs; implies its sparsity).
    """

    method: str = "wanda"
    sparsity: float = 0.5
    pattern: str = "per_row"
    method_options: dict[str, Any] = field(default_factory=dict)
    nsamples: int = 128
    seqlen: int | None = None  # default: min(2048, model context)
    seed: int = 0
    batch_size: int = 8
    device: str | None = None  # default: cuda if available, else cpu
    offload: bool = True  # keep blocks on CPU, move one at a time to the device
    reference: str | None = "wanda"  # per-layer reference mask in the report
    certify: bool = False  # certified lower bound per layer (root relaxation)
    certify_shift: str = "opt"  # optimised layer shift (maskopt.certify.shift); 'jacobi' is cheaper and looser
    refit: bool = False  # least-squares update of the kept weights of every layer (closed form from G) after its mask
    # match — 'pruned': reproduce each layer's output on the pruned model's inputs, ‖W X_p − Ŵ X_p‖² (SparseGPT's problem);
    # 'dense': reproduce the dense model's output at the layer from the pruned inputs, ‖W X_d − Ŵ X_p‖² — solved as
    # the usual problem with W' = W C G⁻¹ (C = X_d X_pᵀ), so every method also corrects the upstream error
    match: str = "pruned"
    match_damp: float = 0.01  # match='dense': ridge of G in W' (fraction of mean diag G)
    # α: (1 − α)·(the 'pruned' objective) + α·(the 'dense' one); W' = W + α W (C − G) G⁻¹. Chosen on the tuning
    # text (bench/results/match_dense.md, SparseGPT 50%: α 0 / 0.1 / 0.25 / 0.5 / 1 → 45.40 / 43.48 / 42.13 / 43.71 / 561)
    match_strength: float = 0.25
    match_layers: list[str] = field(default_factory=list)  # match='dense' only for these linears (patterns); [] = all
    allocation: str = "uniform"  # 'uniform', or 'owl' (outlier-weighted per-block sparsity, same global sparsity)
    owl_lambda: float = 0.08  # OWL: block sparsities spread over sparsity ± λ
    owl_m: float = 5.0  # OWL: a score is an outlier above M times the block's mean score
    targets: list[str] = field(default_factory=list)  # linears to prune (names, class names, re:REGEX); [] = all
    ignore: list[str] = field(default_factory=list)  # linears left dense (same patterns)
    sparsity_overrides: dict[str, float] = field(default_factory=dict)  # {pattern: sparsity}, first match wins
    progress: bool = True

    def __post_init__(self) -> None:
        pat = Pattern.parse(self.pattern)  # validates N:M
        self.pattern = str(pat)
        if pat.kind == "nm":
            self.sparsity = 1.0 - pat.n / pat.m
        check_sparsity(self.sparsity)
        if self.nsamples < 1:
            raise ValueError(f"nsamples must be ≥ 1, got {self.nsamples}")
        if self.match not in ("pruned", "dense"):
            raise ValueError(f"match must be 'pruned' or 'dense', got {self.match!r}")
        if not self.match_damp >= 0:
            raise ValueError(f"match_damp must be ≥ 0, got {self.match_damp}")
        if not 0 < self.match_strength <= 1:
            raise ValueError(f"match_strength must be in (0, 1], got {self.match_strength}")
        if self.match_layers and self.match != "dense":
            raise ValueError("match_layers needs match='dense'")
        check_patterns(list(self.match_layers), "match_layers")
        if self.allocation not in ("uniform", "owl"):
            raise ValueError(f"allocation must be 'uniform' or 'owl', got {self.allocation!r}")
        if self.allocation == "owl" and pat.kind == "nm":
            raise ValueError("OWL allocation changes the sparsity per block; N:M patterns fix it (use per_row)")
        if not 0 <= self.owl_lambda < 0.5 or self.owl_m <= 0:
            raise ValueError(f"owl_lambda must be in [0, 0.5) and owl_m > 0, got {self.owl_lambda}, {self.owl_m}")
        if self.seqlen is not None and self.seqlen < 2:
            raise ValueError(f"seqlen must be ≥ 2, got {self.seqlen}")
        self.selection()  # patterns checked now, before any model is loaded
        for p, s in self.sparsity_overrides.items():
            check_sparsity(s)
            if pat.kind == "nm":
                raise ValueError(f"sparsity_overrides ({p!r}): an N:M pattern fixes the sparsity of every layer")

    @property
    def polishes_existing(self) -> bool:
        """The prune starts from zeros that exist already (``warm_start=existing``, or the method 'existing')."""
        return self.method == "existing" or self.method_options.get("warm_start") == "existing"

    def selection(self) -> LayerSelection:
        return LayerSelection(list(self.targets), list(self.ignore), dict(self.sparsity_overrides))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
