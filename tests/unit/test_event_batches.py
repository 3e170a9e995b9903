"""The planner's batching window: sliding, capped by max wait and by size."""

from __future__ import annotations

import pytest
from bson import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from mongoreact.planning.event_batches import EventBatcher, id_key

TOKEN = {"_data": "x"}


def test_an_empty_batch_is_never_due() -> None:
    batcher = EventBatcher(0.05, 0.5, 10)
    assert batcher.due_at() is None and not batcher.is_due(1e9)


def test_an_event_after_a_quiet_spell_is_due_at_once() -> None:
    batcher = EventBatcher(0.05, 0.5, 1000)
    batcher.add("c", 1, deleted=False, token=TOKEN, now=10.0)
    assert batcher.due_at() == 10.0  # the first event ever
    batcher.clear()
    batcher.add("c", 2, deleted=False, token=TOKEN, now=10.06)
    assert batcher.due_at() == 10.06  # a window's length after the one before
    batcher.clear()
    batcher.add("c", 3, deleted=False, token=TOKEN, now=10.07)
    assert batcher.due_at() == pytest.approx(10.12)  # close behind it: a window opens


def test_the_window_slides_with_each_event_up_to_the_max_wait() -> None:
    batcher = EventBatcher(0.05, 0.5, 1000)
    batcher.add("c", 0, deleted=False, token=TOKEN, now=9.99)
    batcher.clear()  # a busy moment: the next event follows closely
    batcher.add("c", 1, deleted=False, token=TOKEN, now=10.0)
    assert batcher.due_at() == 10.05
    batcher.add("c", 2, deleted=False, token=TOKEN, now=10.04)
    assert batcher.due_at() == 10.09
    for i in range(100):
        batcher.add("c", i, deleted=False, token=TOKEN, now=10.0 + i * 0.04)
    assert batcher.due_at() == 10.5  # the max wait since the first event


def test_a_full_batch_is_due_at_once() -> None:
    batcher = EventBatcher(1.0, 5.0, 3)
    batcher.add("c", -1, deleted=False, token=TOKEN, now=0.9)
    batcher.clear()  # a busy moment: the next events do not follow a quiet spell
    for i in range(2):
        batcher.add("c", i, deleted=False, token=TOKEN, now=1.0)
    assert not batcher.is_due(1.0)  # one short of full: the window runs
    batcher.add("c", 2, deleted=False, token=TOKEN, now=1.0)
    assert batcher.is_due(1.0)  # exactly full (not only above it): due at once


def test_repeated_changes_collapse_and_the_last_operation_wins() -> None:
    batcher = EventBatcher(1.0, 5.0, 100)
    batcher.add("orders", "a", deleted=False, token={"n": 1}, now=0)
    batcher.add("orders", "a", deleted=True, token={"n": 2}, now=0)
    batcher.add("orders", "b", deleted=True, token={"n": 3}, now=0)
    batcher.add("orders", "b", deleted=False, token={"n": 4}, now=0)
    batcher.add("users", "a", deleted=False, token={"n": 5}, now=0)
    batch = batcher.peek()
    assert len(batch) == 3
    assert batch.deleted_ids("orders") == ["a"]
    assert batch.deleted_ids("users") == []
    assert batch.token == {"n": 5}
    batcher.clear()
    assert len(batcher) == 0 and batcher.due_at() is None


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# BSON strings are UTF-8 (no lone surrogates); keys cannot hold NUL.
TEXT = st.text(st.characters(exclude_categories=["Cs"]))
KEYS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
BSON_IDS = st.one_of(INT64, TEXT, st.dictionaries(KEYS, INT64))


@given(st.lists(BSON_IDS))
def test_any_bson_id_has_a_stable_key(ids: list[object]) -> None:
    batcher = EventBatcher(1.0, 5.0, 10**6)
    for doc_id in ids + ids:
        batcher.add("c", doc_id, deleted=False, token=TOKEN, now=0)
    assert len(batcher) == len({id_key(i) for i in ids})


def test_forgetting_the_position_keeps_the_documents_but_no_token() -> None:
    """Mutation testing: an empty token instead of none would be saved as a position."""
    batcher = EventBatcher(0.05, 0.5, 10)
    batcher.add("c", 1, deleted=False, token=TOKEN, now=1.0, cluster_time=Timestamp(5, 1))
    assert batcher.peek().position_at is not None
    batcher.forget_position()
    batch = batcher.peek()
    assert batch.token is None and batch.position_at is None
    assert len(batcher) == 1
