"""The web dashboard: a WSGI app, its users and roles, and what it keeps off the page."""

from .app import DashboardApp
from .redaction import Redaction
from .security import BasicAuth, BearerAuth, Credential, DashboardUser, auth_from, read_credentials

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "Credential",
    "DashboardApp",
    "DashboardUser",
    "Redaction",
    "auth_from",
    "read_credentials",
]
