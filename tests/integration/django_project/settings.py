"""A minimal Django project for the integration test (settings from the environment)."""

import os

SECRET_KEY = "test-only"
INSTALLED_APPS = ["tests.integration.django_project.shop", "mongoreact.contrib.django"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
MONGOREACT = {
    "uri": os.environ["MONGOREACT_TEST_DJANGO_URI"],
    "database": os.environ["MONGOREACT_TEST_DJANGO_DB"],
    "poll_min": 20,
    "poll_max": 200,
    "batch_window": 10,
    "batch_max_wait": 50,
    "leader_heartbeat": 200,
    "leader_ttl": 1000,
}
