"""``python manage.py runreactive``: run mongoreact's workers until SIGTERM or Ctrl+C."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from mongoreact import api


class Command(BaseCommand):  # type: ignore[misc]
    help = "Run mongoreact's planner and workers in this process until stopped."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--stop-timeout", type=float, default=30.0,
                            help="seconds to wait for running handlers when stopping")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        engine = api.instance()
        requested = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: requested.set())
        engine.start()
        # Flushed at once: under a supervisor stdout is a pipe, block-buffered.
        self.stdout.write(f"mongoreact running as {engine.instance_id}")
        self.stdout.flush()
        while engine.is_running and not requested.wait(0.2):
            pass
        clean = engine.stop(timeout=options["stop_timeout"])
        self.stdout.write("mongoreact stopped" + ("" if clean else " (handlers still running)"))
        self.stdout.flush()
