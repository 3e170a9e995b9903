"""Every MongoDB call mongoreact makes lives in this package, one method per operation.

- ``tasks``: the ``<collection>_tasks`` records (planning, claims, finalizing, cleanup,
  the management API's reads and retries) and the source documents they point to;
- ``pipelines``: the update and aggregation pipelines and index specs ``tasks`` sends;
- ``globals``: coordination documents shared by instances (leader lease, stream
  position, reconciliation checkpoints, published task definitions, pushed metrics);
- ``slots``: the cluster-wide concurrency slots of tasks with ``max_concurrency``;
- ``cron``: one document per cron task (schedule, lease, run log);
- ``locks``: the documents behind ``Lock``;
- ``server``: ``hello`` and the planner's change stream.

The exceptions are code that acts *as a user*: the demo (``mongoreact.demo``) and the
``batches`` helper, which pages through a user's own collection.
"""
