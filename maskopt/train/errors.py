"""The errors of training-time sparsity: every bad input is one of these, with a message that says what to change.

All but :class:`NonFiniteLossError` are ``ValueError`` (bad settings, caught before any work);
:class:`NonFiniteLossError` is a ``FloatingPointError`` raised during training, after the model
was restored to its last good checkpoint.
"""
from __future__ import annotations


class BudgetError(ValueError):
    """A training budget that is zero, negative, not a whole number of steps, or does not fit."""


class SparsityScheduleError(ValueError):
    """Target sparsities that are not strictly increasing inside (0, 1)."""


class MaskMismatchError(ValueError):
    """Soup ingredients that do not share one mask (averaging them would lose the sparsity)."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the model was restored to the last good checkpoint."""

    def __init__(self, message: str, *, step: int | None = None, phase: int | None = None):
        super().__init__(message)
        self.step = step
        self.phase = phase
