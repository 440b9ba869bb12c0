"""dtype end to end: a bfloat16 checkpoint is pruned in bfloat16 (solves in float32/float64 inside a layer) and
saved in bfloat16 at the same size; --save-dtype and --dtype change that; recovery trains in float32."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from conftest import random_text, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    tiny_model("llama").to(torch.bfloat16).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "calib.txt").write_text(random_text(3000))
    return root


def _prune(root, out, *extra):
    from maskopt.cli import app

    return runner.invoke(app, ["prune", str(root / "model"), "--calib", str(root / "calib.txt"), "--nsamples", "8",
                               "--seqlen", "16", "-q", "--no-eval", "--method", "sparsegpt", "--out", str(root / out),
                               *extra])


def _dtypes(path):
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


def test_bf16_checkpoint_is_pruned_and_saved_in_bf16(bf16):
    from maskopt.io import load_masks

    r = _prune(bf16, "a", "--recover", "matrix")
    assert r.exit_code == 0, r.output
    assert _dtypes(bf16 / "a") == {"BF16"}
    size_in = (bf16 / "model" / "model.safetensors").stat().st_size
    assert abs((bf16 / "a" / "model.safetensors").stat().st_size - size_in) < 0.01 * size_in
    report = json.loads((bf16 / "a" / "maskopt_report.json").read_text())
    assert report["inputs"]["dtype"] == "bfloat16" and report["inputs"]["checkpoint_dtype"] == "bfloat16"
    masks = load_masks(bf16 / "a" / "maskopt_masks.safetensors")
    with safe_open(str(bf16 / "a" / "model.safetensors"), framework="pt") as f:
        for name, m in masks.items():
            w = f.get_tensor(name + ".weight")
            assert not (w[~m] != 0).any(), name  # pruned entries are exact zeros in the saved bf16 weights
            assert float(m.float().mean()) == pytest.approx(0.5, abs=0.02)


def test_save_dtype_and_dtype(bf16):
    r = _prune(bf16, "b", "--save-dtype", "float32")
    assert r.exit_code == 0, r.output
    assert _dtypes(bf16 / "b") == {"F32"}
    r = _prune(bf16, "c", "--dtype", "float32")  # run in float32, saved in the checkpoint's bf16
    assert r.exit_code == 0, r.output
    assert _dtypes(bf16 / "c") == {"BF16"}
    assert json.loads((bf16 / "c" / "maskopt_report.json").read_text())["inputs"]["dtype"] == "float32"
    r = _prune(bf16, "d", "--dtype", "int8")
    assert r.exit_code == 2 and "--dtype must be" in r.output and not (bf16 / "d").exists()
