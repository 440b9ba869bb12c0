"""Resumable runs: kill a run mid-model, re-run the same command, get bit-identical tensors."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import random_text, tiny_config, tiny_tokenizer
from safetensors.torch import load_file

from maskopt.run.checkpoint import location
from maskopt.testing import KILL_ENV


def _model(tmp_path, blocks=4):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config("llama")
    cfg.num_hidden_layers = blocks
    d = tmp_path / "model"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    text = tmp_path / "calib.txt"
    text.write_text(random_text(3000))
    return d, text


def _run(model, text, out, *extra, kill=None):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    cmd = [sys.executable, "-m", "maskopt.testing", "prune", str(model), "--calib", str(text), "--nsamples", "8",
           "--seqlen", "16", "--out", str(out), "-q", "--no-eval", "--threads", "1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


ARGS = ["--method", "sparseswaps", "--sparsity", "0.6", "--recover", "matrix", "--recover", "block:lr=1e-3"]


@pytest.mark.parametrize("kill,args", [
    ("1:1", ARGS), ("2:2", ARGS),  # mid-pruning (stage 1, after block 1); mid-reconstruction (stage 2)
    ("0:1", ["--method", "sparsegpt", "--sparsity", "0.6", "--match", "dense"]),  # the twin stream is saved too
])
def test_kill_and_resume_is_bit_identical(tmp_path, kill, args):
    model, text = _model(tmp_path)
    ref = _run(model, text, tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out"
    r = _run(model, text, out, *args, kill=kill)
    assert r.returncode == -9, r.stderr  # killed
    assert not out.exists() and (location(out) / "state.json").is_file()
    state = json.loads((location(out) / "state.json").read_text())
    stage, block = map(int, kill.split(":"))
    assert state["stage"] == stage and state["block"] == block + 1
    r = _run(model, text, out, *args)
    assert r.returncode == 0, r.stderr
    assert "resuming from checkpoint" in r.stdout + r.stderr
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = load_file(tmp_path / "ref" / "maskopt_masks.safetensors")
    mb = load_file(out / "maskopt_masks.safetensors")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert not location(out).exists()  # the checkpoint is removed after success
    ra = json.loads((tmp_path / "ref" / "maskopt_report.json").read_text())
    rb = json.loads((out / "maskopt_report.json").read_text())
    assert [x["error"] for x in ra["layers"]] == [x["error"] for x in rb["layers"]]


def test_foreign_checkpoint_is_refused_and_no_resume_starts_over(tmp_path):
    model, text = _model(tmp_path, blocks=3)
    out = tmp_path / "out"
    assert _run(model, text, out, "--method", "wanda", kill="0:0").returncode == -9
    r = _run(model, text, out, "--method", "magnitude")  # other settings: never resumed from
    assert r.returncode == 2 and "different settings" in r.stderr and "--no-resume" in r.stderr
    assert not out.exists()
    r = _run(model, text, out, "--method", "magnitude", "--no-resume")
    assert r.returncode == 0, r.stderr
    assert "resuming" not in r.stdout + r.stderr
    assert json.loads((out / "maskopt_report.json").read_text())["config"]["method"] == "magnitude"
