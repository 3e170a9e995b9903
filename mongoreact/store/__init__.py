"""Every MongoDB call mongoreact makes lives in this package, one method per operation.

- ``connection``: the client and database an instance uses, with its concerns;
- ``tasks``: the ``<collection>_tasks`` records (planning, claims, finalizing, cleanup,
  the management API's reads and retries) and the source documents they point to;
- ``pipelines``: the update and aggregation pipelines and index specs ``tasks`` sends;
- ``globals``: coordination documents shared by instances (leader lease, stream
  position, reconciliation checkpoints, published task definitions, pushed metrics,
  instances' presence, cluster-wide pauses);
- ``slots``: the cluster-wide concurrency slots of tasks with ``max_concurrency``;
- ``cron``: one document per cron task (schedule, lease, run log);
- ``locks``: the documents behind ``Lock``;
- ``audit``: the log of operators' actions;
- ``server``: ``hello``, ``ping``, cluster times and the planner's change stream;
- ``protocols``: what the worker side needs of the stores, for typed test fakes.

The exceptions are code that acts *as a user*: the demo (``mongoreact.demo``) and the
``batches`` helper, which pages through a user's own collection.
"""
