"""Sparsity through training: compression-aware Stochastic Frank-Wolfe, IMP with retraining schedules
(FT, LRW, SLR, CLR, LLR, ALLR) and budgeted IMP, and Sparse Model Soups.

    from maskopt.train import DigitsWorkload, IMPConfig, SMSConfig, run_imp, run_sms, train_dense
    wl = DigitsWorkload()
    model = wl.build_model()
    train_dense(model, wl, wl.default_schedule())
    run_imp(model, wl, IMPConfig(sparsities=[0.5, 0.75, 0.9], retrain="3ep", schedule="ALLR"))
    run_sms(model, wl, SMSConfig(sparsities=[0.95], retrain="3ep", copies=3, soup="greedy"))
"""
from .budget import Budget, split_budget
from .checkpoint import LastGood, load_last_good
from .constraints import (KINDS, Constraint, KSparsePolytope, KSupportBall, L1Ball, L2Ball, constraint_from_init,
                          make_constraint)
from .dense import SFWConfig, oneshot_curve, train_dense, train_sfw
from .errors import BudgetError, MaskMismatchError, NonFiniteLossError, SparsityScheduleError
from .imp import IMPConfig, bimp_split, run_bimp, run_imp
from .masking import check_sparsities, magnitude_masks, sparsity_of
from .norms import ksparse_dual_norm, ksparse_norm, ksupport_dual_norm, ksupport_norm
from .optim import OptimizerSpec
from .pruners import Pruner
from .schedules import RETRAIN_SCHEDULES, RetrainSchedule, TrainSchedule, allr_initial_lr
from .sfw import SFW, sfw_param_groups
from .sms import SMSConfig, run_sms
from .soup import check_masks, greedy_soup, uniform_soup
from .workloads import DigitsWorkload, LMWorkload, Workload

__all__ = [
    "Budget", "BudgetError", "Constraint", "DigitsWorkload", "IMPConfig", "KINDS", "KSparsePolytope", "KSupportBall",
    "L1Ball", "L2Ball", "LMWorkload", "LastGood", "MaskMismatchError", "NonFiniteLossError", "OptimizerSpec",
    "Pruner", "RETRAIN_SCHEDULES", "RetrainSchedule", "SFW", "SFWConfig", "SMSConfig", "SparsityScheduleError",
    "TrainSchedule", "Workload", "allr_initial_lr", "bimp_split", "check_masks", "check_sparsities",
    "constraint_from_init", "greedy_soup", "ksparse_dual_norm", "ksparse_norm", "ksupport_dual_norm",
    "ksupport_norm", "load_last_good", "magnitude_masks", "make_constraint", "oneshot_curve", "run_bimp",
    "run_imp", "run_sms", "sfw_param_groups", "sparsity_of", "split_budget", "train_dense", "train_sfw",
    "uniform_soup",
]
