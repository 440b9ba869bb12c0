"""Where a running solver says how far it is: a context-local callback, pointed by the prune stage at its bar.

Solvers call ``say(lambda: text)``; nothing happens (and the text is never built) unless a caller set a
callback with ``reporting_to(fn)``, and then at most every ``interval`` seconds, so the hot loops pay for
one clock read per call.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

_SINK: ContextVar[tuple[Callable[[str], None], float, list[float]] | None] = ContextVar("maskopt_solver_progress",
                                                                                      default=None)


INTERVAL = 0.5  # seconds between two reports (default of reporting_to)


@contextmanager
def reporting_to(fn: Callable[[str], None], interval: float | None = None) -> Iterator[None]:
    """Send the solvers' progress texts inside this block to ``fn`` (at most one per ``interval`` s)."""
    token = _SINK.set((fn, INTERVAL if interval is None else interval, [time.monotonic()]))
    try:
        yield
    finally:
        _SINK.reset(token)


def say(text: Callable[[], str]) -> None:
    """Report progress; ``text`` is only called when a sink is set and the interval has passed."""
    sink = _SINK.get()
    if sink is None:
        return
    fn, interval, last = sink
    now = time.monotonic()
    if now - last[0] >= interval:
        last[0] = now
        fn(text())
