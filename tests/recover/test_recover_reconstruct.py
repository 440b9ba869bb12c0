"""Layer-wise reconstruction: masks kept, unit MSE lowered, closed form wired right, clear errors."""
import copy

import pytest
import torch
from test_recover_common import assert_mask_kept, masks_of, pruned_pair, windows  # noqa: F401

from maskopt.model.adapters import get_adapter
from maskopt.model.calibrate import capture_block_inputs
from maskopt.recover import ReconstructConfig, RecoveryError, reconstruct
from maskopt.solve.lstsq import layer_lstsq

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("granularity", ["matrix", "subblock", "subblock_residual", "block", "blocks"])
def test_llama_every_granularity_keeps_mask_and_lowers_mse(granularity):
    dense, pruned, win = pruned_pair("llama")
    masks = masks_of(pruned)
    before = _state(pruned)
    cfg = ReconstructConfig(granularity=granularity, n_blocks=2, lr=1e-3, epochs=3, batch_size=4,
                            train_norms_biases=True, revert_if_worse=False)
    res = reconstruct(pruned, dense, win, cfg, batch_size=4, progress=False)
    assert_mask_kept(pruned, masks)
    assert not _same(before, _state(pruned))
    units = [u for u in res["units"] if u["mse_before"] > 0]
    assert units
    for u in units:
        assert u["mse_after"] < u["mse_before"], u


@pytest.mark.parametrize("family", ["opt", "gpt2"])
def test_subblock_other_families(family):
    dense, pruned, win = pruned_pair(family)
    masks = masks_of(pruned)
    cfg = ReconstructConfig(granularity="subblock", lr=1e-3, epochs=3, batch_size=4, revert_if_worse=False)
    res = reconstruct(pruned, dense, win, cfg, batch_size=4, progress=False)
    assert_mask_kept(pruned, masks)
    assert [u["unit"] for u in res["units"]] == ["block 0 attn", "block 0 mlp", "block 1 attn", "block 1 mlp"]
    for u in res["units"]:
        assert u["mse_after"] < u["mse_before"], u


def test_reconstructed_model_is_closer_to_dense():
    dense, pruned, win = pruned_pair("llama")
    ref = copy.deepcopy(pruned)
    reconstruct(pruned, dense, win, ReconstructConfig(lr=1e-3, epochs=3, batch_size=4), batch_size=4, progress=False)
    with torch.no_grad():
        target = dense(input_ids=win).logits
        err_before = (ref(input_ids=win).logits - target).pow(2).mean()
        err_after = (pruned(input_ids=win).logits - target).pow(2).mean()
    assert err_after < err_before


def test_matrix_dense_inputs_is_closed_form_of_layer_error():
    """granularity='matrix' with dense inputs = layer_lstsq(W_dense, G_dense, M) for block 0's q_proj."""
    dense, pruned, win = pruned_pair("llama")
    adapter = get_adapter(dense)
    q_dense = adapter.get_blocks(dense)[0].self_attn.q_proj
    q_pruned = adapter.get_blocks(pruned)[0].self_attn.q_proj
    W, M = q_dense.weight.detach().clone(), q_pruned.weight.detach() != 0
    # G of the dense inputs of q_proj: the input layer-norm of the captured block inputs
    block0 = adapter.get_blocks(dense)[0]
    batches = capture_block_inputs(dense, adapter, win, torch.device("cpu"), 4)
    with torch.no_grad():
        X = torch.cat([block0.input_layernorm(b.hidden).reshape(-1, W.shape[1]) for b in batches]).double()
    expected = layer_lstsq(W.double(), X.T @ X, M, damp=0.0)
    cfg = ReconstructConfig(granularity="matrix", dense_inputs=True, damp=0.0)
    res = reconstruct(pruned, dense, win, cfg, batch_size=4, progress=False)
    torch.testing.assert_close(q_pruned.weight.detach().double(), expected, rtol=1e-4, atol=1e-6)
    u = res["units"][0]
    assert u["unit"] == "block 0 self_attn.q_proj" and u["mse_after"] < u["mse_before"]


def test_dense_inputs_option_runs_and_keeps_mask():
    dense, pruned, win = pruned_pair("gpt2")
    masks = masks_of(pruned)
    reconstruct(pruned, dense, win, ReconstructConfig(granularity="block", dense_inputs=True, lr=1e-3, epochs=1),
                batch_size=4, progress=False)
    assert_mask_kept(pruned, masks)


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan")])
def test_bad_lr(lr):
    with pytest.raises(ValueError, match="lr"):
        ReconstructConfig(lr=lr)
    cfg = ReconstructConfig()
    cfg.lr = lr  # changed after construction: reconstruct checks again
    dense, pruned, win = pruned_pair("llama")
    before = _state(pruned)
    with pytest.raises(ValueError, match="lr"):
        reconstruct(pruned, dense, win, cfg, progress=False)
    assert _same(before, _state(pruned))


def test_empty_windows():
    dense, pruned, _ = pruned_pair("llama")
    before = _state(pruned)
    with pytest.raises(ValueError, match="empty"):
        reconstruct(pruned, dense, torch.zeros(0, 16, dtype=torch.long), ReconstructConfig(), progress=False)
    assert _same(before, _state(pruned))


def test_unknown_granularity():
    with pytest.raises(ValueError, match="granularity"):
        ReconstructConfig(granularity="layer")


def test_non_finite_loss_restores_the_unit():
    dense, pruned, win = pruned_pair("llama")
    before = _state(pruned)
    masks = masks_of(pruned)
    cfg = ReconstructConfig(granularity="subblock", lr=1e30, epochs=5, batch_size=2, train_norms_biases=True)
    with pytest.raises(RecoveryError, match="block 0 attn"):
        reconstruct(pruned, dense, win, cfg, batch_size=4, progress=False)
    assert isinstance(RecoveryError("x"), FloatingPointError)
    assert _same(before, _state(pruned))  # the first unit failed: nothing changed
    assert_mask_kept(pruned, masks)


def test_reconstruct_restores_requires_grad_flags():
    dense, pruned, win = pruned_pair("llama")
    flags = [p.requires_grad for p in pruned.parameters()]
    reconstruct(pruned, dense, windows(4, 8), ReconstructConfig(granularity="block", epochs=1), progress=False)
    assert flags == [p.requires_grad for p in pruned.parameters()]


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
def test_residual_targets_are_the_stream_after_each_module(family):
    """Unit 'attn→residual' of the dense model maps block inputs to h + attn(norm(h)); 'mlp→residual' to the
    block output: checked against the dense model's own hidden states."""
    from maskopt.model.adapters import get_adapter
    from maskopt.recover.units import block_inputs, make_units

    dense, _, win = pruned_pair(family)
    adapter = get_adapter(dense)
    batches = capture_block_inputs(dense, adapter, win, torch.device("cpu"), 4)
    blocks = adapter.get_blocks(dense)
    attn_u, mlp_u = make_units(adapter, blocks, [0], "subblock_residual")
    x = block_inputs(batches)[0]
    seen = {}
    h = blocks[0].get_submodule(adapter.attn_out_norm).register_forward_pre_hook(lambda m, a: seen.setdefault("r", a[0]))
    with torch.no_grad():
        out = blocks[0](x.hidden, *x.args, **x.kwargs)
        h.remove()
        torch.testing.assert_close(attn_u.call(x), seen["r"])
        torch.testing.assert_close(mlp_u.call(x), out[0] if isinstance(out, tuple) else out)
    assert set(attn_u.linears) | set(mlp_u.linears) == set(adapter.linear_names())


@pytest.mark.parametrize("lora", ["masklora", "scalelora"])
def test_lora_inside_reconstruction_keeps_mask_and_lowers_mse(lora):
    dense, pruned, win = pruned_pair("llama")
    masks = masks_of(pruned)
    names = sorted(n for n, _ in pruned.named_parameters())
    cfg = ReconstructConfig(granularity="subblock", lora=lora, lora_r=4, lr=1e-2, epochs=4, batch_size=4,
                            revert_if_worse=False)
    res = reconstruct(pruned, dense, win, cfg, batch_size=4, progress=False)
    assert_mask_kept(pruned, masks)
    assert sorted(n for n, _ in pruned.named_parameters()) == names  # merged, no factors left
    for u in res["units"]:
        assert u["mse_after"] < u["mse_before"], u
