"""A minimal Django project for the integration test (settings from the environment)."""

import os

from mongoreact.testing import FAST_SETTINGS

SECRET_KEY = "test-only"
INSTALLED_APPS = ["tests.integration.django_project.shop", "mongoreact.contrib.django"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
MONGOREACT = {
    "uri": os.environ["MONGOREACT_TEST_DJANGO_URI"],
    "database": os.environ["MONGOREACT_TEST_DJANGO_DB"],
    **FAST_SETTINGS,
}
MONGOREACT_AUTOSTART = os.environ.get("MONGOREACT_TEST_DJANGO_AUTOSTART") == "1"
ROOT_URLCONF = "tests.integration.django_project.urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
