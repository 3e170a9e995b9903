"""How many records the dispatcher claims at a time (pure: no threads, no I/O).

Prefetch: while handlers are short, the dispatcher claims up to ``prefetch`` records
more than it has free threads, so a claim serves many runs instead of one or two. How
far ahead it claims follows the measured run time: a record claimed ahead should get a
thread within ``PREFETCH_HORIZON``. With long handlers nothing is claimed ahead, and
idle instances are never kept from work another instance holds.
"""

from __future__ import annotations

from typing import Final

import attrs

MAX_CLAIM_BATCH: Final = 32
PREFETCH_HORIZON: Final = 0.2  # seconds a record claimed ahead should wait for a thread
RUN_TIME_WEIGHT: Final = 0.2  # of the newest run in the moving average of run times


@attrs.frozen
class ClaimPolicy:
    """The claim sizes for ``concurrency`` threads and at most ``prefetch`` ahead."""

    concurrency: int
    prefetch: int

    def ahead(self, run_time: float | None) -> int:
        """Records to claim beyond the threads: as many as the threads get through in
        ``PREFETCH_HORIZON`` at the measured ``run_time`` (seconds), at most
        ``prefetch``; none before a run has been measured."""
        if run_time is None or self.prefetch == 0:
            return 0
        fit = self.concurrency * PREFETCH_HORIZON / max(run_time, 1e-4)
        return min(self.prefetch, int(fit))

    def room(self, *, in_hand: int, busy: int, run_time: float | None) -> int:
        """How many records to claim now, with ``in_hand`` claimed and not finished, of
        which ``busy`` are running or waiting for a thread: 0 until a thread is idle
        with nothing waiting for it, or enough has finished to refill half of the
        records in hand (a claim then serves many runs)."""
        ahead = self.ahead(run_time)
        room = min(MAX_CLAIM_BATCH, self.concurrency + ahead - in_hand)
        if room <= 0:
            return 0
        idle = busy < self.concurrency
        return room if idle or room >= max(1, (self.concurrency + ahead) // 2) else 0


def average_run_time(average: float | None, seconds: float) -> float:
    """The moving average of run times after a run of ``seconds``."""
    if average is None:
        return seconds
    return (1 - RUN_TIME_WEIGHT) * average + RUN_TIME_WEIGHT * seconds
