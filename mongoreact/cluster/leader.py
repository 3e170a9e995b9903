"""Leader election: one instance in the cluster holds the lease and plans.

Every instance runs this loop. Each heartbeat it tries to take or renew the lease in
the globals collection; the server decides with its own clock. Locally, leadership is
trusted only until ``leader_ttl`` after the start of the last successful renewal, so a
leader cut off from the database stops planning before anyone else can take over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .._retry import call_with_retry, log_failure
from .._threads import Loop
from ..clock import ServerClock
from ..config.settings import Settings
from ..monitoring.measurements import Measurements
from ..store.globals import GlobalsStore, Lease

logger = logging.getLogger(__name__)


class LeaderElector(Loop):
    """Keeps trying to be the leader; calls back when that changes."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: GlobalsStore,
        clock: ServerClock,
        hello: Callable[[], dict[str, object]],
        on_elected: Callable[[], None],
        on_deposed: Callable[[], None],
        on_heartbeat: Callable[[bool], None] = lambda leading: None,
        measurements: Measurements | None = None,
    ) -> None:
        self._measurements = measurements or Measurements()
        super().__init__(f"mongoreact-leader-{settings.instance_id}")
        self._settings = settings
        self._store = store
        self._clock = clock
        self._hello = hello
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._on_heartbeat = on_heartbeat
        self._leading = False
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self.epoch = 0
        self._renewals = 0  # the lease document's renewal count this instance last saw
        self._reset_owed = False  # a reconciliation owed after the lease went back

    def is_leader(self) -> bool:
        """Whether this instance may plan right now."""
        with self._lock:
            return self._leading and time.monotonic() < self._valid_until

    def step(self) -> float:
        heartbeat = self._settings.leader_heartbeat.total_seconds()
        ttl = self._settings.leader_ttl.total_seconds()
        asked = time.monotonic()
        try:
            self._clock.sync(self._hello)
            lease = call_with_retry(
                lambda: self._store.lease.acquire(
                    self._settings.instance_id, self._settings.leader_ttl
                ),
                self.stopping,
                what="leader election",
                give_up_after=heartbeat,
            )
        except Exception:
            if self.is_leader() or not self._leading:
                raise
            self._depose("the lease could not be renewed before it expired")
            raise
        if self.stopping.is_set():
            return 0.0
        if lease.holder == self._settings.instance_id:
            lease = self._checked_term(lease)
        if lease.holder == self._settings.instance_id:
            if time.monotonic() >= asked + ttl:
                # The renewal took longer than the lease lasts: what it granted may have
                # lapsed already, so it proves nothing. Renew again at once rather than
                # start a planner that could not plan.
                logger.warning("the leader lease renewal took longer than leader_ttl; retrying")
                return 0.0
            with self._lock:
                # A lease that lapsed locally while this renewal was in flight counts as
                # newly won: the planner may have seen the lapse and paused. Judged now,
                # under the lock that is_leader() takes: had any is_leader() call seen
                # the lapse, now is past _valid_until too.
                same_term = self._leading and lease.epoch == self.epoch
                # A new epoch is a new term even without a local lapse (the lease
                # document was deleted, someone else may have led in between).
                newly = not same_term or time.monotonic() >= self._valid_until
                self._valid_until = asked + ttl
                self._leading = True
                self.epoch = lease.epoch
            if newly and same_term:
                # The epoch changes with every change of holder: nobody else led while
                # the lease lapsed here (renewals slower than leader_ttl, an overloaded
                # server). Planning resumes where it paused; nothing is thrown away.
                logger.warning(
                    "%s renewed the leader lease after it lapsed locally (renewals slower "
                    "than leader_ttl); nobody else led meanwhile, planning resumes",
                    self._settings.instance_id,
                )
                self._measurements.count("leader_lapses")
                self._on_elected()
            elif newly:
                self._measurements.count("leader_elections")
                logger.info(
                    "%s became the leader (epoch %d)", self._settings.instance_id, lease.epoch
                )
                self._on_elected()
        elif self._leading:
            self._depose(f"{lease.holder} holds the lease")
        self._on_heartbeat(self.is_leader())
        return heartbeat

    def _checked_term(self, lease: Lease) -> Lease:
        """``lease``, just taken or renewed by this instance, moved to a new epoch when
        this is not a plain renewal of the current term: won (not renewed), retaking an
        epoch it already led in (a restored lease document naming it: others may have
        led in between, and the records they planned carry later epochs), or renewed
        with a renewal count already seen (the document went back under this leader:
        restored from a backup). In the last case every task is reconciled too: the
        restored planner state may have forgotten a reconciliation owed."""
        renewed = self._leading and lease.epoch == self.epoch
        # Gone back: a count already seen in this term, or an epoch older than it.
        went_back = self._leading and (
            lease.epoch < self.epoch or (renewed and lease.renewals <= self._renewals)
        )
        if renewed and not went_back:
            self._renewals = lease.renewals
            return lease
        if went_back:
            logger.warning(
                "the leader lease document went back under this leader (epoch %d, renewal "
                "%d, after epoch %d, renewal %d: restored from a backup?); starting a new "
                "term and reconciling every task",
                lease.epoch, lease.renewals, self.epoch, self._renewals,
            )  # fmt: skip
            # Owed until written: a failure on the way (the raise, the reset) leaves it
            # for the next round, which takes the new-term path again.
            self._reset_owed = True
        moved = self._above_every_fence(lease)
        if self._reset_owed and moved.holder == self._settings.instance_id:
            self._reset_owed = not self._store.reconciliation.reset(epoch=moved.epoch)
        self._renewals = moved.renewals
        return moved

    def _above_every_fence(self, lease: Lease) -> Lease:
        """A newly won ``lease`` whose epoch is not above every epoch already written
        to the globals collection and every epoch this instance led in (its document
        was deleted or restored, the server's clock went back) is moved above them, and
        above the server's clock in ms (records planned by leaders in between carry
        epochs the globals may no longer show); a lease lost meanwhile is returned as
        the server has it."""
        highest = max(self._store.lease.highest_epoch(), self.epoch)
        if lease.epoch <= highest:
            raised = self._raise(lease.epoch, highest)
            if raised is None:
                return self._store.lease.acquire(
                    self._settings.instance_id, self._settings.leader_ttl
                )
            lease = raised
        # From now on every fenced write of an older leader to the planner's state is
        # refused, even before this leader has saved anything itself.
        self._store.position.enter_epoch(lease.epoch)
        return lease

    def refence(self) -> bool:
        """While leading, after a planner of this term stopped because a fenced write
        was refused: if a later epoch was written meanwhile (the lease document went
        back to this instance's term under it, the globals restored from a backup
        while another leader had written), move the lease above it and start a new
        term that reconciles every task (the restored state may have lost a
        reconciliation owed). ``False`` when no later epoch is there; ``True`` when a
        new term started, or the lease turned out to be lost (deposed). Called from
        the election's thread (``on_heartbeat``)."""
        highest = self._store.lease.highest_epoch()
        if highest <= self.epoch:
            return False
        raised = self._raise(self.epoch, highest)
        if raised is None:  # the lease changed hands meanwhile: the next round sees it
            self._depose("the lease changed while its epoch was being raised")
            return True
        self._store.position.enter_epoch(raised.epoch)
        self._store.reconciliation.reset(epoch=raised.epoch)
        with self._lock:
            self.epoch = raised.epoch
        self._measurements.count("leader_elections")
        self._on_elected()
        return True

    def _raise(self, epoch: int, highest: int) -> Lease | None:
        """The lease this instance holds in ``epoch`` moved above ``highest``, the
        highest epoch written; ``None`` if it is not this instance's in ``epoch``."""
        raised = self._store.lease.raise_epoch(self._settings.instance_id, epoch, highest)
        if raised is not None:
            logger.warning(
                "the leader lease had epoch %d, not above the %d already written (its "
                "document was deleted or restored?); moved to %d",
                epoch, highest, raised.epoch,
            )  # fmt: skip
        return raised

    def _depose(self, reason: str) -> None:
        self._measurements.count("leader_lock_losses")
        with self._lock:
            self._leading = False
        logger.warning("%s lost the leadership: %s", self._settings.instance_id, reason)
        self._on_deposed()

    def on_stop(self) -> None:
        if not self._leading:
            return
        with self._lock:
            self._leading = False
        self._on_deposed()
        try:
            self._store.lease.release(self._settings.instance_id)
        except Exception as error:
            log_failure(logger, error, "could not release the leader lease; it expires by itself")
