"""docs/dashboard.md's Django mount: the dashboard under /tasks, Django for the rest."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.django_project.settings")

from django.core.wsgi import get_wsgi_application
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import mongoreact as reactive

application = DispatcherMiddleware(get_wsgi_application(), {"/tasks": reactive.dashboard_app()})
