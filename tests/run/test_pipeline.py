"""End to end on tiny random models of every family: prune, sparsity, save, reload, same logits."""
import pytest
import torch
from conftest import VOCAB, needs_shared, tiny_model, tiny_tokenizer, TINY_LLAMA, SHARED

import maskopt
import maskopt.model.loading
from maskopt.model.adapters import UnsupportedModelError, get_adapter
from maskopt.io import save_model


def _windows(n=8, L=16, seed=0):
    return torch.randint(0, VOCAB, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method,pattern", [("wanda", "per_row"), ("sparsegpt", "2:4"), ("magnitude", "unstructured")])
def test_prune_every_family(family, method, pattern, tmp_path):
    model = tiny_model(family)
    cfg = maskopt.PruneConfig(method=method, sparsity=0.5, pattern=pattern, progress=False, batch_size=4)
    report = maskopt.prune(model, _windows(), cfg)
    adapter = get_adapter(model)
    n_linear = 0
    for block in adapter.get_blocks(model):
        for mod in adapter.linears(block).values():
            W = adapter.get_weight(mod)
            n_linear += 1
            if pattern == "per_row":
                assert ((W != 0).sum(1) <= W.shape[1] // 2).all()
                assert ((W == 0).sum(1) >= W.shape[1] // 2).all()
            elif pattern == "2:4":
                assert ((W != 0).reshape(W.shape[0], -1, 4).sum(-1) <= 2).all()
            else:
                assert int((W == 0).sum()) >= W.numel() // 2
    assert len(report.layers) == n_linear
    assert report.sparsity >= 0.5 - 1e-9
    assert all(r.relative_error >= 0 and r.reference_relative_error is not None for r in report.layers)
    x = _windows(2, 16, seed=1)
    with torch.no_grad():
        before = model(input_ids=x).logits
    save_model(model, tiny_tokenizer(), tmp_path / "out")
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        after = back(input_ids=x).logits
    assert torch.allclose(before, after, atol=1e-5)


def test_reported_error_matches_actual_layer_outputs():
    """The report's error for the first layer equals ‖WX − ŴX‖² on the captured inputs."""
    from maskopt.model.calibrate import capture_block_inputs

    model = tiny_model("llama")
    dense = tiny_model("llama")
    w = _windows()
    adapter = get_adapter(model)
    batches = capture_block_inputs(dense, adapter, w, torch.device("cpu"), 4)
    cfg = maskopt.PruneConfig(method="wanda", sparsity=0.5, progress=False, batch_size=4)
    report = maskopt.prune(model, w, cfg)
    block_d = adapter.get_blocks(dense)[0]
    block_p = adapter.get_blocks(model)[0]
    xs = []
    h = block_d.self_attn.q_proj.register_forward_pre_hook(lambda m, a: xs.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for b in batches:
            block_d(b.hidden, *b.args, **b.kwargs)
    h.remove()
    X = torch.cat(xs).double()
    Wd = block_d.self_attn.q_proj.weight.double()
    Wp = block_p.self_attn.q_proj.weight.double()
    direct = float(((X @ Wd.T - X @ Wp.T) ** 2).sum().detach())
    rec = report.layers[0]
    assert rec.name.endswith("0.self_attn.q_proj")
    assert rec.error == pytest.approx(direct, rel=1e-4)


def test_deterministic_under_seed():
    a, b = tiny_model("llama"), tiny_model("llama")
    cfg = dict(method="sparsegpt", sparsity=0.6, progress=False)
    maskopt.prune(a, _windows(), maskopt.PruneConfig(**cfg))
    maskopt.prune(b, _windows(), maskopt.PruneConfig(**cfg))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_unsupported_architecture_lists_supported():
    from transformers import AutoModelForCausalLM, BloomConfig

    m = AutoModelForCausalLM.from_config(BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="llama"):
        maskopt.prune(m, _windows(), maskopt.PruneConfig(progress=False))


def test_nan_weight_names_layer():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.up_proj"):
        maskopt.prune(model, _windows(), maskopt.PruneConfig(progress=False))


def test_nan_activation_names_layer():
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = float("nan")
    with pytest.raises(ValueError, match=r"layers\.0\.self_attn\.q_proj.*(NaN|Inf)"):
        maskopt.prune(model, _windows(), maskopt.PruneConfig(progress=False))


def test_calibration_text_too_short(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("w1 w2 w3 w4")
    with pytest.raises(ValueError, match="need"):
        maskopt.prune(tiny_model("llama"), str(p), maskopt.PruneConfig(nsamples=4, seqlen=16, progress=False),
                      tokenizer=tiny_tokenizer())
    p.write_text("   \n")
    with pytest.raises(ValueError, match="empty"):
        maskopt.prune(tiny_model("llama"), str(p), maskopt.PruneConfig(progress=False), tokenizer=tiny_tokenizer())


@needs_shared
def test_real_model_end_to_end(tmp_path):
    from maskopt.run.job import JobInputs, run_job
    from maskopt.stages.evaluate import EvaluateOptions, EvaluateStage
    from maskopt.stages.prune import PruneStage
    from maskopt.stages.save import SaveOptions, SaveStage

    cfg = maskopt.PruneConfig(method="wanda", sparsity=0.5, nsamples=8, seqlen=128, progress=False)
    text = SHARED / "data" / "english-heldout" / "test.txt"
    ev = [EvaluateStage(EvaluateOptions([str(text)], label, 128, 4)) for label in ("dense", "pruned")]
    inputs = JobInputs(TINY_LLAMA, [SHARED / "data" / "english-calib" / "calib.txt"], 8, 128, progress=False)
    report = run_job([ev[0], PruneStage(cfg), ev[1], SaveStage(SaveOptions())], inputs, out=tmp_path / "out",
                     log=lambda s: None)
    ppl = report.perplexity["english-heldout/test.txt"]
    assert 20 < ppl["dense"] < ppl["pruned"] < 10 * ppl["dense"]
    assert abs(report.sparsity - 0.5) < 1e-6
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "maskopt_report.json").exists()
    model, tok = maskopt.model.loading.load_model(tmp_path / "out")
    res = maskopt.evaluate(model, tok, [text], seqlen=128, max_windows=4, progress=False)
    assert res["english-heldout/test.txt"] == pytest.approx(ppl["pruned"], rel=1e-5)
