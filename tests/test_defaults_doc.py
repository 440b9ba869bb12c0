"""bench/results/defaults.md names every default of the configs that changes a pruned or recovered model, with the
value the code has (issue 20: every default justified by a measurement or a stated convention)."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from maskopt.config import PruneConfig
from maskopt.options import defaults
from maskopt.recover.config import PERPConfig, ReconstructConfig
from maskopt.solve.methods.registry import available, method_options

DOC = Path(__file__).resolve().parents[1] / "bench" / "results" / "defaults.md"
CONFIGS = {c.__name__: c for c in (PruneConfig, PERPConfig, ReconstructConfig)}
# fields that do not change the model a run produces, or that state the user's problem rather than choose how to solve it
NOT_CHOICES = {
    "PruneConfig": {"sparsity", "method_options", "seed", "batch_size", "device", "offload", "reference", "certify",
                    "certify_shift", "targets", "ignore", "sparsity_overrides", "progress"},
    "PERPConfig": {"steps", "seed", "grad_checkpointing", "micro_batch"},
    "ReconstructConfig": {"seed"},
}
# method options that only set precision, memory or which rows run, or that pass options on to another method
NOT_METHOD_CHOICES = {"dtype", "mem_cap_mb", "batch_rows", "warm_options", "rows", "max_d"}
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def documented(text: str) -> dict[tuple[str, str], list[str]]:
    """(config, field) → the value cells of the table rows whose first cell names it.

    A first cell names fields as `Config.field`, or a method as `name` then its options as `option`; a bare `name`
    after either is another field of the same config or method."""
    out: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("|"):
            continue
        config = None
        fields = []
        for tok in re.findall(r"`([^`]+)`", cells[0]):
            head, dot, tail = tok.partition(".")
            if dot and head in CONFIGS:
                config = head
                fields.append((config, tail))
            elif config is None and tok in available():
                config = tok
            elif config is not None and IDENT.match(tok):
                fields.append((config, tok))
        for key in fields:
            out.setdefault(key, []).append(cells[1] if len(fields) == 1 else "")
    return out


def stated_value(cell: str):
    """The value a row states: its text before any parenthesis, backticks removed, as a literal where it is one."""
    text = cell.split(" (")[0].replace("`", "").strip()
    if text == "[]":
        return []
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def test_the_parser_reads_a_row_naming_two_fields_of_one_config():
    rows = documented("| `PERPConfig.r`, `alpha` | 16, 32 | convention | – |\n| x | y | z |")
    assert set(rows) == {("PERPConfig", "r"), ("PERPConfig", "alpha")}


OWNERS = sorted(CONFIGS) + available()


def choices(owner: str) -> dict[str, Any]:
    """The defaults of a config or a registered method that change a model, by field or option name."""
    if owner in CONFIGS:
        return {k: v for k, v in defaults(CONFIGS[owner]).items() if k not in NOT_CHOICES[owner]}
    return {k: v for k, v in method_options(owner).items() if k not in NOT_METHOD_CHOICES}


@pytest.mark.parametrize("owner", OWNERS)
def test_every_choice_of_a_config_or_method_has_a_row(owner):
    rows = documented(DOC.read_text())
    missing = [k for k in choices(owner) if (owner, k) not in rows]
    assert not missing, f"{owner} defaults without a row in {DOC.name}: {missing}"


@pytest.mark.parametrize("owner", OWNERS)
def test_a_row_naming_one_choice_states_the_value_the_code_has(owner):
    rows = documented(DOC.read_text())
    checked = 0
    for k, value in choices(owner).items():
        for cell in rows.get((owner, k), []):
            if not cell or value is None:
                continue  # a row over several fields, or a default that depends on another field (PERPConfig.lr)
            stated = stated_value(cell)
            assert stated == value or str(stated) == str(value), (owner, k, cell, value)
            checked += 1
    assert checked > 0 or owner not in CONFIGS
