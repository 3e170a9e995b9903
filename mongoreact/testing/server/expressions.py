"""Aggregation expression operators MongoDB has and mongoeco 4.11.0 lacks.

They are added through mongoeco's documented extension seam,
``mongoeco.core.aggregation.register_aggregation_expression_operator`` (4.11.0).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from mongoeco.core.aggregation import register_aggregation_expression_operator


def _truthy(value: Any, missing: object) -> bool:
    # Aggregation truthiness: false, null, missing and zero are false; all else is true
    # (including "" and []).
    if value is None or value is missing or value is False:
        return False
    if isinstance(value, Decimal128):
        value = value.to_decimal()
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return value != 0
    return True


def _not(
    document: Any, spec: object, variables: Mapping[str, Any], _dialect: Any, ctx: Any
) -> bool:
    (argument,) = ctx.require_expression_args("$not", spec, 1, 1)
    value = ctx.evaluate_expression_with_missing(document, argument, variables)
    return not _truthy(value, ctx.missing_sentinel)


def install() -> None:
    """Register the operators (idempotent)."""
    register_aggregation_expression_operator("$not", _not)
