"""pytest plugin for pymongo's suite on the embedded server: marks the expected failures.

Loaded into pymongo's own test run by ``tests.peer.run`` (``-p tests.peer.plugin``).
Each line of ``expected-failures.txt`` names a test (``file::Class::test``) and says
why it cannot pass on the embedded server; the test is then ``xfail(strict=True)``, so a
listed test that starts passing fails the run until its line is removed. A reason that
starts with ``hangs:`` marks a test that would only time out (it waits for an event the
server never sends): it is reported as an expected failure without being run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

EXPECTED = Path(__file__).with_name("expected-failures.txt")


def expected_failures(path: Path = EXPECTED) -> dict[str, str]:
    """Test id -> reason, from ``path`` (blank lines and ``#`` comments ignored)."""
    failures: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test, _, reason = line.partition("  # ")
        if not reason.strip():
            raise ValueError(f"{path.name}: no reason given for {test.strip()!r}")
        failures[test.strip()] = reason.strip()
    return failures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every listed test as an expected failure, with its reason."""
    failures = expected_failures()
    for item in items:
        test_id = item.nodeid.removeprefix("test/")
        reason = failures.get(test_id)
        if reason is not None:
            runs = not reason.startswith("hangs:")
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True, run=runs))
