"""Which linears a run prunes, and at which sparsity: ``targets`` / ``ignore`` patterns in llm-compressor's style.

A pattern matches a layer when it equals the layer's full name (``model.layers.0.mlp.down_proj``) or its class
name (``Linear``), or, with the ``re:`` prefix, when the regular expression matches from the start of the full
name (``re:.*mlp\\.down_proj$``). A layer is pruned when it matches some target (no targets: every prunable
linear) and no ignore pattern; ``sparsity_overrides`` ({pattern: sparsity}, first match wins) set its sparsity.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn


def check_patterns(patterns: list[str], what: str) -> None:
    """Every ``re:`` pattern must compile (checked before any model is loaded)."""
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{what}: empty or non-text pattern {p!r}")
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise ValueError(f"{what}: {p!r} is not a valid regular expression ({e})") from None


def matches(pattern: str, name: str, module: nn.Module | None = None) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return pattern == name or (module is not None and pattern == type(module).__name__)


@dataclass
class LayerSelection:
    """targets, ignore and per-pattern sparsity overrides (see the module docstring)."""

    targets: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    sparsity_overrides: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_patterns(self.targets, "targets")
        check_patterns(self.ignore, "ignore")
        check_patterns(list(self.sparsity_overrides), "sparsity_overrides")

    @property
    def everything(self) -> bool:
        return not (self.targets or self.ignore or self.sparsity_overrides)

    def chosen(self, name: str, module: nn.Module | None = None) -> bool:
        hit = not self.targets or any(matches(p, name, module) for p in self.targets)
        return hit and not any(matches(p, name, module) for p in self.ignore)

    def sparsity(self, name: str, module: nn.Module | None, default: float) -> float:
        for p, s in self.sparsity_overrides.items():
            if matches(p, name, module):
                return s
        return default

    def check_against(self, named: dict[str, nn.Module]) -> list[str]:
        """The names of ``named`` left dense; refuses a selection that prunes nothing or a pattern that matches
        no layer (a typo would otherwise silently prune everything or nothing)."""
        for what, pats in (("targets", self.targets), ("ignore", self.ignore),
                           ("sparsity_overrides", list(self.sparsity_overrides))):
            for p in pats:
                if not any(matches(p, n, m) for n, m in named.items()):
                    example = next(iter(named), "?")
                    raise ValueError(f"{what} pattern {p!r} matches no prunable linear (names look like {example!r}; "
                                     "use the full name, a class name such as Linear, or re:REGEX)")
        dense = [n for n, m in named.items() if not self.chosen(n, m)]
        if len(dense) == len(named):
            raise ValueError("targets/ignore leave no linear to prune")
        return dense
