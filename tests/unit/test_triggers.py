"""Filters stay queries (bare expressions get $expr); watch projections compile."""

from __future__ import annotations

from typing import Any

import pytest

from mongoreact import ConfigError
from mongoreact.config.triggers import (
    WHOLE_DOCUMENT,
    compile_watch_projection,
    normalize_filter,
    reads_the_clock,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ({}, None),
        ({"status": "paid"}, {"status": "paid"}),
        ({"$or": [{"a": 1}, {"b": 2}]}, {"$or": [{"a": 1}, {"b": 2}]}),
        ({"$expr": {"$gt": ["$a", 1]}}, {"$expr": {"$gt": ["$a", 1]}}),
        ({"$eq": ["$status", "paid"]}, {"$expr": {"$eq": ["$status", "paid"]}}),
        ({"$and": [{"$gt": ["$a", 1]}]}, {"$expr": {"$and": [{"$gt": ["$a", 1]}]}}),
        ({"$lte": ["$dueAt", "$$NOW"]}, {"$expr": {"$lte": ["$dueAt", "$$NOW"]}}),
    ],
)
def test_filters(given: object, expected: object) -> None:
    assert normalize_filter(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "status == paid",
        {"$where": "this.a > 1"},
        {"a": {"$function": {"body": "f", "args": [], "lang": "js"}}},
        {"$expr": {"$accumulator": {}}},
    ],
)
def test_bad_filters(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_filter(bad)
    assert caught.value.option == "filter"


def test_watch_projection_compiles_to_an_expression() -> None:
    assert compile_watch_projection(None) == WHOLE_DOCUMENT
    assert compile_watch_projection({}) == WHOLE_DOCUMENT
    assert compile_watch_projection(
        {"status": 1, "customer.email": True, "total": {"$add": ["$a", "$b"]}, "x": "$y"}
    ) == {
        "status": "$status",
        "customer": {"email": "$customer.email"},
        "total": {"$add": ["$a", "$b"]},
        "x": "$y",
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"status": 0}, "exclusion"),
        ({"status": False}, "exclusion"),
        ({"status": "yes"}, "expected 1"),
        ({"$status": 1}, "bad field path"),
        ({"a..b": 1}, "bad field path"),
        ({"a": 1, "a.b": 1}, "collision"),
        (["status"], "expected a projection"),
    ],
)
def test_bad_watch_projections(bad: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        compile_watch_projection(bad)
    assert caught.value.option == "watch_projection"


@pytest.mark.parametrize(
    ("filter_", "reads"),
    [
        ({"$expr": {"$gt": ["$expiresAt", "$$NOW"]}}, True),
        ({"$and": [{"a": 1}, {"$expr": {"$lt": ["$$CLUSTER_TIME", "$t"]}}]}, True),
        ({"a": "$$NOWHERE"}, False),  # only the variables themselves
        ({"status": "paid"}, False),
        (None, False),
    ],
)
def test_filters_that_read_the_clock_are_told(filter_: Any, reads: bool) -> None:
    assert reads_the_clock(filter_) is reads
