"""PERP retraining: loss goes down, masks kept, LoRA merged without leftovers, clear errors."""
import pytest
import torch
from test_recover_common import assert_mask_kept, masks_of, pruned_pair, windows  # noqa: F401
from torch import nn

from maskopt.recover import PERPConfig, RecoveryError
from maskopt.recover.lora import MaskLoRA, ScaleLoRA, attach_lora, merge_lora
from maskopt.recover.perp import perp_retrain

pytestmark = pytest.mark.usefixtures("one_thread")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family,mode", [("llama", "norms_biases"), ("llama", "masklora"), ("llama", "scalelora"),
                                         ("gpt2", "masklora"), ("llama", "full"), ("gpt2", "full")])
def test_retraining_lowers_loss_and_keeps_mask(family, mode):
    _, pruned, _ = pruned_pair(family)
    masks = masks_of(pruned)
    names = sorted(n for n, _ in pruned.named_parameters())
    modules = sorted(n for n, _ in pruned.named_modules())
    train = windows(32, 16, seed=1)
    lr = {"norms_biases": 1e-1, "full": 3e-3}.get(mode, 1e-2)
    cfg = PERPConfig(mode=mode, lr=lr, steps=20, batch_size=8, r=4, alpha=8, seed=0)
    res = perp_retrain(pruned, train, cfg, progress=False)
    assert res["loss_last"] < res["loss_first"] - 0.02, res
    assert res["steps"] == 20 and res["tokens"] == 20 * 8 * 16 and res["tokens_per_s"] > 0
    assert_mask_kept(pruned, masks)
    # merged: the same parameters and modules as before, no parametrizations left
    assert sorted(n for n, _ in pruned.named_parameters()) == names
    assert sorted(n for n, _ in pruned.named_modules()) == modules
    with torch.no_grad():  # the full model's loss on the training data went down too
        assert torch.isfinite(pruned(input_ids=train, labels=train).loss)


def test_lora_starts_as_identity_and_merge_keeps_mask():
    torch.manual_seed(0)
    for kind in (MaskLoRA, ScaleLoRA):
        lin = nn.Linear(8, 6)
        with torch.no_grad():
            lin.weight[lin.weight.abs() < 0.15] = 0
        W0, x = lin.weight.detach().clone(), torch.randn(5, 8)
        y0 = lin(x)
        name = "masklora" if kind is MaskLoRA else "scalelora"
        params = attach_lora({"l": lin}, name, r=2, alpha=4)
        torch.testing.assert_close(lin(x), y0)
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        y1 = lin(x)
        assert not torch.allclose(y1, y0)
        merge_lora({"l": lin})
        torch.testing.assert_close(lin(x), y1)
        assert (lin.weight[W0 == 0] == 0).all()
        assert sorted(n for n, _ in lin.named_parameters()) == ["bias", "weight"]


def test_gradient_checkpointing_runs():
    _, pruned, _ = pruned_pair("llama")
    masks = masks_of(pruned)
    res = perp_retrain(pruned, windows(8, 16), PERPConfig(mode="masklora", steps=2, batch_size=4, r=2,
                                                          grad_checkpointing=True), progress=False)
    assert res["steps"] == 2
    flag = "is_activation_checkpointing" if hasattr(type(pruned), "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert not getattr(pruned, flag)
    assert_mask_kept(pruned, masks)


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(lr=-1.0), dict(r=0), dict(mode="everything"), dict(warmup=1.5),
                                 dict(steps=0)])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        PERPConfig(**bad)


def test_empty_text_and_lr_checked_at_call_time():
    _, pruned, _ = pruned_pair("llama")
    before = _state(pruned)
    with pytest.raises(ValueError, match="empty"):
        perp_retrain(pruned, torch.zeros(0, 16, dtype=torch.long), PERPConfig(), progress=False)
    cfg = PERPConfig()
    cfg.lr = 0.0
    with pytest.raises(ValueError, match="lr"):
        perp_retrain(pruned, windows(4, 8), cfg, progress=False)
    assert _same(before, _state(pruned))


@pytest.mark.parametrize("mode", ["norms_biases", "masklora"])
def test_non_finite_loss_restores_model(mode):
    _, pruned, _ = pruned_pair("llama")
    before = _state(pruned)
    names = sorted(n for n, _ in pruned.named_parameters())
    cfg = PERPConfig(mode=mode, lr=1e30, steps=6, batch_size=4, warmup=0.0, max_grad_norm=None)
    with pytest.raises(RecoveryError):
        perp_retrain(pruned, windows(16, 16), cfg, progress=False)
    assert sorted(n for n, _ in pruned.named_parameters()) == names
    assert _same(before, _state(pruned))


def test_scalelora_product_leaves_rank_one():
    """With equal constant factors (the first version) BA stayed rank one; B = 0 with a random A does not."""
    _, pruned, _ = pruned_pair("llama")
    from maskopt.model.adapters import get_adapter

    linears = get_adapter(pruned).named_linears(pruned)
    params = attach_lora(linears, "scalelora", r=4, alpha=4)
    opt = torch.optim.Adam(params, lr=1e-2)
    train = windows(16, 16, seed=2)
    for _ in range(5):
        loss = pruned(input_ids=train, labels=train).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    lora = next(iter(linears.values())).parametrizations.weight[0]
    ranks = torch.linalg.svdvals((lora.B @ lora.A).detach())
    assert (ranks > 1e-4 * ranks[0]).sum() > 1
    merge_lora(linears, keep=False)
