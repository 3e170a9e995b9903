"""Pipeline rewrites that correct mongoeco 4.11.0 stage semantics before execution."""

from __future__ import annotations

from typing import Any

Pipeline = list[dict[str, Any]]


def rewrite_pipeline(pipeline: Pipeline) -> Pipeline:
    """Rewrite ``pipeline`` (and the sub-pipelines in it) to MongoDB's semantics.

    ``$count`` on empty input yields no document on MongoDB but ``{n: 0}`` on mongoeco,
    which breaks the common "``$lookup`` + ``$count`` finds nothing" orphan check. It is
    replaced by its documented equivalent, ``$group`` + ``$project``.
    """
    rewritten: Pipeline = []
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            rewritten.append(stage)
            continue
        ((name, spec),) = stage.items()
        if name == "$count" and isinstance(spec, str):
            rewritten += [
                {"$group": {"_id": None, spec: {"$sum": 1}}},
                {"$project": {"_id": 0}},
            ]
        elif (
            name in ("$lookup", "$unionWith")
            and isinstance(spec, dict)
            and isinstance(spec.get("pipeline"), list)
        ):
            rewritten.append({name: {**spec, "pipeline": rewrite_pipeline(spec["pipeline"])}})
        elif name == "$facet" and isinstance(spec, dict):
            rewritten.append(
                {
                    name: {
                        key: rewrite_pipeline(value) if isinstance(value, list) else value
                        for key, value in spec.items()
                    }
                }
            )
        else:
            rewritten.append(stage)
    return rewritten
