"""How a run ended, decided by one pure function.

The runner calls the handler, then :func:`decide` turns what happened (an error or
not, a deferral, the retry policy and the record's history) into an :class:`Outcome`
and the time the record is due again. The finalize update (``store/pipelines.py``) and
the metrics are derived from the outcome alone.
"""

from __future__ import annotations

import datetime as dt

import attrs

from ..config.retry import RetryPolicy
from ..errors import TaskConditionFailedError
from ..records import Outcome

__all__ = ["Decision", "Outcome", "decide"]


@attrs.frozen
class Decision:
    """An outcome and when the record is due again (``None``: not by this run)."""

    outcome: Outcome
    next_run_at: dt.datetime | None = None


def decide(
    *,
    error: BaseException | None,
    deferred_until: dt.datetime | None,
    policy: RetryPolicy,
    attempt: int,
    first_error_at: dt.datetime | None,
    now: dt.datetime,
) -> Decision:
    """The outcome of a run that raised ``error`` (or not) as attempt ``attempt``.

    ``first_error_at`` is when the record's current run of failures began (``None``:
    this is the first failure, which begins it now).
    """
    if isinstance(error, TaskConditionFailedError):
        return Decision(Outcome.SKIPPED)
    if error is None:
        if deferred_until is not None:
            return Decision(Outcome.DEFERRED, deferred_until)
        return Decision(Outcome.COMPLETED)
    if policy.gives_up(attempt, first_error_at or now, now):
        return Decision(Outcome.FAILED)
    return Decision(Outcome.RETRY, policy.next_run_at(attempt, now))
