"""Small checks shared by the option parsers; each raises ``ConfigError``."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs

from ..errors import ConfigError
from .durations import parse_duration

T = TypeVar("T")


def as_mapping(value: object, option: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    """``value`` as a mapping whose keys are all in ``allowed``."""
    if not isinstance(value, Mapping):
        raise ConfigError(option, value, "expected a dict")
    known = set(allowed)
    for key in value:
        if key not in known:
            raise ConfigError(
                f"{option}.{key}", value[key], f"unknown option; known: {', '.join(sorted(known))}"
            )
    return value


def check_unknown(options: Mapping[str, object], allowed: Iterable[str], where: str) -> None:
    """``ConfigError`` for the first key of ``options`` not in ``allowed``."""
    known = set(allowed)
    for key, value in options.items():
        if key not in known:
            raise ConfigError(
                key, value, f"unknown option of {where}; known: {', '.join(sorted(known))}"
            )


def as_int(
    value: object, option: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int (not a bool) between ``minimum`` and ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(option, value, "expected an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(option, value, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(option, value, f"must be at most {maximum}")
    return value


def as_bool(value: object, option: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ConfigError(option, value, "expected True or False")
    return value


def as_choice(value: object, option: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise ConfigError(option, value, f"expected one of {', '.join(map(repr, options))}")
    assert isinstance(value, str)
    return value


def as_name(value: object, option: str, *, dots: bool = True) -> str:
    """A non-empty name MongoDB accepts for a collection (``dots=False``: a database)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(option, value, "expected a non-empty string")
    if "$" in value or "\0" in value or (not dots and ("." in value or "/" in value)):
        banned = "'$' or NUL" if dots else "'$', '.', '/' or NUL"
        raise ConfigError(option, value, f"must not contain {banned}")
    return value


def as_callable(value: object, option: str) -> Any:
    """``value`` if it can be called."""
    if not callable(value):
        raise ConfigError(option, value, "expected a callable")
    return value


def as_handler(value: object, option: str, arguments: tuple[str, ...]) -> Any:
    """``value`` if it is a plain (not ``async``) callable taking ``arguments``
    positionally. A coroutine function would "run" by creating a coroutine nobody
    awaits: the task would complete with its body never run."""
    as_callable(value, option)
    target = value
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an async __call__ method
    ):
        raise ConfigError(
            option, value, "an async function; mongoreact runs handlers on threads: use a "
            "plain def (call asyncio.run(...) inside it if you must)"
        )  # fmt: skip
    try:
        signature = inspect.signature(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value  # a builtin without a signature: trusted
    try:
        signature.bind(*arguments)
    except TypeError:
        wanted = f"({', '.join(arguments)})" if arguments else "no arguments"
        raise ConfigError(
            option, value, f"is called with {wanted}, but its signature is {signature}"
        ) from None
    return value


# -- attrs fields that validate themselves ----------------------------------------------
# Option classes declare their fields with these, so an object built directly (not from
# a dict) is converted and checked the same way, and raises ConfigError naming the
# option: "retry_policy.jitter", "cleanup_policy.keep_for".


def duration_field(option: str, default: dt.timedelta | None, *, positive: bool = False) -> Any:
    """A ``timedelta`` field that also takes milliseconds or ``"10s"``-style strings
    (with a ``None`` default: optional, ``None`` when not given)."""

    def convert(value: object) -> dt.timedelta | None:
        if value is None and default is None:
            return None
        duration = parse_duration(value, option)
        if positive and duration <= dt.timedelta(0):
            raise ConfigError(option, value, "must be greater than zero")
        return duration

    return attrs.field(default=default, converter=convert)


def required_duration_field(option: str, what: str) -> Any:
    """A ``timedelta`` field that must be given (``ConfigError`` naming ``option``)."""
    _missing = object()

    def convert(value: object) -> Any:
        return value if value is _missing else parse_duration(value, option)

    def check(_: object, __: object, value: object) -> None:
        if value is _missing:
            raise ConfigError(option, None, f"required for {what}")

    return attrs.field(default=_missing, converter=convert, validator=check)


def choice_field(option: str, choices: Iterable[str], default: str) -> Any:
    """A field that is one of ``choices``."""
    allowed = tuple(choices)
    return attrs.field(
        default=default, validator=lambda _, __, value: as_choice(value, option, allowed)
    )


def bool_field(option: str, default: bool) -> Any:
    """A field that is ``True`` or ``False``."""
    return attrs.field(default=default, validator=lambda _, __, value: as_bool(value, option))


def int_field(option: str, default: int, *, minimum: int | None = None) -> Any:
    """An int field (not a bool) no smaller than ``minimum``."""
    return attrs.field(
        default=default, validator=lambda _, __, value: as_int(value, option, minimum=minimum)
    )


def field_names(cls: type) -> tuple[str, ...]:
    """The option names of an attrs option class: its fields."""
    return tuple(field.name for field in attrs.fields(cls))
