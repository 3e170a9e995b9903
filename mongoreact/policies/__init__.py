"""Policies that decide what happens to a task between runs."""
