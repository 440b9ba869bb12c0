"""Learning rates of the original and retraining schedules at given steps; budgets in epochs/steps."""
from __future__ import annotations

import math

import pytest

from maskopt.train import (Budget, BudgetError, RetrainSchedule, TrainSchedule, allr_initial_lr, split_budget)

ORIG = TrainSchedule("step", lr=0.1, steps=100, milestones=(0.5, 0.75), gamma=0.1)


def test_original_schedules():
    assert [ORIG(t) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert ORIG.max_lr == 0.1 and ORIG.min_lr == pytest.approx(0.001)
    lin = TrainSchedule("linear", lr=1.0, steps=10, warmup=2)
    assert [lin(t) for t in (0, 1, 2, 6)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5])
    cos = TrainSchedule("cosine", lr=1.0, steps=11, final_lr=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 11)))
    assert ORIG.scaled(200)(120) == pytest.approx(0.01)
    with pytest.raises(BudgetError):
        TrainSchedule("step", 0.1, 0)


def test_ft_lrw_follow_the_end_of_the_original_schedule():
    assert RetrainSchedule("FT", 20, ORIG).values() == pytest.approx([0.001] * 20)
    lrw = RetrainSchedule("LRW", 40, ORIG)  # rewinds to step 60 of 100
    assert [lrw(t) for t in (0, 14, 15, 39)] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert RetrainSchedule("LRW", 150, ORIG)(0) == pytest.approx(0.1)  # longer than training: from its start


def test_warmup_then_slr_clr_llr():
    slr, clr, llr = (RetrainSchedule(n, 20, ORIG) for n in ("SLR", "CLR", "LLR"))
    for s in (slr, clr, llr):  # 10% = 2 warm-up steps to η_max
        assert s.warmup == 2 and [s(0), s(1), s(2)] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    # SLR: the original step schedule squeezed into 18 steps: j → original step ⌊j·100/18⌋
    assert [slr(2 + j) for j in (8, 9, 13, 14)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    assert clr(11) == pytest.approx(0.001 + 0.099 * 0.5)  # half way through the cosine to η_min
    assert [llr(11), llr(19)] == pytest.approx([0.05, 0.1 / 18])
    with pytest.raises(IndexError):
        llr(20)


def test_allr_initial_value():
    # η_max · d / √s, clipped to [min(T/T_o, 1) η_max, η_max] = [0.02, 0.1] for T = 20
    assert allr_initial_lr(ORIG, 20, 0.3, 0.5) == pytest.approx(0.1 * 0.3 / math.sqrt(0.5))
    assert allr_initial_lr(ORIG, 20, 0.05, 0.5) == pytest.approx(0.02)
    assert allr_initial_lr(ORIG, 20, 1.0, 0.5) == pytest.approx(0.1)
    allr = RetrainSchedule("ALLR", 20, ORIG, allr_lr=0.04)
    assert [allr(2), allr(11)] == pytest.approx([0.04, 0.02])
    with pytest.raises(ValueError, match="ALLR"):
        RetrainSchedule("ALLR", 20, ORIG)
    with pytest.raises(ValueError, match="schedule"):
        RetrainSchedule("XYZ", 20, ORIG)
    with pytest.raises(BudgetError):
        RetrainSchedule("LLR", 0, ORIG)


def test_budgets_are_exact_step_counts():
    assert Budget.parse("3ep").steps(17) == 51
    assert Budget.parse("120").steps(17) == 120 and Budget.parse("120steps").unit == "steps"
    assert Budget.parse("0.5ep").steps(18) == 9
    with pytest.raises(BudgetError, match="whole number"):
        Budget.parse("0.5ep").steps(17)
    for bad in ("0", "0ep", "-3", "abc", "1.5steps"):
        with pytest.raises(BudgetError):
            Budget.parse(bad)
    assert split_budget(10, 3) == [4, 3, 3] and sum(split_budget(101, 7)) == 101
    with pytest.raises(BudgetError):
        split_budget(2, 3)
