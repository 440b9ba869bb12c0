"""Recipes: a command-line run written down (--save-recipe) and run again (maskopt run, prune --recipe,
maskopt.oneshot) gives the same bytes; bad recipes are refused before any model is loaded."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import random_text, save_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SMALL = ["--nsamples", "8", "--seqlen", "16", "-q"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A prune with recovery and evaluation, its saved recipe, and its output."""
    from maskopt.cli import app

    root = tmp_path_factory.mktemp("recipe")
    save_tiny("llama", root / "model")
    (root / "calib.txt").write_text(random_text(3000))
    (root / "test.txt").write_text(random_text(2000, seed=1))
    r = runner.invoke(app, ["prune", str(root / "model"), "--calib", str(root / "calib.txt"), *SMALL, "--method",
                            "sparseswaps", "--opt", "warm_start=sparsefw", "--sparsity", "0.6", "--refit",
                            "--ignore", "re:.*layers\\.1\\.mlp\\.down_proj", "--recover", "matrix",
                            "--eval-text", str(root / "test.txt"), "--eval-max-windows", "4",
                            "--out", str(root / "a"), "--save-recipe", str(root / "r.yaml")])
    assert r.exit_code == 0, r.output
    return root


def _same_files(a, b):
    for f in ("model.safetensors", "maskopt_masks.safetensors"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_saved_recipe_runs_again_bit_for_bit(first):
    import yaml

    from maskopt.cli import app

    recipe = yaml.safe_load((first / "r.yaml").read_text())
    assert [next(iter(s)) for s in recipe["stages"]] == ["evaluate", "prune", "matrix", "evaluate", "save"]
    assert recipe["stages"][1]["prune"]["ignore"] == ["re:.*layers\\.1\\.mlp\\.down_proj"]
    report = json.loads((first / "a" / "maskopt_report.json").read_text())
    assert report["inputs"]["recipe"]["stages"] == recipe["stages"]
    r = runner.invoke(app, ["run", str(first / "r.yaml"), "--out", str(first / "b"), "-q"])
    assert r.exit_code == 0, r.output
    _same_files(first / "a", first / "b")
    r = runner.invoke(app, ["prune", "--recipe", str(first / "r.yaml"), "--out", str(first / "c"), "-q"])
    assert r.exit_code == 0, r.output
    _same_files(first / "a", first / "c")


def test_oneshot_gives_the_model_of_the_command_line(first):
    import maskopt
    from maskopt.model.loading import load_model

    model, tok = load_model(first / "model")
    report = maskopt.oneshot(model, tok, recipe=first / "r.yaml", out=first / "d", log=lambda _m: None)
    assert report.dense_layers == ["model.layers.1.mlp.down_proj"]
    _same_files(first / "a", first / "d")
    ref, _ = load_model(first / "a")
    for (k, v), (_, w) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(v, w), k


BAD = [
    ("stages: [{nope: {}}]", "unknown stage 'nope'"),
    ("stages: [{prune: {method: wanda, wat: 1}}]", "prune has no option(s) ['wat']"),
    ("stages: [{prune: {nsamples: 4}}]", "calibration section"),
    ("stages: [{prune: {sparsity: 1.5}}]", "sparsity must be in [0, 1)"),
    ("stages: [{masklora: {lr: abc}}]", "expects a number"),
    ("stages: [{save: {overwrite: true}}]", "save takes no options"),
    ("stages: [prune: [1]]", "options must be a mapping"),
    ("{stages: [", "not valid YAML"),
    ("model: x\nstagez: []", "unknown key(s) ['stagez']"),
    ("calibration: {tokens: 5}\nstages: [prune]", "calibration takes"),
    ("stages: []", "no stages"),
]


@pytest.mark.parametrize("text,says", BAD, ids=[b[1] for b in BAD])
def test_bad_recipes_are_refused_before_loading(text, says, tmp_path, monkeypatch):
    import maskopt.run.job
    from maskopt.cli import app

    monkeypatch.setattr(maskopt.run.job, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    (tmp_path / "r.yaml").write_text(text)
    r = runner.invoke(app, ["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and says in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_recipe_and_stage_flags_do_not_mix(first):
    from maskopt.cli import app

    r = runner.invoke(app, ["prune", "--recipe", str(first / "r.yaml"), "--method", "wanda", "--out",
                            str(first / "e")])
    assert r.exit_code == 2 and "remove --method" in r.output


def test_the_example_recipe_builds():
    from pathlib import Path

    from maskopt.recipe import Recipe

    recipe = Recipe.load(Path(__file__).resolve().parents[2] / "docs" / "recipe.yaml")
    assert [s.name for s in recipe.build()] == ["evaluate", "prune", "masklora", "evaluate", "save"]


@pytest.mark.skipif(not (__import__("conftest").SHARED / "data" / "zeroshot").is_dir(), reason="../shared absent")
def test_zero_shot_in_a_recipe_lands_in_the_report(first, tmp_path):
    """evaluate {tasks: [paper7], task_data_dir, limit}: the seven tasks from a folder of NAME.validation.jsonl,
    acc / acc_norm / stderr per task and their means in the report JSON and Markdown."""
    import yaml

    from conftest import SHARED
    from maskopt.cli import app
    from maskopt.zeroshot import PAPER_TASKS

    data = tmp_path / "zs"
    data.mkdir()
    for t in PAPER_TASKS:  # the first 6 examples of each shared file
        lines = (SHARED / "data" / "zeroshot" / f"{t}.validation.jsonl").read_text().splitlines()[:6]
        (data / f"{t}.validation.jsonl").write_text("\n".join(lines) + "\n")
    recipe = {"calibration": {"texts": [str(first / "calib.txt")], "nsamples": 8, "seqlen": 16},
              "stages": [{"prune": {"method": "wanda"}},
                         {"evaluate": {"tasks": ["paper7"], "task_data_dir": str(data), "limit": 3, "label": "pruned"}},
                         "save"]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = runner.invoke(app, ["run", str(tmp_path / "r.yaml"), "--model", str(first / "model"), "--out",
                            str(tmp_path / "out"), "-q"])
    assert r.exit_code == 0, r.output
    zs = json.loads((tmp_path / "out" / "maskopt_report.json").read_text())["zero_shot"]["pruned"]
    assert sorted(zs["tasks"]) == sorted(PAPER_TASKS) and zs["n_tasks"] == 7 and zs["limit"] == 3
    assert all(0 <= m["acc"] <= 1 and "acc_stderr" in m for m in zs["tasks"].values())
    md = (tmp_path / "out" / "maskopt_report.md").read_text()
    assert "| zero-shot task |" in md and "at most 3 examples" in md
    (data / "rte.validation.jsonl").unlink()  # a missing file is refused before any model is loaded
    r = runner.invoke(app, ["run", str(tmp_path / "r.yaml"), "--model", str(first / "model"), "--out",
                            str(tmp_path / "out2"), "-q"])
    assert r.exit_code == 2 and "rte.validation.jsonl does not exist" in r.output
