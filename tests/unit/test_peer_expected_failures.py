"""The checked-in list of pymongo tests expected to fail on the embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peer.plugin import EXPECTED, expected_failures

KINDS = ("open gap: ", "cannot apply: ", "hangs: ")


def test_every_expected_failure_says_why() -> None:
    failures = expected_failures()
    assert failures, "the list is empty"
    for test, reason in failures.items():
        assert "::" in test and test.split("::", 1)[0].endswith(".py"), test
        assert reason.startswith(KINDS), f"{test}: {reason!r} says neither kind"
    lines = [
        line.split("  # ", 1)[0].strip()
        for line in EXPECTED.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == len(set(lines)), "a test is listed twice"


def test_a_line_without_a_reason_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "expected.txt"
    listed.write_text("test_x.py::T::test_y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no reason"):
        expected_failures(listed)
