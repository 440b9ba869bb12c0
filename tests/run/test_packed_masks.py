"""Masks are held bit-packed in every run (streamed or in memory): a mapping whose reads give the bool masks back."""
import pytest
import torch
from conftest import VOCAB, tiny_model

import maskopt
from maskopt.model.adapters import get_adapter
from maskopt.model.streaming import PackedMasks


def _masks(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.rand(5, 13, generator=g) < 0.5, "b": torch.rand(3, 8, generator=g) < 0.3,
            "c": torch.zeros(0, 4, dtype=torch.bool)}


def test_reads_copies_and_updates_give_the_masks_back():
    m = _masks()
    pm = PackedMasks(m)
    assert len(pm) == 3 and set(pm) == set(m) and "a" in pm
    for k, v in dict(pm).items():  # dict(...) of the mapping unpacks (a dict subclass would copy the packed bytes)
        assert v.dtype == torch.bool and torch.equal(v, m[k])
    assert all(torch.equal(v, m[k]) for k, v in pm.items())
    copy = PackedMasks(pm)
    copy["a"] = ~m["a"]
    assert torch.equal(pm["a"], m["a"]) and torch.equal(copy["a"], ~m["a"])  # a copy, not a view
    assert all(p.packed.numel() == (v.numel() + 7) // 8 for (_, p), v in zip(pm.packed_items(), m.values()))
    del copy["b"]
    assert set(copy) == {"a", "c"} and pm.get("zz") is None
    with pytest.raises(TypeError, match="bool"):
        pm["d"] = torch.ones(2, 2)


def test_in_memory_prune_returns_packed_masks_equal_to_the_zeros():
    model = tiny_model("llama")
    w = torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(0))
    report = maskopt.prune(model, w, maskopt.PruneConfig(method="wanda", sparsity=0.5, progress=False, batch_size=4))
    assert isinstance(report.masks, PackedMasks)
    named = get_adapter(model).named_linears(model)
    assert set(report.masks) == set(named)
    for name, mask in report.masks.items():
        assert torch.equal(mask, named[name].weight != 0)
