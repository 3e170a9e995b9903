"""The exceptions mongoreact raises."""

from __future__ import annotations


class MongoReactError(Exception):
    """Base class of every mongoreact error."""


class ConfigError(MongoReactError, ValueError):
    """An option has a bad value; the message names the option and the value."""

    def __init__(self, option: str, value: object, problem: str) -> None:
        super().__init__(f"{option}={value!r}: {problem}")
        self.option = option
        self.value = value
        self.problem = problem
