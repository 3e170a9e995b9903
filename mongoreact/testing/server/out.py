"""``$out``: replace a collection with a pipeline's output, as MongoDB does.

mongoeco 4.11.0 has no ``$out``. MongoDB writes the output into a temporary collection
(``tmp.agg_out.<uuid>``) that gets the target's indexes, then renames it over the target
(``renameCollection`` with ``dropTarget``): readers see the old contents or the new ones,
never a mix, and a failure (a duplicate ``_id`` in the output, say) leaves the target as
it was. This module does the same through mongoeco's client; the rename goes through the
wire layer so that change streams see it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from mongoeco.errors import BulkWriteError

from . import errors
from .errors import CommandError

Rename = Callable[[str, str], Awaitable[None]]  # (source namespace, target namespace)


def split_out(pipeline: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any] | None:
    """``(stages before $out, $out spec)`` when the pipeline ends with ``$out``."""
    if pipeline and isinstance(pipeline[-1], dict) and "$out" in pipeline[-1]:
        return pipeline[:-1], pipeline[-1]["$out"]
    for stage in pipeline[:-1]:
        if isinstance(stage, dict) and "$out" in stage:
            raise CommandError(40601, "$out can only be the final stage in the pipeline")
    return None


def out_target(db: str, spec: Any) -> tuple[str, str]:
    """The ``(database, collection)`` a ``$out`` spec names."""
    if isinstance(spec, dict):
        target_db, target_coll = spec.get("db", db), spec.get("coll")
    else:
        target_db, target_coll = db, spec
    if not isinstance(target_db, str) or not isinstance(target_coll, str) or not target_coll:
        raise CommandError(errors.FAILED_TO_PARSE, "$out must name a collection")
    return target_db, target_coll


async def index_specs(client: Any, db: str, coll: str) -> list[dict[str, Any]]:
    """The index specifications of ``db.coll``, as ``listIndexes`` gives them."""
    cursor = await client.get_database(db).get_collection(coll).list_indexes()
    return [dict(spec) async for spec in cursor]


async def apply_out(
    client: Any, target: tuple[str, str], documents: list[dict[str, Any]], rename: Rename
) -> None:
    """Replace ``target``'s contents with ``documents`` in one step."""
    target_db, target_coll = target
    database = client.get_database(target_db)
    temporary = f"tmp.agg_out.{uuid.uuid4()}"
    staging = database.get_collection(temporary)
    try:
        await database.create_collection(temporary)
        if target_coll in await database.list_collection_names():
            for index in await index_specs(client, target_db, target_coll):
                if index["name"] == "_id_":
                    continue
                options = {k: v for k, v in index.items() if k not in ("key", "v", "ns")}
                await staging.create_index(list(index["key"].items()), **options)
        if documents:
            try:
                await staging.insert_many(documents, ordered=True)
            except BulkWriteError as error:  # MongoDB reports the document's own error
                first = (error.details or {}).get("writeErrors", [{}])[0]
                raise CommandError(
                    int(first.get("code", errors.DUPLICATE_KEY)),
                    str(first.get("errmsg", error)),
                    details={k: first[k] for k in ("keyPattern", "keyValue") if k in first},
                ) from error
        await rename(f"{target_db}.{temporary}", f"{target_db}.{target_coll}")
    except BaseException:
        await staging.drop()
        raise
