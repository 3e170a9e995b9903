"""``process_in_batches``: walk a cursor and act on its documents in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pymongo.collection import Collection

T = TypeVar("T")
Document = dict[str, Any]


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to ``size`` items."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def process_in_batches(
    collection: Collection[Document],
    query: Document | Sequence[Document],
    transform: Callable[[Document], T | Sequence[T] | None],
    execute_batch: Callable[[list[T]], object],
    *,
    batch_size: int = 1000,
    projection: Document | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """Read documents (a query, or a pipeline when ``query`` is a list), turn each into
    zero, one or several operations, and hand them to ``execute_batch`` in lists of up to
    ``batch_size``. Returns ``(documents processed, operations executed)``.

    ``should_stop`` is asked before each document; the cursor reads ``batch_size`` at a
    time, so memory stays bounded whatever the collection's size.
    """
    if isinstance(query, Sequence):
        cursor: Iterable[Document] = collection.aggregate(list(query), batchSize=batch_size)
    else:
        cursor = collection.find(query, projection, batch_size=batch_size)
    processed = executed = 0
    pending: list[T] = []
    for document in cursor:
        if should_stop is not None and should_stop():
            break
        processed += 1
        result = transform(document)
        if result is None:
            continue
        if isinstance(result, (list, tuple)):
            pending.extend(result)
        else:
            pending.append(result)  # type: ignore[arg-type]
        while len(pending) >= batch_size:
            execute_batch(pending[:batch_size])
            executed += batch_size
            pending = pending[batch_size:]
    if pending:
        execute_batch(pending)
        executed += len(pending)
    return processed, executed
