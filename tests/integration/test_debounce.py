"""Debounce: rapid changes collapse into one run, and max_debounce bounds the wait."""

from __future__ import annotations

import threading
import time

from pymongo.database import Database

from .conftest import EngineFactory
from .helpers import Doc, Recorder, record, start, wait_until


def test_rapid_changes_to_one_document_collapse_into_one_run(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(
        task="recalc", collection="reviews", handler=recorder, watch_projection={"stars": 1},
        debounce="600ms",
    )  # fmt: skip
    start(engine, db)
    db.reviews.insert_one({"_id": "r1", "stars": 0})
    for stars in range(1, 6):
        db.reviews.update_one({"_id": "r1"}, {"$set": {"stars": stars}})
    wait_until(lambda: record(db, "reviews", "r1").get("status") == "completed")
    assert recorder.count("r1") == 1
    assert recorder.runs[0]["watched"] == {"stars": 5}


def test_the_run_waits_for_the_debounce(make_engine: EngineFactory, db: Database[Doc]) -> None:
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(task="recalc", collection="reviews", handler=recorder, debounce="1s")
    start(engine, db)
    written = time.monotonic()
    db.reviews.insert_one({"_id": "r1"})
    wait_until(lambda: recorder.count("r1") == 1)
    assert time.monotonic() - written >= 0.9


def test_max_debounce_runs_a_document_that_never_stops_changing(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    # The document changes every 100 ms, more often than the 500 ms debounce, forever.
    # Without max_debounce it would never run; with 1.5 s it runs while still changing.
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(
        task="recalc", collection="reviews", handler=recorder, watch_projection={"n": 1},
        debounce="500ms", max_debounce="1500ms",
    )  # fmt: skip
    start(engine, db)
    db.reviews.insert_one({"_id": "r1", "n": 0})
    stop = threading.Event()
    n = 0
    deadline = time.monotonic() + 10
    while not recorder.count("r1") and time.monotonic() < deadline:
        n += 1
        db.reviews.update_one({"_id": "r1"}, {"$set": {"n": n}})
        stop.wait(0.1)
    assert recorder.count("r1") >= 1, "the document never ran while it kept changing"
    assert n < 40  # about 1.5 s of changes, well before the 10 s deadline


def test_debounce_zero_runs_promptly(make_engine: EngineFactory, db: Database[Doc]) -> None:
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(task="now", collection="events", handler=recorder, debounce=0)
    start(engine, db)
    db.events.insert_one({"_id": "e1"})
    wait_until(lambda: recorder.count("e1") == 1, timeout=3)
