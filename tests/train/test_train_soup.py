"""Sparse model soups: the uniform soup is the mean, masks are checked and preserved, greedy selection,
and SMS with copies in parallel processes equals the same run in one process."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import nan_after_digits

from maskopt.train import (DigitsWorkload, MaskMismatchError, SMSConfig, check_masks, greedy_soup, run_sms,
                           train_dense, uniform_soup)
from maskopt.train.masking import current_masks, magnitude_masks


pytestmark = pytest.mark.usefixtures("one_thread")


def _states(m: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(4, 5, generator=g) > 0.5
    return [{"w": torch.randn(4, 5, generator=g) * mask, "b": torch.randn(3, generator=g),
             "n": torch.tensor(7)} for _ in range(m)], mask


def test_uniform_soup_is_the_mean_and_keeps_the_mask():
    states, mask = _states()
    soup = uniform_soup(states)
    assert torch.allclose(soup["w"], (states[0]["w"] + states[1]["w"] + states[2]["w"]) / 3)
    assert torch.allclose(soup["b"], torch.stack([s["b"] for s in states]).mean(0))
    assert soup["n"] == 7
    assert bool((soup["w"][~mask] == 0).all())
    assert torch.equal(check_masks(states, ["w"])["w"], mask)
    check_masks([soup], ["w"], {"w": mask})


def test_mismatched_masks_are_refused():
    states, mask = _states()
    states[1]["w"] = states[1]["w"].clone()
    idx = torch.nonzero(~mask)[0]
    states[1]["w"][tuple(idx)] = 0.5  # revives one pruned weight
    with pytest.raises(MaskMismatchError, match="ingredient 1.*1 entries"):
        check_masks(states, ["w"], {"w": mask})
    with pytest.raises(MaskMismatchError, match="ingredient 1"):
        check_masks(states, ["w"])
    with pytest.raises(MaskMismatchError, match="shape"):
        check_masks([{"w": torch.zeros(2, 2)}], ["w"], {"w": mask})
    with pytest.raises(MaskMismatchError, match="differs"):
        uniform_soup([{"n": torch.tensor(1)}, {"n": torch.tensor(2)}])


def test_greedy_soup_adds_only_ingredients_that_do_not_hurt():
    target = torch.tensor([1.0, 1.0])
    states = [{"w": torch.tensor([1.2, 0.8])}, {"w": torch.tensor([0.8, 1.2])}, {"w": torch.tensor([5.0, -5.0])}]

    def score(s):  # higher is better: −distance to the target
        return -float((s["w"] - target).norm())

    soup, chosen, best = greedy_soup(states, score)
    assert chosen == [0, 1]  # ties broken by index; the outlier is left out
    assert torch.allclose(soup["w"], target) and best == pytest.approx(0.0)
    _, chosen_low, _ = greedy_soup(states, lambda s: -score(s), higher_is_better=False)
    assert chosen_low == [0, 1]


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    wl = DigitsWorkload(hidden=(48,), epochs=8)
    model = wl.build_model(0)
    train_dense(model, wl, wl.default_schedule())
    return wl, model


def test_sms_phases_keep_the_mask_and_start_from_the_soup(trained):
    wl, dense = trained
    model = copy.deepcopy(dense)
    cfg = SMSConfig([0.6, 0.8], retrain=6, copies=3, soup="uniform", schedule="LLR", workers=0)
    res = run_sms(model, wl, cfg)
    assert [r["steps_total"] for r in res["phases"]] == [18, 18] and res["retrain_steps_total"] == 36
    masks = current_masks(wl.prunable(model))
    assert 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) == \
        pytest.approx(0.8, abs=1e-3)
    last = res["phases"][-1]
    assert len(last["ingredients_test"]) == 3 and last["next"] == "uniform"
    assert wl.evaluate(model) == pytest.approx(last["uniform_soup_test"])


def test_parallel_copies_equal_sequential_copies(trained):
    wl, dense = trained
    runs = []
    for workers in (0, 2):
        model = copy.deepcopy(dense)
        cfg = SMSConfig([0.7], retrain=5, copies=2, soup="greedy", workers=workers)
        runs.append((run_sms(model, wl, cfg)["phases"][0], model.state_dict()))
    (a, sa), (b, sb) = runs
    assert a["ingredients_test"] == b["ingredients_test"]
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6)


def test_soup_of_differently_pruned_models_is_refused(trained):
    wl, dense = trained
    a, b = copy.deepcopy(dense), copy.deepcopy(dense)
    for m, scope in ((a, "global"), (b, "layer")):
        w = wl.prunable(m)
        mk = magnitude_masks(w, 0.7, scope)
        for n in w:
            w[n].data.mul_(mk[n])
    with pytest.raises(MaskMismatchError):
        check_masks([a.state_dict(), b.state_dict()], [f"{n}" for n in wl.prunable(a)])
    with pytest.raises(ValueError, match="weight decay"):
        SMSConfig([0.5], retrain=3, copies=2, weight_decays=[0.0])




def test_nonfinite_loss_in_a_copy_restores_the_last_soup(tmp_path):
    from maskopt.train import LastGood, NonFiniteLossError, load_last_good

    wl = nan_after_digits(10**9, hidden=(32,), epochs=3)
    model = wl.build_model(0)
    train_dense(model, wl, wl.default_schedule())
    wl.after = wl.calls + 2 * 4 + 1  # phase 1: two copies × 4 steps; phase 2 fails in its first copy
    guard = LastGood(tmp_path)
    with pytest.raises(NonFiniteLossError, match="SMS phase 2 copy 0.*last good") as err:
        run_sms(model, wl, SMSConfig([0.5, 0.7], retrain=4, copies=2, workers=0), guard=guard)
    assert err.value.phase == 2
    state, masks, info = load_last_good(tmp_path)
    assert info["label"].startswith("SMS phase 1 soup")
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
