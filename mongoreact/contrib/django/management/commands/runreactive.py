"""``python manage.py runreactive``: run mongoreact's workers until SIGTERM or Ctrl+C."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from mongoreact import api
from mongoreact.signals import run_until_signalled


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run mongoreact's planner and workers in this process until stopped."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--stop-timeout", type=float, default=30.0,
                            help="seconds to wait for running handlers when stopping")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        engine = api.instance()

        def started() -> None:
            # Flushed at once: under a supervisor stdout is a pipe, block-buffered.
            self.stdout.write(f"mongoreact running as {engine.instance_id}")
            self.stdout.flush()

        # The same loop as ``mongoreact run``: a signal during start() cancels it, a
        # second Ctrl+C exits at once.
        outcome = run_until_signalled(engine, stop_timeout=options["stop_timeout"], started=started)
        self.stdout.write(
            "mongoreact stopped" + ("" if outcome.clean else " (handlers still running)")
        )
        self.stdout.flush()
