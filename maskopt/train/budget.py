"""Training budgets in epochs or optimizer steps, converted to an exact integer number of steps.

A budget of ``e`` epochs on a data stream of ``S`` steps per epoch is ``e · S`` steps; it must be
a whole number (up to 1e-9), so that "3 epochs" means exactly ``3 S`` optimizer steps and the
accounting of IMP phases adds up with no rounding anywhere.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import BudgetError

UNITS = ("steps", "epochs")
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(steps?|st|s|epochs?|ep|e)?\s*$")


@dataclass(frozen=True)
class Budget:
    """``amount`` optimizer steps or epochs (``unit``)."""

    amount: float
    unit: str = "steps"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise BudgetError(f"budget unit must be one of {UNITS}, got {self.unit!r}")
        if not (isinstance(self.amount, (int, float)) and math.isfinite(self.amount)) or self.amount <= 0:
            raise BudgetError(f"a budget must be a finite number > 0 of {self.unit}, got {self.amount!r}")
        if self.unit == "steps" and float(self.amount) != int(self.amount):
            raise BudgetError(f"a budget in steps must be a whole number, got {self.amount!r}")

    @classmethod
    def parse(cls, text: "str | int | float | Budget") -> "Budget":
        """'120', '120steps', '120s' → 120 steps; '3ep', '3epochs', '2.5e' → epochs."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, (int, float)):
            return cls(text, "steps")
        m = _PATTERN.match(str(text))
        if not m:
            raise BudgetError(f"cannot read budget {text!r}: write e.g. '200' or '200steps' or '3ep'")
        amount = float(m.group(1))
        unit = "epochs" if (m.group(2) or "s").startswith("e") else "steps"
        return cls(int(amount) if unit == "steps" and amount.is_integer() else amount, unit)

    def steps(self, steps_per_epoch: int) -> int:
        """The exact number of optimizer steps: ``amount`` or ``amount · steps_per_epoch``."""
        if self.unit == "steps":
            return int(self.amount)
        if steps_per_epoch < 1:
            raise BudgetError(f"steps per epoch must be ≥ 1, got {steps_per_epoch}")
        exact = self.amount * steps_per_epoch
        n = round(exact)
        if abs(exact - n) > 1e-9 * max(1.0, exact):
            raise BudgetError(f"{self.amount} epochs × {steps_per_epoch} steps per epoch = {exact} is not a whole "
                              "number of steps; give the budget in steps or a multiple of 1/steps_per_epoch epochs")
        return int(n)

    def __str__(self) -> str:
        a = int(self.amount) if float(self.amount).is_integer() else self.amount
        return f"{a}{'steps' if self.unit == 'steps' else 'ep'}"


def split_budget(total_steps: int, parts: int) -> list[int]:
    """``total_steps`` split into ``parts`` near-equal whole numbers that sum exactly to it (earlier parts larger)."""
    if parts < 1:
        raise BudgetError(f"cannot split a budget into {parts} parts")
    base, extra = divmod(int(total_steps), parts)
    if base < 1:
        raise BudgetError(f"{total_steps} steps cannot give each of {parts} phases at least one step")
    return [base + (1 if i < extra else 0) for i in range(parts)]
