"""The README's first command: ``mongoreact demo``."""

from __future__ import annotations

import re

import pytest

from mongoreact.cli import main


def test_the_demo_runs_three_tasks_to_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "pending -> processing" in out
    assert "warehouse API timed out" in out
    rows = dict(re.findall(r"^  ([a-z-]+)\s+(\d+ +\d+ completed)$", out, re.MULTILINE))
    # the flaky handler fails twice per order, the debounced one runs once for 5 changes
    assert re.fullmatch(r"9 +3 completed", rows["notify-warehouse"])
    assert re.fullmatch(r"3 +3 completed", rows["sync-order-to-erp"])
    assert re.fullmatch(r"1 +1 completed", rows["recalc-product-rating"])
