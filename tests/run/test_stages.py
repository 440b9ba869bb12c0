"""Stages: the registry, --recover specs, the report picture, explicit masks through recovery."""
import json

import pytest
import torch
from conftest import save_tiny
from typer.testing import CliRunner

from maskopt.cli import app
from maskopt.io import MASKS_FILE, load_masks, pack_bits, save_masks, unpack_bits
from maskopt.stages import make_stage, parse_spec, stage_names

runner = CliRunner()


def test_recover_registry_and_specs():
    assert {"matrix", "subblock", "block", "blocks", "norms_biases", "masklora", "scalelora"} <= set(stage_names("recover"))
    assert parse_spec("block:lr=1e-3, epochs=2") == ("block", {"lr": "1e-3", "epochs": "2"})
    st = make_stage("block:lr=1e-3,epochs=2", "recover")
    assert st.options.granularity == "block" and st.options.lr == 1e-3 and st.options.epochs == 2
    assert make_stage("masklora:steps=3,r=2", "recover").options.mode == "masklora"


@pytest.mark.parametrize("spec,msg", [("nope", "unknown recover"), ("matrix:granularity=block", "fixes"),
                                      ("matrix:lr=abc", "expects a number"), ("matrix:wat=1", "no option"),
                                      ("block:dense_inputs=maybe", "boolean"), ("masklora:lr=0", "lr"),
                                      ("matrix:lr", "KEY=VALUE")])
def test_bad_recover_specs(spec, msg):
    with pytest.raises(ValueError, match=msg):
        make_stage(spec, "recover")


def test_pack_bits_round_trip():
    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (3, 5), (7, 8), (2, 3, 9)]:
        m = torch.rand(shape, generator=g) > 0.5
        assert torch.equal(unpack_bits(pack_bits(m), shape), m)
        assert pack_bits(m).numel() == -(-m.numel() // 8)


def test_prune_writes_masks_report_and_picture(tmp_path, text_file):
    model = save_tiny("gpt2", tmp_path / "m")  # transposed Conv1D weights: masks in the parameter layout
    out = tmp_path / "out"
    r = runner.invoke(app, ["prune", str(model), "--calib", str(text_file), "--nsamples", "8", "--seqlen", "16",
                            "--out", str(out), "-q", "--method", "sparsegpt", "--certify"])
    assert r.exit_code == 0, r.output
    masks = load_masks(out / MASKS_FILE)
    from safetensors.torch import load_file

    sd = load_file(out / "model.safetensors")
    for name, m in masks.items():
        w = sd[name + ".weight"]
        assert m.shape == w.shape and ((w != 0) <= m).all()  # pruned weights are zero; kept ones may be zero
    png = out / "maskopt_report.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "maskopt_report.md").read_text()
    assert "![per-layer relative error](maskopt_report.png)" in md and "certified LB" in md
    rep = json.loads((out / "maskopt_report.json").read_text())
    assert rep["inputs"]["calibration"][0]["sha256"] and rep["inputs"]["device"] == "cpu"
    assert rep["inputs"]["model"]["path"] == str(model.resolve())


def test_recovery_keeps_explicit_masks_with_kept_zeros(tmp_path, text_file):
    """A kept weight that is exactly zero (common in dequantized GGUF weights) may move in recovery;
    with W != 0 as the mask it would be frozen."""
    model = save_tiny("llama", tmp_path / "m")
    out = tmp_path / "out"
    assert runner.invoke(app, ["prune", str(model), "--calib", str(text_file), "--nsamples", "8", "--seqlen", "16",
                               "--out", str(out), "-q", "--method", "wanda"]).exit_code == 0
    from safetensors.torch import load_file, save_file

    sd = load_file(out / "model.safetensors")
    masks = load_masks(out / MASKS_FILE)
    name = "model.layers.0.mlp.down_proj"
    kept = masks[name].nonzero()[:5]
    sd[name + ".weight"][kept[:, 0], kept[:, 1]] = 0.0  # kept, but zero
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    out2 = tmp_path / "out2"
    r = runner.invoke(app, ["recover", str(out), "--out", str(out2), "--calib", str(text_file), "--nsamples", "8",
                            "--seqlen", "16", "-q", "--recover", "matrix"])
    assert r.exit_code == 0, r.output
    w = load_file(out2 / "model.safetensors")[name + ".weight"]
    assert (w[kept[:, 0], kept[:, 1]] != 0).all()  # the kept zeros were refit
    assert (w[~masks[name]] == 0).all()  # the pruned ones stayed zero
    assert torch.equal(load_masks(out2 / MASKS_FILE)[name], masks[name])
    md = (out2 / "maskopt_report.md").read_text()
    assert "recovery matrix" in md and "prune" in md  # both report files updated, history kept
    assert json.loads((out2 / "maskopt_report.json").read_text())["config"]["method"] == "wanda"


def test_masks_file_rejects_garbage(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable maskopt mask"):
        load_masks(p)
    save_masks({"a": torch.ones(3, 3, dtype=torch.bool)}, p)
    assert load_masks(p)["a"].all()


def test_dense_perplexity_cache(tmp_path, text_file, monkeypatch):
    import maskopt.stages.evaluate as P
    from conftest import tiny_model, tiny_tokenizer
    from maskopt.model.adapters import get_adapter
    from maskopt.report import RunReport
    from maskopt.run.context import RunContext

    monkeypatch.setenv("MASKOPT_CACHE", str(tmp_path / "cache"))
    model = tiny_model("llama")
    ctx = RunContext(model, tiny_tokenizer(), get_adapter(model), torch.device("cpu"), RunReport({}), progress=False,
                     log=lambda m: None)
    stage = P.EvaluateStage(P.EvaluateOptions([str(text_file)], "dense", 16, 4, cache=True))
    stage.run(ctx)
    key = next(iter(ctx.report.perplexity))
    first = ctx.report.perplexity[key]["dense"]
    calls = []
    real = P.evaluate_texts
    monkeypatch.setattr(P, "evaluate_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    stage.run(ctx)
    assert not calls and ctx.report.perplexity[key]["dense"] == first  # from the cache
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(0.5)  # other weights: evaluated again
    stage.run(ctx)
    assert calls and ctx.report.perplexity[key]["dense"] != first


def test_refit_lowers_every_layer_error_and_keeps_masks():
    import maskopt
    from conftest import tiny_model

    w = torch.randint(0, 96, (8, 16))
    a, b = tiny_model("llama"), tiny_model("llama")
    ra = maskopt.prune(a, w, maskopt.PruneConfig(method="wanda", sparsity=0.6, progress=False))
    rb = maskopt.prune(b, w, maskopt.PruneConfig(method="wanda", sparsity=0.6, refit=True, progress=False))
    assert [torch.equal(ra.masks[k], rb.masks[k]) for k in ra.masks][0]  # block 0: same inputs, same mask
    la, lb = ra.layers[0], rb.layers[0]
    assert lb.info["error_before_refit"] == pytest.approx(la.error, rel=1e-6)
    assert lb.error < la.error
    assert all(r.error <= r.info["error_before_refit"] * (1 + 1e-9) for r in rb.layers)
    for name, m in rb.masks.items():
        assert (b.get_submodule(name).weight[~m] == 0).all()


def test_text_files_read_with_universal_newlines(tmp_path):
    from maskopt.data import read_texts

    (tmp_path / "crlf.txt").write_bytes(b"one\r\ntwo\rthree\n")
    assert read_texts(tmp_path / "crlf.txt") == "one\ntwo\nthree\n"
