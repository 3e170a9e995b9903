"""Monitoring: what is measured, and the Prometheus figures built from it."""
