"""The command line: the happy path and every bad input gets a clear error with nothing written."""
import json

import pytest
import torch
from conftest import random_text, save_tiny
from typer.testing import CliRunner

from maskopt.cli import app

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path):
    return save_tiny("llama", tmp_path / "model")


def _prune(model_dir, out, text_file, *extra):
    return runner.invoke(app, ["prune", str(model_dir), "--calib", str(text_file), "--nsamples", "8", "--seqlen", "16",
                               "--out", str(out), "-q", *extra])


def test_prune_and_eval(model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    r = _prune(model_dir, out, text_file, "--method", "sparsegpt", "--pattern", "2:4", "--eval-text", str(text_file),
               "--eval-max-windows", "4")
    assert r.exit_code == 0, r.output
    assert "perplexity" in r.output and "sparsity 0.5000" in r.output
    rep = json.loads((out / "maskopt_report.json").read_text())
    assert rep["config"]["method"] == "sparsegpt" and rep["layers"]
    assert (out / "maskopt_report.md").read_text().startswith("# maskopt report")
    r = runner.invoke(app, ["eval", str(out), "--text", str(text_file), "--max-windows", "4", "-q", "--json"])
    assert r.exit_code == 0, r.output
    ppl = json.loads(r.stdout)
    assert list(ppl.values())[0] == pytest.approx(rep["perplexity"][next(iter(rep["perplexity"]))]["pruned"], rel=1e-5)


def test_help_explains_options():
    r = runner.invoke(app, ["prune", "--help"])
    assert r.exit_code == 0
    for opt in ("--method", "--sparsity", "--pattern", "--calib", "--out", "--overwrite", "--opt"):
        assert opt in r.output


@pytest.mark.parametrize("args,msg", [
    (["--sparsity", "1.0"], "sparsity"),
    (["--sparsity", "-0.2"], "sparsity"),
    (["--pattern", "4:2"], "N:M"),
    (["--pattern", "sideways"], "pattern"),
    (["--method", "nope"], "unknown method"),
    (["--opt", "nonsense"], "KEY=VALUE"),
])
def test_bad_options(model_dir, text_file, tmp_path, args, msg):
    out = tmp_path / "out"
    r = _prune(model_dir, out, text_file, *args)
    assert r.exit_code == 2 and msg in r.output
    assert not out.exists()


def test_missing_model_path(text_file, tmp_path):
    r = _prune(tmp_path / "does-not-exist", tmp_path / "out", text_file)
    assert r.exit_code == 2 and "does not exist" in r.output


def test_not_a_causal_lm(text_file, tmp_path):
    d = tmp_path / "vit"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "vit"}))
    r = _prune(d, tmp_path / "out", text_file)
    assert r.exit_code == 2 and "not a causal language model" in r.output


def test_unsupported_architecture(text_file, tmp_path):
    from transformers import AutoModelForCausalLM, BloomConfig
    from conftest import tiny_tokenizer

    d = tmp_path / "bloom"
    AutoModelForCausalLM.from_config(BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=96)).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    r = _prune(d, tmp_path / "out", text_file)
    assert r.exit_code == 2 and "unsupported architecture" in r.output and "llama" in r.output


def test_short_and_empty_calibration(model_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text(random_text(20))
    r = _prune(model_dir, tmp_path / "out", short)
    assert r.exit_code == 2 and "tokens" in r.output and "need" in r.output
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = _prune(model_dir, tmp_path / "out", empty)
    assert r.exit_code == 2 and "empty" in r.output
    assert not (tmp_path / "out").exists()


def test_nan_weights(model_dir, text_file, tmp_path):
    from safetensors.torch import load_file, save_file

    f = model_dir / "model.safetensors"
    sd = load_file(f)
    key = next(k for k in sd if "layers.1.self_attn.v_proj.weight" in k)
    sd[key][0, 0] = float("nan")
    save_file(sd, f, metadata={"format": "pt"})
    r = _prune(model_dir, tmp_path / "out", text_file)
    assert r.exit_code == 2 and "layers.1.self_attn.v_proj" in r.output
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = _prune(model_dir, out, text_file)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert (out / "keep.txt").read_text() == "mine"
    r = _prune(model_dir, out, text_file, "--overwrite")  # not a maskopt output: never replaced
    assert r.exit_code == 2 and "not a maskopt output" in r.output
    assert (out / "keep.txt").read_text() == "mine"
    out2 = tmp_path / "out2"
    assert _prune(model_dir, out2, text_file).exit_code == 0
    first = (out2 / "model.safetensors").read_bytes()
    r = _prune(model_dir, out2, text_file, "--overwrite", "--method", "magnitude")  # an earlier maskopt output
    assert r.exit_code == 0, r.output
    assert (out2 / "model.safetensors").read_bytes() != first
    (out2 / "notes.txt").write_text("mine")  # a file the user put into an output: the folder is no longer replaced
    r = _prune(model_dir, out2, text_file, "--overwrite")
    assert r.exit_code == 2 and "notes.txt" in r.output, r.output
    assert (out2 / "notes.txt").read_text() == "mine"


def test_interrupted_save_leaves_nothing(model_dir, text_file, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def boom(self, path, **kw):
        (path / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", boom)
    out = tmp_path / "out"
    r = _prune(model_dir, out, text_file)
    assert r.exit_code != 0
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]  # the run's checkpoint may stay


def test_methods_lists_registry():
    r = runner.invoke(app, ["methods"])
    assert r.exit_code == 0 and "sparsegpt" in r.output and "wanda" in r.output


def test_certify_after_prune(model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    r = _prune(model_dir, out, text_file, "--method", "wanda", "--certify")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "maskopt_report.json").read_text())
    for layer in rep["layers"]:
        c = layer["info"]["certificate"]
        assert c["lower_bound"] <= c["error"] * (1 + 1e-6) + 1e-9
        assert c["error"] == pytest.approx(layer["error"], rel=1e-6)
    cert_json = tmp_path / "cert.json"
    r = runner.invoke(app, ["certify", str(out), "--dense", str(model_dir), "--calib", str(text_file), "--nsamples", "8",
                            "--seqlen", "16", "-q", "--out", str(cert_json)])
    assert r.exit_code == 0, r.output
    rows = json.loads(cert_json.read_text())
    assert len(rows) == len(rep["layers"])
    for a, b in zip(rows, rep["layers"]):
        assert a["name"] == b["name"]
        assert a["error"] == pytest.approx(b["error"], rel=1e-4)  # same mask, same G
        assert 0 <= a["gap"] <= 1


def test_mask_from_pruned_completes_counts():
    from maskopt.solve.warm import mask_from_pruned
    from maskopt.solve.problem import LayerProblem

    W = torch.randn(4, 8, dtype=torch.float64)
    W[0, 1] = 0.0  # a dense zero that the mask keeps
    p = LayerProblem(W, torch.eye(8, dtype=torch.float64), "per_row", 0.5)
    mask = p.topk(W.abs() + (torch.arange(8) == 1).double() * 100)  # keeps index 1 of row 0
    Wp = W * mask
    rec = mask_from_pruned(Wp, W, p)
    assert p.is_feasible(rec) and p.error(rec) == pytest.approx(p.error(mask))


def test_prune_with_recovery_then_recover_again(model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    r = _prune(model_dir, out, text_file, "--method", "wanda", "--reconstruct", "subblock", "--recon-opt", "lr=1e-3",
               "--perp", "masklora", "--perp-opt", "steps=2", "--perp-opt", "r=2")
    assert r.exit_code == 0, r.output
    assert "deprecated; write --recover subblock:lr=1e-3 --recover masklora:steps=2,r=2" in r.output
    rep = json.loads((out / "maskopt_report.json").read_text())
    rec = rep["recovery"]["subblock"]
    assert rec["mse_after"] <= rec["mse_before"]
    assert rep["recovery"]["masklora"]["steps"] == 2
    from safetensors.torch import load_file

    sd = load_file(out / "model.safetensors")
    for k, v in sd.items():
        if "layers" in k and "proj" in k:
            assert ((v == 0).sum(1) >= v.shape[1] // 2).all(), k  # the mask survived recovery
    out2 = tmp_path / "out2"
    r = runner.invoke(app, ["recover", str(out), "--out", str(out2), "--dense", str(model_dir), "--calib", str(text_file),
                            "--nsamples", "8", "--seqlen", "16", "--reconstruct", "matrix", "-q"])
    assert r.exit_code == 0, r.output
    sd2 = load_file(out2 / "model.safetensors")
    for k, v in sd.items():
        assert torch.equal(sd2[k] == 0, v == 0) or "layers" not in k or "proj" not in k, k


def test_recover_bad_input(model_dir, text_file, tmp_path):
    r = runner.invoke(app, ["recover", str(model_dir), "--out", str(tmp_path / "o"), "--calib", str(text_file),
                            "--recover", "matrix", "-q"])
    assert r.exit_code == 2 and "--dense" in r.output  # reconstruction needs the dense model
    r = runner.invoke(app, ["recover", str(model_dir), "--out", str(tmp_path / "o"), "--calib", str(text_file),
                            "--perp", "masklora", "--perp-opt", "lr=0", "-q"])
    assert r.exit_code == 2 and "lr" in r.output
    assert not (tmp_path / "o").exists()
