"""When something runs next: one value object for every schedule mongoreact takes.

Cleanup (``cleanup_interval``), cron tasks (``cron_task(name, schedule, ...)``) and cron
retries (``retry_policy={"type": "cron", ...}``) all say when to run as a ``"CRON
<expr>"`` string, a duration (after the previous run), or, for cron tasks, a callable
``schedule(now) -> datetime | duration``.

A cron expression has five fields (minute hour day month weekday) or six with the
seconds *first*, as in the reference (cron-parser): ``"*/5 * * * * *"`` is every five
seconds. croniter, which computes the times, wants seconds last; the fields are moved
for it, so nobody has to know which library reads the expression.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final, cast

import attrs
from croniter import croniter

from ..clock import as_utc
from ..errors import ConfigError
from ._validate import as_callable, duration_field
from .durations import parse_duration

CRON_PREFIX: Final = "CRON "
CRON_FIELDS: Final = (
    "five fields (minute hour day month weekday) or six with the seconds first "
    "(second minute hour day month weekday)"
)


def _check_cron(expression: object, option: str, shown: object) -> None:
    if not isinstance(expression, str):
        raise ConfigError(option, shown, f"expected a cron expression: {CRON_FIELDS}")
    fields = expression.split()
    if len(fields) not in (5, 6) and not (len(fields) == 1 and fields[0].startswith("@")):
        raise ConfigError(option, shown, f"expected {CRON_FIELDS}, not {len(fields)}")
    if not croniter.is_valid(_for_croniter(expression)):
        raise ConfigError(option, shown, f"not a valid cron expression ({CRON_FIELDS})")


def _valid_cron(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_cron(value, attribute.name, value)


def _valid_function(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        as_callable(value, attribute.name)


@attrs.frozen(kw_only=True)
class Schedule:
    """Exactly one of a cron expression, an interval (a duration) or a function of the
    last run time; each is checked when the schedule is built, whichever way."""

    cron: str | None = attrs.field(default=None, validator=_valid_cron)
    interval: dt.timedelta | None = duration_field("interval", None, positive=True)
    function: Callable[[dt.datetime], Any] | None = attrs.field(
        default=None, eq=False, validator=_valid_function
    )

    def __attrs_post_init__(self) -> None:
        given = [name for name in ("cron", "interval", "function") if getattr(self, name)]
        if len(given) != 1:
            raise ConfigError(
                "schedule", given, "expected exactly one of cron, interval or function"
            )

    @classmethod
    def parse(cls, value: object, option: str, *, functions: bool = False) -> Schedule:
        """A schedule from what users write; ``ConfigError`` naming ``option`` if bad.

        ``functions``: whether a callable is accepted (cron tasks only)."""
        if isinstance(value, Schedule):
            return value
        if isinstance(value, str) and value.upper().startswith(CRON_PREFIX):
            return cls.from_cron(value[len(CRON_PREFIX) :].strip(), option, shown=value)
        if functions and callable(value):
            return cls(function=value)
        try:
            return cls(interval=cast(Any, value))  # the field converts and checks it
        except ConfigError as error:  # named after the user's option, not the field
            raise ConfigError(option, value, error.problem) from None

    @classmethod
    def from_cron(cls, expression: object, option: str, *, shown: object = None) -> Schedule:
        """A schedule from a bare cron expression (no ``CRON`` prefix)."""
        _check_cron(expression, option, expression if shown is None else shown)
        return cls(cron=expression)  # type: ignore[arg-type]  # checked: a str

    @property
    def description(self) -> str:
        """How the schedule reads (stored with cron tasks, shown by the dashboard)."""
        if self.cron is not None:
            return CRON_PREFIX + self.cron
        if self.interval is not None:
            return f"every {self.interval}"
        return f"callable {getattr(self.function, '__name__', repr(self.function))}"

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The next run after ``moment`` (aware UTC)."""
        moment = as_utc(moment)
        if self.cron is not None:
            return as_utc(croniter(_for_croniter(self.cron), moment).get_next(dt.datetime))
        if self.interval is not None:
            return moment + self.interval
        assert self.function is not None  # exactly one is set (__attrs_post_init__)
        value = self.function(moment)
        if isinstance(value, dt.datetime):
            return max(as_utc(value), moment)
        return moment + parse_duration(value, "schedule")


def _for_croniter(expression: str) -> str:
    """croniter's form of an expression: a leading seconds field moved to the end."""
    fields = expression.split()
    return " ".join([*fields[1:], fields[0]]) if len(fields) == 6 else expression
