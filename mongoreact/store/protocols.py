"""What the worker side needs of the task store, as Protocols.

``TaskStore`` implements them; tests substitute in-memory stores that type-check
against the same contracts (``tests/unit/fake_store.py``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Protocol

from pymongo.client_session import ClientSession

from ..records import BatchClaim, ClaimedTask, Finalized, RunEnd

if TYPE_CHECKING:
    from ..config.definition import TaskDefinition

Document = dict[str, Any]


class LeaseStore(Protocol):
    """Renews the leases of claimed records."""

    def renew(self, claims: list[ClaimedTask], lease: dt.timedelta) -> set[Any]:
        """Extend the leases; the claim ids whose records are no longer theirs."""
        ...


class WorkStore(LeaseStore, Protocol):
    """Claims records, finalizes runs and reads their source documents."""

    def claim_many(
        self,
        tasks_collection: str,
        tasks: list[str],
        *,
        now: dt.datetime,
        instance_id: str,
        lease: dt.timedelta,
        limit: int,
        spread: int = 1,
        triggers: list[str] | None = None,
    ) -> BatchClaim:
        """Take up to ``limit`` of the most overdue runnable records of ``tasks``."""
        ...

    def unclaim_many(self, claims: list[ClaimedTask]) -> None:
        """Give claimed records back unrun."""
        ...

    def fetch_sources(
        self, definition: TaskDefinition, records: list[Document], *, after: Any = None
    ) -> dict[Any, Document]:
        """The late-binding read of several records of one task, by source ``_id``."""
        ...

    def finalize(
        self,
        claim: ClaimedTask,
        definition: TaskDefinition,
        end: RunEnd,
        session: ClientSession | None = None,
    ) -> Finalized:
        """Record how a run ended if the claim still owns its record."""
        ...

    def finalize_many(
        self, requests: list[tuple[ClaimedTask, TaskDefinition, RunEnd]]
    ) -> list[Finalized]:
        """``finalize`` for several claims at once."""
        ...

    def fetch_source(
        self,
        definition: TaskDefinition,
        record: Document,
        *,
        projection: Any = None,
        session: ClientSession | None = None,
        after: Any = None,
    ) -> Document | None:
        """The source document if it still qualifies for ``record``'s run."""
        ...
