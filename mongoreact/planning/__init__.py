"""Planning, on the leader: from the change stream (and reconciliation) to task records,
and their cleanup."""
