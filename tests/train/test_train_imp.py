"""IMP and BIMP on the digits workload: exact budget accounting, masks that only shrink, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import nan_after_digits

from maskopt.train import (BudgetError, DigitsWorkload, IMPConfig, LastGood, NonFiniteLossError, Pruner,
                           SparsityScheduleError, TrainSchedule, bimp_split, load_last_good, run_bimp, run_imp,
                           sparsity_of, train_dense)
from maskopt.train.masking import current_masks


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    wl = DigitsWorkload(hidden=(64, 32), epochs=10)
    model = wl.build_model(0)
    train_dense(model, wl, wl.default_schedule())
    return wl, model


def test_imp_budget_sparsity_and_masks(trained):
    wl, dense = trained
    model = copy.deepcopy(dense)
    spe = wl.steps_per_epoch()
    res = run_imp(model, wl, IMPConfig([0.5, 0.8, 0.9], retrain="2ep", schedule="ALLR"))
    assert [r["steps"] for r in res["phases"]] == [2 * spe] * 3
    assert res["retrain_steps_total"] == 6 * spe
    assert [r["measured_sparsity"] for r in res["phases"]] == pytest.approx([0.5, 0.8, 0.9], abs=1e-4)
    assert sparsity_of(current_masks(wl.prunable(model))) == pytest.approx(0.9, abs=1e-4)
    last = res["phases"][-1]
    assert last["accuracy"] > last["accuracy_pruned"]  # retraining recovers
    assert 0 < last["lr_peak"] <= wl.default_schedule().max_lr


def test_masks_only_shrink_and_steps_count(trained):
    wl, dense = trained
    model = copy.deepcopy(dense)
    run_imp(model, wl, IMPConfig([0.6], retrain=5, schedule="FT"))
    m1 = current_masks(wl.prunable(model))
    res = run_imp(model, wl, IMPConfig([0.75], retrain=7, schedule="CLR", pruner=Pruner(scope="layer")))
    m2 = current_masks(wl.prunable(model))
    assert all(bool((m2[n] <= m1[n]).all()) for n in m1)
    assert res["retrain_steps_total"] == 7
    for w in wl.prunable(model).values():  # per-layer scope: every layer at 75%
        assert float((w == 0).float().mean()) == pytest.approx(0.75, abs=1e-2)


def test_registered_method_as_pruning_step(trained):
    wl, dense = trained
    model = copy.deepcopy(dense)
    res = run_imp(model, wl, IMPConfig([0.5], retrain=3, schedule="LLR",
                                       pruner=Pruner("wanda", pattern="per_row")))
    for w in wl.prunable(model).values():
        assert ((w == 0).sum(1) == w.shape[1] // 2).all()
    assert res["phases"][0]["measured_sparsity"] == pytest.approx(0.5, abs=1e-3)
    run_imp(model, wl, IMPConfig([0.75], retrain=2, pruner=Pruner("magnitude", pattern="2:8")))
    for w in wl.prunable(model).values():  # N:M magnitude: 2 kept in every block of 8 inputs
        assert bool(((w != 0).reshape(w.shape[0], -1, 8).sum(-1) <= 2).all())


def test_bimp_uses_exactly_the_total_budget():
    wl = DigitsWorkload(hidden=(32,), epochs=5)
    spe = wl.steps_per_epoch()
    cfg = IMPConfig([0.5, 0.7], retrain="1ep", schedule="ALLR")
    assert bimp_split(wl, "6ep", cfg) == (4 * spe, spe)
    model, res = run_bimp(wl, cfg, "6ep")
    assert res["dense_steps"] + res["retrain_steps_total"] == res["total_steps"] == 6 * spe
    assert sparsity_of(current_masks(wl.prunable(model))) == pytest.approx(0.7, abs=1e-3)
    with pytest.raises(BudgetError, match="dense training"):
        bimp_split(wl, "2ep", cfg)


def test_bad_input():
    for bad in ([0.5, 0.5], [0.7, 0.5], [0.0, 0.5], [1.0], []):
        with pytest.raises(SparsityScheduleError):
            IMPConfig(bad, retrain=10)
    for bad in (0, "0ep", -5):
        with pytest.raises(BudgetError):
            IMPConfig([0.5], retrain=bad)
    with pytest.raises(ValueError, match="schedule"):
        IMPConfig([0.5], retrain=10, schedule="cosine")
    with pytest.raises(ValueError, match="unknown method"):
        Pruner("nope")




def test_nonfinite_loss_keeps_last_good_checkpoint(tmp_path):
    wl = nan_after_digits(after=10**9, hidden=(32,), epochs=3)
    model = wl.build_model(0)
    train_dense(model, wl, wl.default_schedule())
    guard = LastGood(tmp_path)
    wl.after = wl.calls + 12  # phase 1 (10 steps) finishes, phase 2 fails at its 3rd step
    with pytest.raises(NonFiniteLossError, match="phase 2.*restored") as err:
        run_imp(model, wl, IMPConfig([0.5, 0.8], retrain=10, schedule="LLR"), guard=guard)
    assert err.value.step == 2
    state, masks, info = load_last_good(tmp_path)
    assert info["label"].startswith("IMP phase 1")
    for k, v in model.state_dict().items():  # the model is back at the end of phase 1
        assert torch.equal(v, state[k])
    assert sparsity_of(masks) == pytest.approx(0.5, abs=1e-3)
    assert sparsity_of(current_masks(wl.prunable(model))) == pytest.approx(0.5, abs=1e-3)


def test_lrw_needs_no_more_than_the_original(trained):
    wl, dense = trained
    model = copy.deepcopy(dense)
    orig = TrainSchedule("step", 0.1, 40)
    res = run_imp(model, wl, IMPConfig([0.5], retrain=10, schedule="LRW"), orig)
    assert res["phases"][0]["lr_peak"] == pytest.approx(0.001)
