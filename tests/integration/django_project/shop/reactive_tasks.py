"""Found by mongoreact's Django app: the ``reactive_tasks`` module of an installed app."""

from __future__ import annotations

import mongoreact as reactive
from mongoreact import TaskContext


@reactive.task(collection="orders", filter={"status": "paid"}, debounce=0)
def confirm_order(ctx: TaskContext) -> None:
    order = ctx.get_document()
    reactive.instance().database.confirmations.insert_one({"_id": order["_id"]})
