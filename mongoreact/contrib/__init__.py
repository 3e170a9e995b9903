"""Framework integrations (optional: Django and Flask are not dependencies)."""
