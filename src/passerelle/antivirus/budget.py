"""What one message's inspection may cost: time on an injected clock, and counts.

The engine gives it the milter thread's CPU time (time.thread_time): monotonic, and not
used up by other sessions loading the host.

Every loop of the MIME walk and of the archive reader calls :meth:`Budget.check`; when the
time is spent it raises :class:`BudgetExceeded`, which the engine turns into the configured
uninspectable-content action (never an exception for the milter, never a stall).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class BudgetExceeded(Exception):
    """The inspection of this message would cost more than it is allowed to."""


class Budget:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.thread_time) -> None:
        self.seconds = seconds
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def check(self) -> None:
        if self.elapsed() > self.seconds:
            raise BudgetExceeded(f"inspection over its time budget of {self.seconds:g} s")


def unlimited() -> Budget:
    return Budget(float("inf"))
