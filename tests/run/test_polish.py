"""Polishing a model pruned elsewhere: its zeros are the warm start (warm_start=existing), every row keeps its count
(so the sparsity and the pattern stay), and the layer errors against the dense model only go down."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import random_text, save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SMALL = ["--nsamples", "8", "--seqlen", "16", "-q", "--no-eval"]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    root = tmp_path_factory.mktemp("polish")
    save_tiny("llama", root / "dense")
    (root / "calib.txt").write_text(random_text(3000))
    return root


def _prune(root, *args):
    from maskopt.cli import app

    return runner.invoke(app, ["prune", *args, "--calib", str(root / "calib.txt"), *SMALL])


def _weights(path):
    from maskopt.model.adapters import get_adapter
    from maskopt.model.loading import load_model

    m, _ = load_model(path)
    a = get_adapter(m)
    return {n: a.get_weight(x) for n, x in a.named_linears(m).items()}


@pytest.mark.parametrize("pattern,expect", [("unstructured", None), ("2:4", "2:4")])
def test_polish_keeps_every_row_count_and_lowers_the_error(dense, pattern, expect):
    elsewhere = dense / f"elsewhere-{pattern.replace(':', '')}"
    r = _prune(dense, str(dense / "dense"), "--method", "magnitude", "--pattern", pattern, "--out", str(elsewhere))
    assert r.exit_code == 0, r.output
    (elsewhere / "maskopt_masks.safetensors").unlink()  # as a folder from another tool: zeros only
    (elsewhere / "maskopt_report.json").unlink()
    out = dense / f"polished-{pattern.replace(':', '')}"
    r = _prune(dense, str(elsewhere), "--dense", str(dense / "dense"), "--method", "sparseswaps", "--opt",
               "warm_start=existing", "--out", str(out))
    assert r.exit_code == 0, r.output
    before, after = _weights(elsewhere), _weights(out)
    report = json.loads((out / "maskopt_report.json").read_text())
    for rec in report["layers"]:
        n = rec["name"]
        assert torch.equal((before[n] != 0).sum(1), (after[n] != 0).sum(1)), n  # every row keeps its count
        assert rec["error"] <= rec["info"]["warm_error"] * (1 + 1e-6) + 1e-9, n
        if expect == "2:4":
            assert rec["info"]["existing_pattern"] == "2:4"
            assert ((after[n] != 0).reshape(after[n].shape[0], -1, 4).sum(-1) <= 2).all()
    assert sum(r["info"]["warm_error"] - r["error"] for r in report["layers"]) > 0  # it improved somewhere
    assert report["inputs"]["warm_from"]["path"] == str(elsewhere.resolve())


def test_polish_refusals(dense):
    r = _prune(dense, str(dense / "dense"), "--method", "sparseswaps", "--opt", "warm_start=existing",
               "--dense", str(dense / "dense"), "--out", str(dense / "x"))
    assert r.exit_code == 2 and "has no zeros" in r.output, r.output
    r = _prune(dense, str(dense / "dense"), "--dense", str(dense / "dense"), "--out", str(dense / "x"))
    assert r.exit_code == 2 and "--dense is for polishing" in r.output
    r = _prune(dense, str(dense / "dense"), "--method", "sparseswaps", "--opt", "warm_start=existing",
               "--out", str(dense / "x"))
    assert r.exit_code == 2 and "pass --dense" in r.output
    assert not (dense / "x").exists()


def test_polish_as_a_recipe_repeats_bit_for_bit(dense):
    """--save-recipe of a polishing run names the pruned model as warm_from and its dense model as model;
    `maskopt run` of that file writes the same bytes."""
    from maskopt.cli import app

    elsewhere = dense / "elsewhere-recipe"
    assert _prune(dense, str(dense / "dense"), "--method", "magnitude", "--out", str(elsewhere)).exit_code == 0
    recipe = dense / "polish.yaml"
    r = _prune(dense, str(elsewhere), "--dense", str(dense / "dense"), "--method", "sparseswaps", "--opt",
               "warm_start=existing", "--out", str(dense / "pa"), "--save-recipe", str(recipe))
    assert r.exit_code == 0, r.output
    import yaml

    data = yaml.safe_load(recipe.read_text())
    assert data["warm_from"] == str(elsewhere) and data["model"] == str(dense / "dense")
    r = runner.invoke(app, ["run", str(recipe), "--out", str(dense / "pb"), "-q"])
    assert r.exit_code == 0, r.output
    for name in ("model.safetensors", "maskopt_masks.safetensors"):
        assert (dense / "pa" / name).read_bytes() == (dense / "pb" / name).read_bytes(), name


def test_recipe_warm_from_must_match_a_polishing_prune_stage(dense, tmp_path):
    from maskopt.cli import app

    bad = {"warm_from": ("warm_from: x\nstages:\n  - prune: {method: wanda}\n", "warm_start: existing"),
           "missing": ("stages:\n  - prune: {method: sparseswaps, method_options: {warm_start: existing}}\n",
                       "name the model pruned elsewhere as warm_from")}
    for name, (text, says) in bad.items():
        f = tmp_path / f"{name}.yaml"
        f.write_text(f"model: {dense / 'dense'}\ncalibration: {{texts: [{dense / 'calib.txt'}]}}\n" + text)
        r = runner.invoke(app, ["run", str(f), "-q"])
        assert r.exit_code == 2 and says in r.output, r.output
