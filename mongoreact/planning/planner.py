"""The leader's planner: one database-level change stream in, task records out.

Two threads. The *stream reader* iterates the change stream and puts each event's
``_id``, collection, operation and resume token on a bounded queue; when the queue is
full it stops reading, which holds the server cursor back (backpressure). The *planner*
collects events into batches (see ``event_batches``), plans each batch with one pass per
task, then saves the resume token, so a new leader resumes after the last planned event.
It saves at most once a ``leader_heartbeat`` (and when it stops): a batch planned since
the last save is planned again by a successor, which changes nothing, as planning is
idempotent, while a save per batch was one more write per 50 ms under a steady trickle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Final, TypeVar

import attrs
from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from .._retry import call_with_retry, is_transient
from .._threads import Loop
from ..config.definition import TaskDefinition
from ..config.registry import TaskRegistry
from ..config.settings import Settings
from ..monitoring.measurements import Measurements
from ..store.globals import GlobalsStore, Saved
from ..store.server import PLANNED_OPERATIONS, open_change_stream
from ..store.tasks import UNKNOWN_UUID, TaskStore
from .event_batches import EventBatcher, id_key
from .recheck import Rechecker
from .reconciler import Reconciler

logger = logging.getLogger(__name__)

Document = dict[str, Any]
T = TypeVar("T")

# ChangeStreamHistoryLost (286) and ChangeStreamFatalError (280): the oplog no longer
# reaches back to the saved token, or the stream cannot go on from it.
HISTORY_LOST_CODES: Final = frozenset({280, 286})
DOCUMENT_OPERATIONS: Final = frozenset(PLANNED_OPERATIONS)
# Events after which a watched collection holds other documents, and why.
CONTENTS_REPLACED: Final = {
    "rename": "was renamed (its contents replaced or moved away)",
    "drop": "was dropped",
    "dropDatabase": "was dropped with its database",
}
# Other errors that are not transient (an invalid resume token after a restore, ...) are
# retried this many times from the same position, then handled like lost history.
UNRESUMABLE_TRIES: Final = 5
QUEUE_PUT_TIMEOUT: Final = 0.2
LAPSE_PAUSE: Final = 0.05  # seconds between looks at a lapsed lease
# $merge found no unique index on its "on" fields: the tasks collection was dropped.
NO_UNIQUE_INDEX: Final = 51183


def _namespace(change: Document) -> str:
    namespace = change.get("ns") or {}
    return ".".join(str(part) for part in (namespace.get("db"), namespace.get("coll")) if part)


WENT_BACK_MESSAGE: Final = (
    "the planner's state went back in time under this leader (the globals collection "
    "restored from a backup, or deleted); reconciling every task, since what it "
    "recorded meanwhile (a reconciliation owed) may be lost"
)


class PlanAgainError(Exception):
    """Ends a planning pass early; the batch is kept and planned again in full at the
    next step (planning is idempotent)."""


class NotLeadingError(PlanAgainError):
    """Raised inside a planning pass when the lease lapsed locally: stop writing."""


class StreamReader(Loop):
    """Feeds change events (ids only) to the planner's queue."""

    def __init__(
        self,
        *,
        settings: Settings,
        database: Database[Document],
        registry: TaskRegistry,
        globals_store: GlobalsStore,
        events: queue.Queue[tuple[str, Any]],
        reconcile_everything: Callable[[int], bool],
        measurements: Measurements,
        epoch: int,
    ) -> None:
        self._measurements = measurements
        self._epoch = epoch
        self._instance_id = settings.instance_id
        super().__init__(f"mongoreact-stream-{settings.instance_id}")
        self._db = database
        self._registry = registry
        self._globals = globals_store
        self._events = events
        self._reconcile_everything = reconcile_everything
        self._stream: Any = None
        self._position: Document | None = None
        self._failures = 0  # non-transient errors in a row at the same position
        self._batch_size = settings.batch_size
        # Set while a stream is open: reconciliation waits for it so that no write can
        # fall between the scan and the stream.
        self.opened = threading.Event()

    def step(self) -> float:
        try:
            if self._stream is None:
                self._open()
            stream = self._stream
            if stream is None:  # deposed while opening
                return 0.0
            change = stream.try_next()
        except OperationFailure as error:
            self._close()
            self._measurements.count("change_stream_errors")
            if error.code in HISTORY_LOST_CODES:
                logger.error("change stream history lost (code %s); starting afresh", error.code)
                self._restart_from_now()
                return 0.0
            if is_transient(error):
                raise
            self._failures += 1
            if self._failures < UNRESUMABLE_TRIES:
                raise
            logger.error(
                "the change stream cannot resume (code %s: %s) after %d tries; starting "
                "afresh and reconciling every task",
                error.code, error, self._failures,
            )  # fmt: skip
            self._restart_from_now()
            return 0.0
        except PyMongoError:
            self._measurements.count("change_stream_errors")
            self._close()  # reopened from the last position handed to the planner
            raise
        self._failures = 0
        token = stream.resume_token
        if change is None:
            if not stream.alive:  # invalidated, e.g. the database was dropped
                self._close()
            elif token is not None:
                self._put(("idle", token))
                self._position = token
            return 0.0
        operation = change.get("operationType")
        if operation in DOCUMENT_OPERATIONS:
            self._put(("event", change))
        elif operation == "invalidate":
            # The stream ends here (MongoDB ends it after some drops and renames); a
            # new one starts after this event (start_after accepts its token).
            logger.warning("the change stream was invalidated; opening a new one after it")
            self._close()
        elif operation in CONTENTS_REPLACED:
            # A watched collection's documents were replaced or removed without a
            # document event each. Reconciliation (reset before the position passes
            # this event) plans what is there now and marks what is gone.
            logger.warning(
                "%s %s; reconciling every task",
                _namespace(change), CONTENTS_REPLACED[str(operation)],
            )  # fmt: skip
            try:
                if not self._reconcile_all():
                    return 0.0
            except BaseException:
                self._close()  # reopened before this event, which then comes again
                raise
        if token is not None:
            self._position = token
        return 0.0

    def _reconcile_all(self) -> bool:
        """Have every task reconciled (fenced by this reader's epoch); ``False``, and this
        reader stopped, when a later leader owns the planner's state."""
        if self._reconcile_everything(self._epoch):
            return True
        self._superseded()
        return False

    def _superseded(self) -> None:
        logger.warning("a later leader writes the planner's state; this reader stops")
        self._close()
        self.stop()

    def _restart_from_now(self) -> None:
        """Forget the position the stream cannot resume from; the next stream starts
        from now and every task is reconciled (what happened in between is found)."""
        self._measurements.count("change_stream_restarts")
        # Reconciliation is reset before the position is dropped: a crash in between
        # then retries from the old position, never opens from now unreconciled. Both
        # writes are fenced by the epoch: a deposed reader must not abandon its
        # successor's scan or drop the position its successor saved.
        if not self._reconcile_all():
            return
        # The planner must not save a position of the old stream after this: a
        # successor would resume from lost history again (and reconcile again).
        self._put(("restarted", None))
        if not self._globals.position.forget(epoch=self._epoch):
            self._superseded()
            return
        self._position = None
        self._failures = 0

    def _open(self) -> None:
        if self._position is None:
            self._position = self._globals.position.load()
            if self._position is None and self._globals.reconciliation.reconciled():
                # Tasks marked reconciled but no position saved: the globals were
                # restored from a backup taken before the first save (or the position
                # deleted). Opened from now, the stream would skip whatever was written
                # since, and nothing would reconcile it.
                logger.warning(
                    "no saved stream position although tasks are marked reconciled (the "
                    "globals restored?); reconciling every task"
                )
                if not self._reconcile_all():
                    return
        collections = self._registry.collections
        logger.info(
            "opening the change stream on %s for %s (%s)",
            self._db.name,
            ", ".join(collections),
            "resuming" if self._position else "from now",
        )
        from_now = self._position is None
        self._stream = open_change_stream(
            self._db, collections, start_after=self._position, batch_size=self._batch_size
        )
        if from_now:
            self._save_start()
        if self._stream is not None:
            self.opened.set()

    def _save_start(self) -> None:
        """Save where a stream opened from now starts, before anything relies on it.

        Reconciliation (which waits for ``opened``) covers what was written before this
        point, the stream what comes after. Without the saved start, a leader replaced
        before its first save would leave its successor nothing to resume from: it would
        open from *its* now, and every write in between would never be planned.
        """
        token = self._stream.resume_token
        if token is None:  # servers before 4.0.7 send no postBatchResumeToken
            return
        save = partial(self._globals.position.save, token, self._instance_id, epoch=self._epoch)
        saved = save()
        if saved is Saved.WENT_BACK:
            logger.warning(WENT_BACK_MESSAGE)
            if not self._reconcile_all():
                return
            saved = save()
        if saved is not Saved.SAVED:
            logger.warning("a later leader saves the stream position; this reader stops")
            self._close()
            self.stop()
            return
        self._position = token

    def _put(self, item: tuple[str, Any]) -> None:
        # A full queue means planning lags behind: stop reading until it catches up.
        while not self.stopping.is_set():
            with contextlib.suppress(queue.Full):
                self._events.put(item, timeout=QUEUE_PUT_TIMEOUT)
                return

    def _close(self) -> None:
        self.opened.clear()
        if self._stream is not None:
            try:
                self._stream.close()
            except PyMongoError:
                logger.debug("error closing the change stream", exc_info=True)
            self._stream = None

    def on_stop(self) -> None:
        self._close()


@attrs.frozen
class _Merged:
    """A merge done (the first half of a planning pass), its marking still to do."""

    definition: TaskDefinition
    ids: list[Any]
    deleted: list[Any]
    stamp: ObjectId
    after: Any  # the cluster time its source reads were made at or after


class Planner(Loop):
    """Turns batches of change events into task records."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: TaskRegistry,
        task_store: TaskStore,
        globals_store: GlobalsStore,
        events: queue.Queue[tuple[str, Any]],
        stream_open: threading.Event,
        is_leader: Callable[[], bool],
        on_planned: Callable[[TaskDefinition], None],
        measurements: Measurements,
        epoch: int,
    ) -> None:
        super().__init__(f"mongoreact-planner-{settings.instance_id}")
        self._epoch = epoch  # the leader epoch this planner was started in
        self._stream_open = stream_open
        self._reconciler = Reconciler(
            registry=registry,
            task_store=task_store,
            reconciliation=globals_store.reconciliation,
            batch_size=settings.batch_size,
            should_stop=lambda: self.stopping.is_set() or not is_leader(),
            stopping=self.stopping,
            epoch=epoch,
            superseded=self.stop,
        )
        self._reconciliation: Iterator[bool] | None = None
        self._rechecker = Rechecker(registry, task_store, settings.batch_size)
        self._recheck: Iterator[bool] | None = None
        self._reconcile_requested = threading.Event()
        self._reconcile_requested.set()  # tasks never reconciled catch up at start
        self._settings = settings
        self._registry = registry
        self._tasks = task_store
        self._globals = globals_store
        self._events = events
        self._is_leader = is_leader
        self._on_planned = on_planned
        self._batcher = EventBatcher(
            settings.batch_window.total_seconds(),
            settings.batch_max_wait.total_seconds(),
            settings.batch_size,
        )
        self._idle_token: Document | None = None
        # The newest planned position not saved yet (token, when its event happened).
        self._unsaved: tuple[Document, dt.datetime | None] | None = None
        self._last_save = time.monotonic()
        self._measurements = measurements
        # Each tasks collection's UUID as recorded in this term, and when to look again.
        self._tasks_uuids: dict[str, Any] = {}
        self._tasks_check_at = 0.0

    def stop(self) -> None:
        """Ask the planner to finish, interrupting its wait for events."""
        super().stop()
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(("stop", None))

    def request_reconciliation(self) -> None:
        """Reconcile every task not marked reconciled, once the stream is open."""
        self._reconcile_requested.set()

    def step(self) -> float:
        try:
            return self._step()
        except PlanAgainError:
            # The lease lapsed during a planning pass (it resumes once renewed), or the
            # tasks collection was recreated: the batch is kept and planned again.
            return 0.0

    def _step(self) -> float:
        if not self._is_leader():
            # The lease lapsed locally (a renewal slower than leader_ttl, or the
            # database out of reach): write nothing until it is renewed. What was taken
            # stays in the batcher; if another instance took over, the election retires
            # this planner and the successor replays from the saved position.
            return min(LAPSE_PAUSE, self._settings.leader_heartbeat.total_seconds())
        if time.monotonic() >= self._tasks_check_at:
            self._check_tasks_collections()
        busy = self._reconcile_step() or self._recheck_step()
        due = self._batcher.due_at()
        timeout = self._settings.leader_heartbeat.total_seconds()
        recheck_in = self._rechecker.seconds_until_due()
        if recheck_in is not None:
            timeout = min(timeout, recheck_in)
        if self._position() is not None:
            timeout = min(timeout, self._save_due_in())
        if busy:
            timeout = 0.0  # plan live events between scan batches
        elif due is not None:
            timeout = min(timeout, max(0.0, due - time.monotonic()))
        self._take_events(timeout)
        if self.stopping.is_set():
            return 0.0
        # A reconciliation about to start (requested, the stream open) goes first: its
        # scan ids must be known before live events are planned (Reconciler.scanning).
        starting = self._reconcile_requested.is_set() and self._stream_open.is_set()
        if self._batcher.is_due(time.monotonic()) and not starting:
            self._flush()
        if self._save_due_in() == 0.0:
            self._save_position()
        return 0.0

    def on_stop(self) -> None:
        # Saved though is_leader() is already false on a clean stop, so a successor
        # replays less: everything before the position has been planned all the same,
        # and the epoch fence refuses it once a successor has saved its own.
        position = self._position()
        if position is not None:
            try:
                self._save_token(*position)
            except PyMongoError as error:
                logger.warning("could not save the stream position when stopping: %s", error)

    def _take_events(self, timeout: float) -> None:
        """Wait up to ``timeout`` for an event, then take every one already queued, so
        the stream reader is never held back by a slow consumer for long."""
        # Every event removed from the queue is taken: the resume token saved after the
        # batch covers it, so one dropped here would never be planned.
        try:
            self._take(*self._events.get(timeout=timeout))
            for _ in range(self._settings.batch_size - 1):
                self._take(*self._events.get_nowait())
        except queue.Empty:
            pass

    def _take(self, kind: str, payload: Any) -> None:
        if kind == "event":
            self._batcher.add(
                payload["ns"]["coll"],
                payload["documentKey"]["_id"],
                deleted=payload["operationType"] == "delete",
                token=payload["_id"],
                now=time.monotonic(),
                cluster_time=payload.get("clusterTime"),
            )
        elif kind == "idle":
            self._idle_token = payload
        elif kind == "restarted":
            # The events taken are still planned, but no position of the old stream
            # is saved any more (see StreamReader._restart_from_now).
            self._unsaved = self._idle_token = None
            self._batcher.forget_position()

    def _reconcile_step(self) -> bool:
        """Advance a reconciliation by one batch; ``True`` while one is under way."""
        if self._reconcile_requested.is_set() and self._stream_open.is_set():
            self._reconcile_requested.clear()
            self._reconciliation = self._reconciler.run(self._plan_reconciled)
        if self._reconciliation is None:
            return False
        try:
            finished = next(self._reconciliation, None)
        except Exception:
            # Start over (from the checkpoint) after the loop's error pause.
            self._reconciliation = None
            self._reconcile_requested.set()
            raise
        if finished is None:  # interrupted: the lease lapsed, or stopping
            self._reconciliation = None
            if not self.stopping.is_set():
                self._reconcile_requested.set()  # resumed from its checkpoint
            return False
        if finished:
            self._reconciliation = None
        return not finished

    def _recheck_step(self) -> bool:
        """Advance a due recheck by one batch; ``True`` while one is under way."""
        if self._recheck is None:
            definition = self._rechecker.next_due()
            if definition is None:
                return False
            self._recheck = self._rechecker.run(definition, self._plan_reconciled)
        if self.stopping.is_set() or not self._is_leader():
            self._recheck = None
            return False
        try:
            finished = next(self._recheck, True)
        except Exception:
            self._recheck = None  # the next interval tries again
            raise
        if finished:
            self._recheck = None
        return not finished

    def _plan_reconciled(self, definition: TaskDefinition, ids: list[Any]) -> None:
        merged = self._plan(definition, ids, [])
        self._on_planned(definition)
        self._mark_unmatched(merged)

    def _flush(self) -> None:
        if self.stopping.is_set() or not self._is_leader():
            # Plan nothing without the lease; the batch is kept for when it is renewed
            # (see step). If this planner is retired instead, its position was not
            # saved past these events, so the next leader replays them.
            return
        batch = self._batcher.peek()
        planned: list[TaskDefinition] = []
        merged: list[_Merged] = []
        for collection, ids_by_key in batch.ids.items():
            ids = list(ids_by_key.values())
            deleted = batch.deleted_ids(collection)
            for definition in self._registry.for_collection(collection):
                merged += self._plan(definition, ids, deleted, batch.cluster_time)
                planned.append(definition)
        # The workers are woken before the records that stopped matching are marked:
        # what the merges made due is claimed meanwhile, a round trip sooner. (A claim
        # may come first in any case; marking changes nothing a claim reads.)
        for definition in planned:
            self._on_planned(definition)
        self._mark_unmatched(merged)
        if batch.token is not None:
            self._unsaved = (batch.token, batch.position_at)
        logger.debug("planned %d documents", len(batch))
        self._batcher.clear()
        self._idle_token = None

    def _plan(
        self, definition: TaskDefinition, ids: list[Any], deleted: list[Any], after: Any = None
    ) -> list[_Merged]:
        """Merge the records of ``ids``, reading their documents at or after the cluster
        time ``after`` (the newest event's); a document whose filter or projection fails
        on the server (a poison document) is found by bisection and parked, and the rest
        is merged. The parts merged, for ``_mark_unmatched``."""
        scan = self._reconciler.scanning.get(definition.collection)
        try:
            stamp = self._retry(
                lambda: self._tasks.merge(
                    definition, ids, epoch=self._epoch, after=after, scan=scan
                ),
                f"planning {definition.name}",
            )
            return [_Merged(definition, ids, deleted, stamp, after)]
        except OperationFailure as error:
            self._measurements.count("planning_failures", definition.name)
            if is_transient(error) or self.stopping.is_set():
                raise
            if error.code == NO_UNIQUE_INDEX:
                self._recreate_tasks_collection(definition.tasks_collection)
                raise PlanAgainError from error  # into the recreated collection
            if len(ids) > 1:
                half = len(ids) // 2
                gone = {id_key(i) for i in deleted}
                return [
                    merged
                    for part in (ids[:half], ids[half:])
                    for merged in self._plan(
                        definition, part, [i for i in part if id_key(i) in gone], after
                    )
                ]
            reason = str(error.details.get("errmsg") if error.details else error)
        self._measurements.count("poison_documents", definition.name)
        logger.error(
            "task %s: planning document %r fails on the server (%s); parked as failed, "
            "planning goes on",
            definition.name,
            ids[0],
            reason,
        )
        park = partial(
            self._tasks.record_planning_failure, definition, ids[0], reason,
            epoch=self._epoch, scan=self._reconciler.scanning.get(definition.collection),
        )  # fmt: skip
        self._retry(park, "recording a planning failure")
        return []

    def _check_tasks_collections(self) -> None:
        """Notice a tasks collection dropped (and perhaps created again by an instance
        starting, whose indexes then satisfy every ``$merge``) by its UUID: the records
        it held are gone, and only a reconciliation finds their work again. Looked at
        once a heartbeat; the ``$merge`` error of a dropped collection is met sooner."""
        self._tasks_check_at = time.monotonic() + self._settings.leader_heartbeat.total_seconds()
        for name in self._registry.tasks_collections:
            current = self._retry(partial(self._tasks.collection_uuid, name), "checking " + name)
            if current == UNKNOWN_UUID:
                continue  # only a failing $merge can tell
            known = self._tasks_uuids.get(name)
            if known is None:
                recorded = partial(self._globals.tasks_collections.recorded_uuid, name)
                known = self._retry(recorded, "checking " + name)
            if current is None or (known is not None and current != known):
                self._recreate_tasks_collection(name)
            elif known is None:
                self._record_tasks_uuid(name, current)
            else:
                self._tasks_uuids[name] = current

    def _record_tasks_uuid(self, name: str, uuid: Any) -> None:
        record = partial(
            self._globals.tasks_collections.record_uuid,
            name,
            uuid,
            epoch=self._epoch,
        )
        if not self._retry(record, f"recording the identity of {name}"):
            raise NotLeadingError  # a later leader checks it
        self._tasks_uuids[name] = uuid

    def _recreate_tasks_collection(self, tasks_collection: str) -> None:
        """The tasks collection was dropped (or the whole database was). Every task is
        reconciled, then its indexes are created again: the records that were waiting
        went with the collection, and only a scan of the source documents finds their
        work again (every matching document then runs once more, as for a new task:
        which versions had been handled went too). In that order: a deposed leader
        whose reset is refused leaves the collection as it is, for its successor's
        ``$merge`` to fail in turn."""
        logger.error(
            "%s was dropped: recreating its indexes and reconciling every task; matching "
            "documents run again",
            tasks_collection,
        )
        self._reset_reconciliation()
        self._retry(
            lambda: self._tasks.ensure_indexes(tasks_collection),
            f"recreating the indexes of {tasks_collection}",
        )
        uuid = self._retry(partial(self._tasks.collection_uuid, tasks_collection), "checking")
        self._record_tasks_uuid(tasks_collection, uuid)

    def _reset_reconciliation(self) -> None:
        """Have every task reconciled from the beginning (a new generation), once the
        current pass is over."""
        if not self._retry(
            lambda: self._globals.reconciliation.reset(epoch=self._epoch),
            "resetting reconciliation",
        ):
            raise NotLeadingError  # a later leader owns the planner's state
        self.request_reconciliation()

    def _mark_unmatched(self, merged: list[_Merged]) -> None:
        """The second half of each planning pass (see ``TaskStore.mark_unmatched``). A
        failure leaves the batch to be planned again, both halves."""
        for part in merged:
            mark = partial(
                self._tasks.mark_unmatched, part.definition, part.ids, part.deleted, part.stamp,
                epoch=self._epoch, after=part.after,
            )  # fmt: skip
            self._retry(mark, f"planning {part.definition.name}")

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` retried on transient errors, each try only while this planner leads
        (``NotLeadingError`` otherwise): a deposed leader stops at once instead of
        retrying a planning write for up to 30 s. (Its writes are fenced by the epoch
        all the same.)"""

        def attempt() -> T:
            if not self._is_leader():
                raise NotLeadingError
            return fn()

        return call_with_retry(attempt, self.stopping, what=what)

    def _save_due_in(self) -> float:
        """Seconds until the position may be saved again (0: now)."""
        since = time.monotonic() - self._last_save
        return max(0.0, self._settings.leader_heartbeat.total_seconds() - since)

    def _position(self) -> tuple[Document, dt.datetime | None] | None:
        """The newest unsaved position every event before which is planned: the
        stream's idle position once no event taken waits in a batch, else the last
        planned batch's; ``None`` when there is nothing new to save."""
        if not len(self._batcher) and self._idle_token is not None:
            return self._idle_token, None
        return self._unsaved

    def _save_position(self) -> None:
        position = self._position()
        if position is None or not self._is_leader():
            return
        self._save_token(*position)
        self._unsaved = None
        if not len(self._batcher):
            self._idle_token = None

    def _save_token(self, token: Document, position_at: dt.datetime | None = None) -> None:
        def save() -> Saved:
            return call_with_retry(
                lambda: self._globals.position.save(
                    token, self._settings.instance_id, position_at, epoch=self._epoch
                ),
                self.stopping,
                what="saving the resume token",
            )

        saved = save()
        if saved is Saved.WENT_BACK and not self.stopping.is_set():
            # Reconciliation reset first (it stamps this term again), then the position:
            # a failure in between leaves the next save to find the same.
            logger.warning(WENT_BACK_MESSAGE)
            self._reset_reconciliation()
            saved = save()
        self._last_save = time.monotonic()
        if saved is Saved.REFUSED:
            # A later leader has saved its own position: this one is deposed.
            logger.warning("a later leader saves the stream position; this planner stops")
            self.stop()
