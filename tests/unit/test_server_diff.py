"""updateDescription computation and pipeline rewrites of the embedded server."""

from __future__ import annotations

from typing import Any

from mongoreact.testing.server.diff import update_description
from mongoreact.testing.server.rewrite import rewrite_pipeline


def test_changed_nested_leaves_get_dotted_paths() -> None:
    before = {"_id": 1, "a": 1, "n": {"x": 1, "y": 2}, "gone": 0}
    after = {"_id": 1, "a": 2, "n": {"x": 1, "y": 3}, "new": [1]}
    assert update_description(before, after) == (
        {"updatedFields": {"a": 2, "n.y": 3, "new": [1]}, "removedFields": ["gone"],
         "truncatedArrays": []},
        {},
    )  # fmt: skip


def test_a_type_change_is_a_change_even_when_python_values_compare_equal() -> None:
    described, _ = update_description({"v": 1, "b": True}, {"v": 1.0, "b": 1})
    assert described["updatedFields"] == {"v": 1.0, "b": 1}


def test_arrays_are_compared_element_by_element() -> None:
    appended, _ = update_description({"l": [1, 2]}, {"l": [1, 2, 3]})
    assert appended["updatedFields"] == {"l.2": 3}
    nested, _ = update_description({"l": [{"a": 1}, 5]}, {"l": [{"a": 2}, 5]})
    assert nested["updatedFields"] == {"l.0.a": 2}
    shortened, _ = update_description(
        {"l": ["foo", {"a": "bar"}, 1, 2]}, {"l": ["foo", {"a": "bar"}]}
    )
    assert shortened == {
        "updatedFields": {}, "removedFields": [], "truncatedArrays": [{"field": "l", "newSize": 2}],
    }  # fmt: skip


def test_an_array_a_set_names_is_reported_whole() -> None:
    described, _ = update_description({"l": [1, 2]}, {"l": [1, 2, 3]}, set_paths={"l"})
    assert described["updatedFields"] == {"l": [1, 2, 3]}


def test_numeric_and_dotted_field_names_are_disambiguated() -> None:
    _, ambiguous = update_description(
        {"a": {"1": 1}, "b": [{"1": 1}], "c": [1], "d.e": 1},
        {"a": {"1": 2}, "b": [{"1": 2}], "c": [2], "d.e": 2},
    )
    assert ambiguous == {"a.1": ["a", "1"], "b.0.1": ["b", 0, "1"], "d.e": ["d.e"]}


def test_count_becomes_group_and_project_everywhere() -> None:
    pipeline: list[dict[str, Any]] = [
        {"$lookup": {"from": "x", "pipeline": [{"$count": "n"}], "as": "found"}},
        {"$facet": {"total": [{"$count": "c"}]}},
        {"$count": "all"},
    ]
    rewritten = rewrite_pipeline(pipeline)
    assert rewritten[0]["$lookup"]["pipeline"] == [
        {"$group": {"_id": None, "n": {"$sum": 1}}},
        {"$project": {"_id": 0}},
    ]
    assert rewritten[1]["$facet"]["total"][0] == {"$group": {"_id": None, "c": {"$sum": 1}}}
    assert rewritten[2:] == [
        {"$group": {"_id": None, "all": {"$sum": 1}}},
        {"$project": {"_id": 0}},
    ]
