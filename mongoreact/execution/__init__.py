"""Execution, on every instance: from due task records to handler runs and their
recorded outcomes."""
