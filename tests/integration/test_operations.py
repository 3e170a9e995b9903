"""What operators do to a running cluster: drop the tasks collection, a watched
collection, or the whole database. Planning recovers by itself and nothing waiting is
lost (docs/reliability.md, "Operations")."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from mongoreact import ReactiveTasks

from .conftest import EngineFactory
from .helpers import Doc, Recorder, start, wait_until


def test_dropping_the_tasks_collection_recreates_it_and_loses_nothing(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: every new document was parked as failed ("Cannot find index to
    verify that join fields will be unique"), and a restart did not recover them."""
    recorder = Recorder(fetch=False)
    engine = make_engine(concurrency=0)  # nothing runs: records stay pending
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "waiting"})
    wait_until(lambda: db.orders_tasks.count_documents({"sourceDocId": "waiting"}) == 1)
    db.orders_tasks.drop()  # the waiting record goes with it
    db.orders.insert_one({"_id": "new"})
    wait_until(
        lambda: db.orders_tasks.count_documents({"status": "pending"}) == 2,
        timeout=15,
        message="both documents pending again",
    )
    assert db.orders_tasks.count_documents({"status": "failed"}) == 0
    names = {index["name"] for index in db.orders_tasks.list_indexes()}
    assert {"mongoreact_task_source", "mongoreact_poll"} <= names


def test_a_tasks_collection_dropped_and_created_again_is_noticed(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test): a deposed leader that met the ``$merge``
    error recreated the indexes, its reset of reconciliation was refused, and the
    successor's merges then succeeded: nobody reconciled, the waiting record was lost.
    An instance starting after the drop recreates the indexes the same way. No new
    document is written here: only the collection's new identity can tell."""
    engine = make_engine(concurrency=0)
    engine.register(task="sync", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "waiting"})
    wait_until(lambda: db.orders_tasks.count_documents({"sourceDocId": "waiting"}) == 1)
    db.orders_tasks.drop()
    db.orders_tasks.create_index(
        [("task", 1), ("sourceDocId", 1)], name="mongoreact_task_source", unique=True
    )
    wait_until(
        lambda: db.orders_tasks.count_documents({"sourceDocId": "waiting"}) == 1,
        timeout=15,
        message="the waiting record planned again",
    )


def test_a_tasks_collection_dropped_while_every_instance_was_down_is_noticed(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: ``prepare`` recreates the indexes of a dropped tasks collection at
    start, so no ``$merge`` ever failed and the waiting records were gone for good."""
    first = make_engine(concurrency=0)
    first.register(task="sync", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(first, db)
    db.orders.insert_one({"_id": "waiting"})
    wait_until(lambda: db.orders_tasks.count_documents({"sourceDocId": "waiting"}) == 1)
    wait_until(
        lambda: db[first.settings.globals_collection].count_documents(
            {"_id": "tasks-collection:orders_tasks"}
        ),
        message="the tasks collection's identity recorded",
    )
    first.stop()
    db.orders_tasks.drop()
    second = make_engine(concurrency=0)
    second.register(task="sync", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(second, db)
    wait_until(
        lambda: db.orders_tasks.count_documents({"sourceDocId": "waiting"}) == 1,
        timeout=15,
        message="the waiting record planned again",
    )


def test_dropping_a_watched_collection_marks_its_records_gone(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression: the records of a dropped collection stayed matched for ever (and so
    were never cleaned up)."""
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(engine, db)
    db.orders.insert_many([{"_id": i} for i in range(5)])
    wait_until(lambda: db.orders_tasks.count_documents({"status": "completed"}) == 5)
    db.orders.drop()
    wait_until(
        lambda: (
            db.orders_tasks.count_documents({"matched": False, "sourceDeletedAt": {"$ne": None}})
            == 5
        ),
        timeout=15,
        message="every record marked gone",
    )


def test_dropping_the_database_is_survived(
    make_engine: EngineFactory,
    db: Database[Doc],
    mongo_client: MongoClient[Doc],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: the invalidate event after dropDatabase reached the planner as a
    document event and failed with KeyError('ns'), logged at ERROR."""
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "before"})
    wait_until(lambda: recorder.count("before") == 1)
    with caplog.at_level(logging.WARNING, logger="mongoreact"):
        mongo_client.drop_database(db.name)
        db.orders.insert_one({"_id": "after"})
        wait_until(lambda: recorder.count("after") == 1, timeout=20, message="planning again")
    assert not [r for r in caplog.records if "KeyError" in r.getMessage() or r.exc_info]
    assert recorder.count("before") == 1  # its source is gone: nothing to run again


def test_dropping_the_cron_collection_recreates_the_schedules(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    runs: list[int] = []
    engine = make_engine()
    engine.cron_task("tick", "200ms", lambda: runs.append(1))
    engine.start()
    wait_until(lambda: runs, message="a first run")
    db["_mongoreact_cron"].drop()
    seen = len(runs)
    wait_until(lambda: len(runs) >= seen + 2, timeout=15, message="runs after the drop")
    assert db["_mongoreact_cron"].count_documents({"_id": "tick"}) == 1


def test_a_deleted_spec_is_published_again(
    make_engine: EngineFactory, db: Database[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutation testing: an instance that no longer found its published spec (an
    operator deleted it, or a restore predates it) did not have to publish it again."""
    monkeypatch.setattr("mongoreact.cluster.catalogue.SPEC_TOUCH_INTERVAL", 0.2)
    engine = make_engine()
    engine.register(task="t", collection="orders", handler=Recorder(fetch=False), debounce=0)
    start(engine, db)
    assert db["_mongoreact_globals"].delete_one({"_id": "task:t"}).deleted_count == 1
    wait_until(
        lambda: db["_mongoreact_globals"].find_one({"_id": "task:t"}), timeout=10,
        message="the spec published again",
    )  # fmt: skip


def test_a_globals_restore_does_not_bring_an_old_definition_back(
    make_engine: EngineFactory,
    db: Database[Doc],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Restoring the globals collection from a backup taken before a deploy brought the
    old published definition back, and nothing published the new one again: the
    cluster planned with the old filter for good."""
    monkeypatch.setattr("mongoreact.cluster.catalogue.SPEC_TOUCH_INTERVAL", 0.2)
    old = make_engine(instance_id="v1")
    old.register(task="t", collection="orders", handler=Recorder(fetch=False), debounce=0,
                 filter={"kind": "a"})  # fmt: skip
    start(old, db)
    backup = list(db["_mongoreact_globals"].find())
    assert old.stop(timeout=10)
    recorder = Recorder(fetch=False)
    new = make_engine(instance_id="v2")
    new.register(task="t", collection="orders", handler=recorder, debounce=0,
                 filter={"kind": {"$in": ["a", "b"]}})  # fmt: skip
    start(new, db)
    db["_mongoreact_globals"].delete_many({})
    db["_mongoreact_globals"].insert_many(backup)
    spec = {"_id": "task:t"}
    wait_until(
        lambda: "$in" in (db["_mongoreact_globals"].find_one(spec) or {}).get("filter", ""),
        message="the new definition published again",
    )
    db.orders.insert_one({"_id": "b1", "kind": "b"})
    wait_until(lambda: recorder.count("b1") == 1, timeout=15, message="planned with it")
    # Told apart by its version and trigger, without an error on the way.
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("mongoreact")]


def test_a_lease_whose_document_went_back_under_its_holder_moves_above_the_later_epochs(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test, 2026-12-07 CI): the lease document restored
    from a backup still named the running leader, with the epoch of its term, while a
    leader in between had written a later epoch into the planner's state and records.
    Every fenced write of the leader was refused (the checkpoint retried many times a
    second, the planner restarted in the same term every heartbeat) and nothing new was
    planned. Now the leader moves its lease above the later epoch and plans again."""
    engine, recorder = _first_version_handled(make_engine, db)
    term = int((db["_mongoreact_globals"].find_one({"_id": "leader"}) or {})["epoch"])
    later = term + 1_000_000
    # What a leader in between wrote: the planner's state and the record.
    db["_mongoreact_globals"].update_one({"_id": "planner"}, {"$set": {"leaderEpoch": later}})
    db.orders_tasks.update_one({"sourceDocId": 1}, {"$set": {"planEpoch": later}})
    db.orders.update_one({"_id": 1}, {"$set": {"v": 2}})
    wait_until(lambda: recorder.count(1) == 2, timeout=15, message="the second version handled")
    lease = db["_mongoreact_globals"].find_one({"_id": "leader"}) or {}
    assert lease["instanceId"] == engine.instance_id and lease["epoch"] > later


def test_a_newer_deploys_definition_is_not_taken_for_a_restored_older_one(
    make_engine: EngineFactory,
    db: Database[Doc],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mutation testing: an instance that republishes its definition whenever the stored
    one differs (reading the stored ``handler_version`` wrong) would overwrite a newer
    deployment's definition with its own, older one. A lower stored version is a
    restore and is published again; a higher one is a newer deploy and is left alone."""
    monkeypatch.setattr("mongoreact.cluster.catalogue.SPEC_TOUCH_INTERVAL", 0.2)
    engine = make_engine()
    engine.register(task="t", collection="orders", handler=Recorder(fetch=False), debounce=0,
                    evolution={"handler_version": 2})  # fmt: skip
    start(engine, db)
    specs, spec = db["_mongoreact_globals"], {"_id": "task:t"}

    def version_after_a_touch() -> int:
        specs.update_one(spec, {"$unset": {"seenAt": 1}})
        wait_until(lambda: "seenAt" in (specs.find_one(spec) or {}), message="touched again")
        return int((specs.find_one(spec) or {})["handlerVersion"])

    specs.update_one(spec, {"$set": {"handlerVersion": 1}})  # restored from an older backup
    wait_until(lambda: (specs.find_one(spec) or {}).get("handlerVersion") == 2,
               message="published again")  # fmt: skip
    specs.update_one(spec, {"$set": {"handlerVersion": 3}})  # a newer deploy published
    caplog.clear()
    assert version_after_a_touch() == 3
    assert version_after_a_touch() == 3
    assert not [r for r in caplog.records if "publishing it again" in r.getMessage()]


def test_a_planner_state_gone_back_under_the_leader_is_reconciled_again(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test, 2026-12-07): the globals restored from a
    backup of an earlier term while a leader ran took away the reconciliation that a
    lost history had made owed; the leader saved its position over the restored
    document and nothing reconciled again. Now a save that finds the planner's state
    older than the term reconciles every task."""
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(engine, db)
    db.orders.insert_one({"_id": "a"})
    wait_until(lambda: recorder.count("a") == 1, message="handled once")
    planner = db["_mongoreact_globals"].find_one({"_id": "planner"}) or {}
    generation = planner.get("reconcileGeneration", 0)
    db.orders_tasks.delete_many({})  # work the restored state no longer says is owed
    older = {**planner, "leaderEpoch": planner["leaderEpoch"] - 1}  # an earlier term's
    db["_mongoreact_globals"].replace_one({"_id": "planner"}, older)
    db.orders.insert_one({"_id": "b"})  # a new position to save
    wait_until(lambda: recorder.count("a") == 2, timeout=15, message="reconciled again")
    planner = db["_mongoreact_globals"].find_one({"_id": "planner"}) or {}
    assert planner["reconcileGeneration"] > generation


def test_a_leader_retaking_its_own_restored_lease_moves_above_the_leaders_in_between(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test): a restored lease document named an instance
    that had been deposed meanwhile, in its old epoch. It took the lease back in that
    epoch; the leaders in between had planned records with later epochs, so its merges
    of newer versions were silently fenced off and those versions never ran."""
    engine, recorder = _first_version_handled(make_engine, db)
    globals_ = db["_mongoreact_globals"]
    backup = globals_.find_one({"_id": "leader"}) or {}
    term = int(backup["epoch"])
    far = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    # Another leader takes over and plans the record in its own, later epoch.
    globals_.update_one({"_id": "leader"}, {"$set": {"instanceId": "ghost", "epoch": term + 10,
                                                     "expiresAt": far}})  # fmt: skip
    wait_until(lambda: not engine.is_leader, message="deposed")
    db.orders_tasks.update_one({"sourceDocId": 1}, {"$set": {"planEpoch": term + 10}})
    # The lease document is restored from the backup: this instance, its old epoch.
    globals_.replace_one({"_id": "leader"}, {**backup, "expiresAt": dt.datetime(2000, 1, 1)})
    wait_until(lambda: engine.is_leader, message="leading again")
    db.orders.update_one({"_id": 1}, {"$set": {"v": 2}})
    wait_until(lambda: recorder.count(1) == 2, timeout=15, message="the second version handled")
    assert int((globals_.find_one({"_id": "leader"}) or {})["epoch"]) > term + 10


def test_a_lease_document_restored_under_its_running_leader_starts_a_new_term(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test): the lease document was deleted, another
    instance led and planned, and the globals were restored, all between two renewals
    of the running leader. It renewed the restored document as if nothing had
    happened, in its old epoch, and its merges of newer versions were silently fenced
    off by the records planned in between. The renewal count tells: it went back."""
    engine, recorder = _first_version_handled(make_engine, db)
    globals_ = db["_mongoreact_globals"]
    backup = globals_.find_one({"_id": "leader"}) or {}
    term, renewals = int(backup["epoch"]), int(backup["renewals"])
    wait_until(
        lambda: int((globals_.find_one({"_id": "leader"}) or {})["renewals"]) > renewals + 1,
        message="renewed twice since the backup",
    )
    # What the instance that led in between planned, then the restore.
    db.orders_tasks.update_one({"sourceDocId": 1}, {"$set": {"planEpoch": term + 10}})
    far = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
    globals_.replace_one({"_id": "leader"}, {**backup, "expiresAt": far})
    db.orders.update_one({"_id": 1}, {"$set": {"v": 2}})
    wait_until(lambda: recorder.count(1) == 2, timeout=15, message="the second version handled")
    lease = globals_.find_one({"_id": "leader"}) or {}
    assert lease["instanceId"] == engine.instance_id and int(lease["epoch"]) > term + 10


def test_a_restored_planner_state_without_a_position_reconciles_every_task(
    make_engine: EngineFactory, db: Database[Doc]
) -> None:
    """Regression (the model-based test): globals restored from a backup taken before
    the first position save held tasks marked reconciled and no position. The next
    leader opened its stream from now: what was written before was never planned."""
    recorder = Recorder(fetch=False)
    first = make_engine(instance_id="first")
    first.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(first, db)
    assert first.stop(timeout=10)
    db["_mongoreact_globals"].update_one({"_id": "planner"}, {"$unset": {"resumeToken": 1}})
    db.orders.insert_one({"_id": "while-down"})
    second = make_engine(instance_id="second")
    second.register(task="sync", collection="orders", handler=recorder, debounce=0)
    start(second, db)
    wait_until(lambda: recorder.count("while-down") == 1, timeout=15, message="reconciled")


def _first_version_handled(
    make_engine: EngineFactory, db: Database[Doc]
) -> tuple[ReactiveTasks, Recorder]:
    """A leading instance whose task watches ``v``, once it has handled ``{_id: 1, v: 1}``."""
    recorder = Recorder(fetch=False)
    engine = make_engine()
    engine.register(task="sync", collection="orders", handler=recorder, debounce=0,
                    watch_projection={"v": 1})  # fmt: skip
    start(engine, db)
    db.orders.insert_one({"_id": 1, "v": 1})
    wait_until(lambda: recorder.count(1) == 1, message="the first version handled")
    return engine, recorder
