"""The web dashboard: a WSGI application with no web framework dependency."""

from .app import DashboardApp

__all__ = ["DashboardApp"]
