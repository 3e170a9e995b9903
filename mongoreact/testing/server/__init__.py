"""An embedded MongoDB-compatible server for tests and demos.

It speaks the real wire protocol, so pymongo talks to it exactly as to a MongoDB 6.0+
replica-set primary. Query, update and aggregation semantics come from mongoeco (pinned,
Python >= 3.13); this package adds what mongoeco's wire server lacks: change streams over
the wire, replica-set topology, cluster times, ``$merge`` on arbitrary keys and fixes for
the defects listed in ``docs/embedded-server.md``.

Run it with ``python -m mongoreact.testing.server``; from any Python version use
:class:`mongoreact.testing.EmbeddedServer`, which starts it in a subprocess.
"""
