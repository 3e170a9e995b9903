"""Running one claimed task: call the handler (through ``task_caller``), then record
the outcome on the task record with a fenced update."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Final

import attrs
from pymongo.client_session import ClientSession

from ..clock import ServerClock, as_utc
from ..cluster.throttles import Throttles
from ..config.definition import TaskDefinition
from ..config.retry import CronRetry
from ..config.settings import Settings
from ..errors import HandlerTimeoutError, MongoReactError
from ..logs import run_fields
from ..monitoring.measurements import Measurements
from ..records import PENDING, ClaimedTask, Finalized, RunEnd
from ..store.protocols import WorkStore
from .admission import ConcurrencySlots
from .context import RunState, TaskContext
from .finalizer import Finalizer
from .leases import LeaseKeeper
from .outcome import Outcome, decide
from .watchdog import Watchdog

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS: Final = 2_000
MAX_TRACEBACK_CHARS: Final = 8_000


class _Once:
    """``on_done`` of a run, called at most once whichever of the handler's thread and
    the watchdog ends the run."""

    def __init__(self, on_done: Callable[[Outcome], None]) -> None:
        self._on_done = on_done
        self._lock = threading.Lock()
        self._called = False

    def __call__(self, outcome: Outcome) -> None:
        with self._lock:
            if self._called:
                return
            self._called = True
        self._on_done(outcome)


@attrs.frozen
class _Run:
    """One run under way, as whichever thread ends it (the worker's, or the
    watchdog's at the timeout) needs it."""

    definition: TaskDefinition
    claim: ClaimedTask
    context: TaskContext
    state: RunState
    started: float  # time.monotonic()
    on_done: _Once


class TaskRunner:
    """Runs claimed tasks; safe to call from many worker threads at once."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: WorkStore,
        clock: ServerClock,
        leases: LeaseKeeper,
        throttles: Throttles,
        wake: Callable[[float], None],
        finalizer: Finalizer,
        slots: ConcurrencySlots,
        measurements: Measurements | None = None,
        on_read: Callable[[str], None] = lambda task: None,
        watchdog: Watchdog | None = None,
        on_abandoned: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_read = on_read  # a handler read its document (see prefetch.py)
        # Handler time limits: the deadlines, and the pool's account of a thread left
        # to a handler that ran past its timeout.
        self._watchdog = watchdog
        self._on_abandoned = on_abandoned
        self._slots = slots
        self._measurements = measurements or Measurements()
        self._wake = wake
        self._settings = settings
        self._store = store
        self._finalizer = finalizer
        self._clock = clock
        self._leases = leases
        self._throttles = throttles

    def run(
        self, definition: TaskDefinition, claim: ClaimedTask, on_done: Callable[[Outcome], None]
    ) -> bool:
        """Run ``claim`` and hand its outcome to the finalizer; whether the run was
        taken over by the watchdog (it ran past its timeout: see watchdog.py).

        ``on_done(outcome)`` is called exactly once: when the outcome is written (from
        the finalizer's thread), or at once when there is nothing to write.
        """
        once = _Once(on_done)
        try:
            return self._run(definition, claim, once)
        except BaseException:
            once(Outcome.ERROR)  # the run raised before it had an outcome to write
            raise

    def _run(self, definition: TaskDefinition, claim: ClaimedTask, on_done: _Once) -> bool:
        started = time.monotonic()

        def complete(session: ClientSession | None) -> bool:
            if state.taken_over:
                return False  # finalized as timed out already
            seconds = time.monotonic() - started
            end = RunEnd(
                outcome=Outcome.COMPLETED, duration_ms=int(seconds * 1000),
                instance_id=self._settings.instance_id,
            )  # fmt: skip
            return self._store.finalize(claim, definition, end, session).written

        state = RunState(complete=complete)
        context = TaskContext(
            definition=definition,
            claim=claim,
            store=self._store,
            clock=self._clock,
            throttles=self._throttles,
            run=state,
            on_read=self._on_read,
        )
        run = _Run(definition, claim, context, state, started, on_done)
        self._leases.hold(claim)
        deadline = None
        limit = definition.timeout.total_seconds() if definition.timeout is not None else None
        if limit is not None and self._watchdog is not None:
            deadline = self._watchdog.watch(limit, functools.partial(self._time_out, run))
        try:
            with run_fields(self._extra(run)):
                error = self._call(definition, context)
        except BaseException:
            if deadline is None or deadline.cancel():
                self._leases.release(claim)
                self._slots.release(claim)
                raise
            # Past its timeout, then SystemExit or the like: the watchdog ended the run.
            logger.warning(
                "task %s for %r: the handler raised %s after its timeout; discarded",
                definition.name, context.doc_id, sys.exc_info()[0].__name__,  # type: ignore[union-attr]
                extra=self._extra(run),
            )  # fmt: skip
            return True
        if deadline is not None and limit is not None and not deadline.cancel():
            logger.warning(
                "task %s for %r returned %.1fs after its timeout; its result is discarded",
                definition.name, context.doc_id, time.monotonic() - started - limit,
                extra=self._extra(run),
            )  # fmt: skip
            return True
        self._finish(run, error)
        return False

    def _time_out(self, run: _Run) -> None:
        """On the watchdog's thread: the handler is past its deadline. Its run ends
        here, as a failure; its thread is left to finish (and replaced meanwhile)."""
        run.state.taken_over = True
        run.context.cancel()
        error = HandlerTimeoutError(
            f"task {run.definition.name!r} for {run.context.doc_id!r} ran past its timeout "
            f"of {run.definition.timeout} (the handler thread is left to finish; its result "
            "will be discarded)"
        )
        try:
            self._finish(run, error)
        except Exception:
            logger.exception("task %s: could not end a timed-out run", run.definition.name)
            self._leases.release(run.claim)
            run.on_done(Outcome.ERROR)
        finally:
            self._on_abandoned()  # last: its failure must not keep the run from ending

    def _finish(self, run: _Run, error: BaseException | None) -> None:
        """Decide the outcome of a run that ended (``error``: how) and have the
        finalizer write it; ``on_done`` once written, or at once if nothing is."""
        definition, claim, context, on_done = run.definition, run.claim, run.context, run.on_done
        lost = True  # until the run has an outcome to write
        try:
            seconds = time.monotonic() - run.started
            end = self._outcome(run, error, int(seconds * 1000))
            outcome, next_run = end.outcome, end.next_run_at
            self._measure(definition.name, outcome, seconds)
            # The lease is still renewed while the finalize waits and is written (a slow
            # finalize must not let another worker run the task again); from here the
            # fenced finalize, not the renewal, says whether the claim still owns it.
            lost = self._leases.finalizing(claim)
        finally:
            if lost:
                self._leases.release(claim)
            self._slots.release(claim)
        if lost:
            logger.warning(
                "task %s for %r: lease lost during the run; result not recorded",
                definition.name,
                context.doc_id,
                extra=self._extra(run),
            )
            on_done(Outcome.LEASE_LOST)
            return

        def written(answer: Finalized, failure: BaseException | None) -> None:
            result = outcome
            try:
                if failure is not None:
                    logger.error(
                        "task %s for %r: could not record the result (%s); the task runs "
                        "again when its lease expires",
                        definition.name, context.doc_id, failure,
                        extra=self._extra(run),
                    )  # fmt: skip
                    result = Outcome.LEASE_LOST
                elif not answer.written and run.state.completed:
                    result = Outcome.COMPLETED  # by the handler, inside its transaction
                elif not answer.written:
                    logger.warning(
                        "task %s for %r: another worker owns the record now; result not "
                        "recorded",
                        definition.name, context.doc_id,
                        extra=self._extra(run),
                    )  # fmt: skip
                    result = Outcome.LEASE_LOST
                else:
                    self._schedule_follow_up(answer, next_run)
            finally:
                self._leases.release(claim)
                on_done(result)

        self._finalizer.submit(claim, definition, end, written)

    def _extra(self, run: _Run) -> dict[str, Any]:
        """Fields a structured log handler can index on (``record.task`` ...)."""
        return {
            "task": run.definition.name,
            "doc_id": run.context.doc_id,
            "attempt": run.context.attempt,
            "instance_id": self._settings.instance_id,
        }

    def _measure(self, task: str, outcome: Outcome, seconds: float) -> None:
        status = Outcome.FAILED if outcome is Outcome.RETRY else outcome
        self._measurements.observe(task, status.value, seconds)
        if outcome is Outcome.RETRY:
            self._measurements.count("retries", task)

    def _schedule_follow_up(self, answer: Finalized, next_run: dt.datetime | None) -> None:
        # A retry, a deferral or a dirty re-run is due again later: have this instance
        # poll then instead of waiting for its idle back-off. A batched finalize does
        # not return the record: the retry or deferral time is known here, but a dirty
        # re-run is then found by the next poll, which comes at once while the instance
        # is busy enough to batch.
        if answer.known:
            next_run = answer.next_run_at if answer.status == PENDING else None
        if next_run is not None:
            self._wake((as_utc(next_run) - self._clock.now()).total_seconds())

    def _call(self, definition: TaskDefinition, context: TaskContext) -> BaseException | None:
        caught: list[BaseException] = []
        called: list[bool] = []  # a flag run() sets (an Event costs a lock per task)

        def run() -> None:
            called.append(True)
            try:
                definition.handler(context)
            except Exception as error:
                caught.append(error)
                raise

        try:
            if self._settings.task_caller is None:
                run()
            else:
                self._settings.task_caller(run)
        except Exception as error:
            if not caught:
                caught.append(error)  # task_caller itself failed
        if not called and not caught:
            caught.append(MongoReactError("task_caller returned without calling run()"))
        return caught[0] if caught else None

    def _outcome(self, run: _Run, error: BaseException | None, duration_ms: int) -> RunEnd:
        """How the run ended: its outcome, and when the record is due again."""
        definition, claim, context = run.definition, run.claim, run.context
        first_error = claim.record.get("firstErrorAt")
        now = self._clock.now()
        decision = decide(
            error=error,
            deferred_until=run.state.deferred_until,
            policy=definition.retry_policy,
            attempt=claim.attempt,
            first_error_at=as_utc(first_error) if first_error is not None else None,
            now=now,
        )
        relative = decision.outcome is Outcome.RETRY and not isinstance(
            definition.retry_policy, CronRetry
        )
        end = RunEnd(
            outcome=decision.outcome,
            duration_ms=duration_ms,
            instance_id=self._settings.instance_id,
            next_run_at=decision.next_run_at,
            # A retry after a delay is timed from the server's clock; a cron retry's
            # time (a moment the expression names) and a deferral stay as they are.
            decided_at=now if relative else None,
        )
        if end.outcome in (Outcome.RETRY, Outcome.FAILED) and error is not None:
            end = attrs.evolve(end, error=_describe(error), traceback=_traceback(error))
            # A run given up is for a human to look at (ERROR, with its traceback); a
            # run that will be retried is transient (WARNING, one line).
            gave_up = end.outcome is Outcome.FAILED
            logger.log(
                logging.ERROR if gave_up else logging.WARNING,
                "task %s for %r failed (attempt %d, %s): %s",
                definition.name,
                context.doc_id,
                claim.attempt,
                "giving up" if gave_up else "will retry",
                end.error,
                exc_info=(type(error), error, error.__traceback__) if gave_up else None,
                extra=self._extra(run),
            )
        return end


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _traceback(error: BaseException) -> str:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    # The end of a traceback says the most; keep that.
    return text if len(text) <= MAX_TRACEBACK_CHARS else "..." + text[-MAX_TRACEBACK_CHARS:]
