"""`maskopt train sfw | imp | soup` smoke runs on tiny data (digits with a small MLP; a tiny random Llama on
random text) and the clear errors of bad input."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from maskopt.cli import app
from maskopt.train import load_last_good

from conftest import random_text, save_tiny

runner = CliRunner()
SMALL = ["--arch", "mlp", "--batch-size", "128"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(args, code=0):
    res = runner.invoke(app, ["train", *args])
    assert res.exit_code == code, res.output
    return res.output


def test_imp_and_bimp_on_digits(tmp_path):
    out = _run(["imp", *SMALL, "--dense-budget", "3ep", "--sparsities", "0.5,0.8", "--retrain", "1ep",
                "--schedule", "ALLR", "-o", str(tmp_path / "imp")])
    assert "phase 2: sparsity 0.8000" in out
    res = json.loads((tmp_path / "imp" / "results.json").read_text())
    assert res["retrain_steps_total"] == 2 * res["retrain_steps_per_phase"] == 2 * 9
    assert res["final_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert (tmp_path / "imp" / "model" / "model.pt").is_file()
    _run(["imp", *SMALL, "--bimp-total", "4ep", "--sparsities", "0.5,0.7", "--retrain", "1ep",
          "-o", str(tmp_path / "bimp")])
    res = json.loads((tmp_path / "bimp" / "results.json").read_text())
    assert res["total_steps"] == res["budget_steps"] == 36 and res["dense_steps"] == 18


def test_sfw_and_soup_on_digits(tmp_path):
    out = _run(["sfw", *SMALL, "--budget", "2ep", "--prune-at", "0.5,0.9", "--k", "0.2", "-o", str(tmp_path / "s")])
    assert "pruned one-shot to 0.90" in out
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [r["sparsity"] for r in res["oneshot"]] == [0.5, 0.9] and res["train"]["steps"] == 18
    out = _run(["soup", *SMALL, "--init", str(tmp_path / "s"), "--sparsities", "0.6", "--retrain", "5", "-m", "2",
                "--soup", "greedy", "--workers", "2", "-o", str(tmp_path / "soup")])
    res = json.loads((tmp_path / "soup" / "results.json").read_text())
    assert res["phases"][0]["steps_total"] == 10 and len(res["phases"][0]["ingredients_test"]) == 2
    assert res["final_sparsity"] == pytest.approx(0.6, abs=1e-3)


@pytest.mark.parametrize("args,msg", [
    (["imp", "--sparsities", "0.7,0.5"], "strictly increasing"),
    (["imp", "--retrain", "0"], "budget"),
    (["imp", "--sparsities", "0.5", "--bimp-total", "1ep", "--retrain", "1ep"], "BIMP"),
    (["soup", "--retrain", "0ep"], "budget"),
    (["soup", "-m", "2", "--weight-decays", "0.1"], "weight decay"),
    (["sfw", "--constraint", "linf"], "constraint"),
    (["imp", "--schedule", "cosine"], "schedule"),
    (["imp", "--workload", "cifar"], "unknown workload"),
    (["imp", "--pruner", "nope"], "unknown method"),
])
def test_bad_input_is_a_clear_error(args, msg):
    out = _run([*args, *SMALL], code=2)
    assert "error:" in out and msg in out


def test_nonfinite_loss_keeps_the_last_good_checkpoint(tmp_path):
    _run(["imp", *SMALL, "--dense-budget", "2ep", "--sparsities", "0.5", "--retrain", "2", "-o", str(tmp_path / "a")])
    out = _run(["imp", *SMALL, "--init", str(tmp_path / "a"), "--lr", "1e30", "--schedule", "LLR",
                "--sparsities", "0.6,0.7", "--retrain", "5", "-o", str(tmp_path / "b")], code=2)
    assert "loss became" in out and "restored" in out
    state, masks, info = load_last_good(tmp_path / "b")
    assert info["label"] == "dense model before IMP"
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "b" / "results.json").exists()


def test_lm_workload_smoke(tmp_path):
    model = save_tiny("llama", tmp_path / "tiny")
    text = tmp_path / "t.txt"
    text.write_text(random_text(4000))
    lm = ["--workload", "lm", "--model", str(model), "--train-text", str(text), "--eval-text", str(text),
          "--seqlen", "32", "--batch-size", "4", "--eval-windows", "2", "--threads", "2"]
    out = _run(["imp", *lm, "--sparsities", "0.5,0.6", "--retrain", "2", "--schedule", "ALLR", "--pruner", "wanda",
                "--pattern", "per_row", "-o", str(tmp_path / "o")])
    assert "phase 2: sparsity" in out
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["final_sparsity"] == pytest.approx(0.6, abs=0.01) and res["retrain_steps_total"] == 4  # per-row rounding
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "o" / "model")
    w = m.model.layers[0].mlp.up_proj.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.02)
    _run(["sfw", *lm, "--budget", "2", "--prune-at", "0.5", "--k", "0.5", "--width", "2"])


def test_nonfinite_sfw_loss_keeps_the_initial_model(tmp_path):
    out = _run(["sfw", *SMALL, "--budget", "3", "--lr", "1e30", "--rescale", "none", "-o", str(tmp_path / "s")], code=2)
    assert "error:" in out and ("lr must lie in [0, 1]" in out)
    out = _run(["imp", *SMALL, "--dense-budget", "5", "--lr", "1e30", "-o", str(tmp_path / "d")], code=2)
    assert "loss became" in out
    state, _, info = load_last_good(tmp_path / "d")
    assert info["label"] == "initial model" and all(torch.isfinite(v).all() for v in state.values())
