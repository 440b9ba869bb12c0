"""OWL allocation: the global sparsity is kept, blocks with more outliers keep more, the run uses it."""
import pytest
import torch
from conftest import tiny_model

import maskopt
from maskopt.solve.allocation import outlier_share, owl_sparsities


def test_owl_sparsities_mean_range_and_order():
    shares = [0.01, 0.05, 0.02, 0.08]
    s = owl_sparsities(shares, 0.7, 0.08)
    assert sum(s) / len(s) == pytest.approx(0.7)
    assert max(s) - min(s) == pytest.approx(0.16)
    assert sorted(range(4), key=lambda i: s[i]) == sorted(range(4), key=lambda i: -shares[i])  # more outliers, less pruning
    assert owl_sparsities([0.03, 0.03], 0.5, 0.08) == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="outside"):
        owl_sparsities(shares, 0.05, 0.4)


def test_outlier_share():
    x = torch.ones(100)
    x[:3] = 100.0  # mean ≈ 3.97: three entries above 5 × mean
    assert outlier_share([x], 5.0) == pytest.approx(0.03)


def test_prune_with_owl_keeps_global_sparsity():
    model = tiny_model("llama")
    model.config.num_hidden_layers  # 2 blocks
    with torch.no_grad():  # block 1 gets strong outlier features
        model.model.layers[1].self_attn.q_proj.weight[:, :3] *= 30
    w = torch.randint(0, 96, (8, 16))
    rep = maskopt.prune(model, w, maskopt.PruneConfig(method="wanda", sparsity=0.6, allocation="owl", owl_lambda=0.1,
                                                      progress=False))
    bs = rep.config["block_sparsity"]
    assert len(bs) == 2 and bs[0] > bs[1] and sum(bs) / 2 == pytest.approx(0.6)
    assert rep.sparsity == pytest.approx(0.6, abs=0.01)
    kept = {r.name.split(".")[2]: r.kept_fraction for r in rep.layers}
    assert kept["1"] > kept["0"]


def test_owl_refuses_nm():
    with pytest.raises(ValueError, match="N:M"):
        maskopt.PruneConfig(pattern="2:4", allocation="owl")
