"""Who may use the dashboard, and from where: allowed hosts, the same-origin check of
actions, roles, and HTTP basic or bearer authentication.

Every request is checked, reads included (they serve watched values and tracebacks):
its ``Host`` (and ``X-Forwarded-Host``, if a proxy sets it) must be an allowed host,
which defeats DNS rebinding, where a foreign page reaches a dashboard on localhost under
its own name. ``allowed_hosts`` works as Django's ``ALLOWED_HOSTS``: exact names, a
leading dot for a domain and its subdomains, ``"*"`` for any; the default is the
loopback names only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import attrs

from ..errors import ConfigError

Environ = dict[str, Any]
Role = Literal["viewer", "operator"]
ROLES: Final = ("viewer", "operator")
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")
# A Host header as Django reads one: a DNS name or IPv4, or a bracketed IPv6, then an
# optional port; anything else ("a@b", "[::1]evil", "h:1:2") is refused.
_HOST: Final = re.compile(r"^(?P<name>[a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::\d{1,5})?$")

#: Response headers of every answer: no framing by another site (clickjacking), no
#: content sniffing, no caching of records, no referrer beyond this origin.
SECURITY_HEADERS: Final = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("Referrer-Policy", "same-origin"),
)


class Refused(Exception):
    """A request refused: its HTTP status, a message, and extra response headers."""

    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@attrs.frozen
class DashboardUser:
    """Who makes a request, as an ``auth`` callable names them: a ``viewer`` reads,
    an ``operator`` also retries, discards, defers, pauses and runs cron tasks."""

    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    role: Role = attrs.field(default="operator", validator=attrs.validators.in_(ROLES))


#: ``auth(environ)``: ``None`` or ``False`` refuses the request, ``True`` lets it in as
#: an operator, a ``DashboardUser`` names the user and their role.
Auth = Callable[[Environ], "DashboardUser | bool | None"]


def normalize_hosts(hosts: Iterable[str] | None) -> tuple[str, ...]:
    """The allowed hosts, lower case, checked (``ConfigError`` naming a bad one)."""
    if hosts is None:
        return LOOPBACK_HOSTS
    if isinstance(hosts, str):
        raise ConfigError("allowed_hosts", hosts, "expected a list of host names")
    checked = []
    for host in hosts:
        if not isinstance(host, str) or not host or any(c in host for c in "/@ "):
            raise ConfigError("allowed_hosts", host, "expected a host name, '.domain' or '*'")
        checked.append(host.lower())
    return tuple(checked)


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` (a ``Host`` header: a name, an IPv4 or ``[IPv6]``, and an
    optional port) is well-formed and matches one of ``allowed``."""
    match = _HOST.match(host.strip().lower())
    if match is None:
        return False
    name = match.group("name").removesuffix(".")  # "localhost." is "localhost"
    for pattern in allowed:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
    return False


def check_host(environ: Environ, allowed: tuple[str, ...]) -> set[str]:
    """The request's host names (``Host``, and ``X-Forwarded-Host`` behind a proxy),
    each an allowed one; ``Refused`` (403) otherwise."""
    hosts = {environ.get("HTTP_HOST") or "", environ.get("HTTP_X_FORWARDED_HOST") or ""}
    hosts.discard("")
    if not hosts:
        # HTTP/1.0 without Host: the server's own name is what the client asked for.
        hosts = {str(environ.get("SERVER_NAME") or "")}
    for host in hosts:
        if not host_allowed(host, allowed):
            raise Refused(
                "403 Forbidden",
                f"host {host!r} is not an allowed host of this dashboard (allowed_hosts, "
                "--allowed-host)",
            )
    return hosts


def check_same_origin(environ: Environ, hosts: set[str]) -> None:
    """Refuse an action another site's page could have sent (cross-site request
    forgery): it must carry JSON (a cross-site form cannot, and the preflight such a
    request needs is never granted) and, where the browser names its origin, the
    origin must be this dashboard's own host."""
    kind = str(environ.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()
    if kind != "application/json":
        raise Refused("415 Unsupported Media Type", "actions take a JSON body")
    site = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused("403 Forbidden", f"cross-site request refused ({site})")
    for header in ("HTTP_ORIGIN", "HTTP_REFERER"):
        claimed = environ.get(header)
        if claimed is None:
            continue
        if urlsplit(str(claimed)).netloc.lower() not in {h.lower() for h in hosts}:
            raise Refused("403 Forbidden", "cross-origin request refused")
        return


def identify(environ: Environ, auth: Auth | None, *, read_only: bool) -> DashboardUser:
    """The user of a request (``Refused`` if ``auth`` refuses it). Without ``auth``
    the dashboard trusts whoever reaches it (embedded behind the application's own
    login, or on loopback); ``read_only`` makes everyone a viewer."""
    if auth is None:
        user = DashboardUser(str(environ.get("REMOTE_USER") or "anonymous"), "operator")
    else:
        answer = auth(environ)
        if isinstance(answer, DashboardUser):
            user = answer
        elif answer is True:
            user = DashboardUser(str(environ.get("REMOTE_USER") or "anonymous"), "operator")
        else:
            challenge = getattr(auth, "challenge", None)
            headers = [("WWW-Authenticate", challenge)] if isinstance(challenge, str) else []
            raise Refused("401 Unauthorized", "authentication required", headers)
    return attrs.evolve(user, role="viewer") if read_only else user


@attrs.frozen
class Credential:
    """One user of ``BasicAuth`` or one token of ``BearerAuth``."""

    name: str
    secret: str = attrs.field(repr=False)  # never in a repr or a log line
    role: Role = attrs.field(default="operator", validator=attrs.validators.in_(ROLES))


class _SecretAuth:
    """Compare a presented secret with each known one in constant time."""

    challenge: str

    def __init__(self, credentials: Iterable[Credential], option: str) -> None:
        self._credentials = tuple(credentials)
        if not self._credentials:
            raise ConfigError(option, [], "no credentials given")
        for credential in self._credentials:
            if not credential.secret:
                raise ConfigError(option, credential.name, "an empty secret")

    @staticmethod
    def _credentials_of(environ: Environ, scheme: str) -> str | None:
        """The credentials of an ``Authorization: <scheme> <credentials>`` header."""
        given, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        return value.strip() if given.lower() == scheme and value.strip() else None

    def _match(self, name: str | None, secret: str) -> DashboardUser | None:
        found = None
        for credential in self._credentials:
            # Bytes, not str: compare_digest refuses non-ASCII text ("josé").
            same_secret = hmac.compare_digest(credential.secret.encode(), secret.encode())
            same_name = name is None or hmac.compare_digest(credential.name.encode(), name.encode())
            if same_secret and same_name:
                found = found or DashboardUser(credential.name, credential.role)
        return found


class BasicAuth(_SecretAuth):
    """HTTP basic authentication (use it over HTTPS, or on loopback)."""

    challenge = 'Basic realm="mongoreact", charset="UTF-8"'

    def __init__(self, users: Iterable[Credential]) -> None:
        super().__init__(users, "basic auth users")

    def __call__(self, environ: Environ) -> DashboardUser | None:
        value = self._credentials_of(environ, "basic")
        if value is None:
            return None
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, separator, password = decoded.partition(":")
        return self._match(name, password) if separator else None


class BearerAuth(_SecretAuth):
    """``Authorization: Bearer <token>``, for scripts and reverse proxies."""

    challenge = 'Bearer realm="mongoreact"'

    def __init__(self, tokens: Iterable[Credential]) -> None:
        super().__init__(tokens, "bearer tokens")

    def __call__(self, environ: Environ) -> DashboardUser | None:
        token = self._credentials_of(environ, "bearer")
        return None if token is None else self._match(None, token)


def read_credentials(path: str | os.PathLike[str]) -> list[Credential]:
    """Credentials from a file, one a line: ``role:name:secret`` (``role`` is
    ``viewer`` or ``operator``; the secret may contain ``:``); blank lines and ``#``
    comments are skipped. Secrets live in files or the environment, never in argv,
    where ``ps`` shows them to every user of the machine."""
    credentials = []
    try:
        lines = Path(path).read_text("utf-8").splitlines()
    except OSError as error:
        raise ConfigError("credentials file", str(path), f"cannot read it: {error}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, _, rest = line.partition(":")
        name, _, secret = rest.partition(":")
        if role not in ROLES or not name or not secret:
            raise ConfigError(
                "credentials file", f"{path}:{number}", "expected role:name:secret lines"
            )
        credentials.append(Credential(name, secret, role))  # type: ignore[arg-type]
    return credentials


def auth_from(
    *,
    users_file: str | None = None,
    tokens_file: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Auth | None:
    """The standalone dashboard's authentication: basic auth from ``users_file`` or
    ``MONGOREACT_DASHBOARD_PASSWORD`` (user ``MONGOREACT_DASHBOARD_USER``, default
    ``admin``, an operator), or bearer tokens from ``tokens_file`` or
    ``MONGOREACT_DASHBOARD_TOKEN`` (an operator); both may be given. ``None`` if no
    secret is configured."""
    basic: list[Credential] = read_credentials(users_file) if users_file else []
    bearer: list[Credential] = read_credentials(tokens_file) if tokens_file else []
    if environ.get("MONGOREACT_DASHBOARD_PASSWORD"):
        user = environ.get("MONGOREACT_DASHBOARD_USER") or "admin"
        basic.append(Credential(user, environ["MONGOREACT_DASHBOARD_PASSWORD"]))
    if environ.get("MONGOREACT_DASHBOARD_TOKEN"):
        bearer.append(Credential("token", environ["MONGOREACT_DASHBOARD_TOKEN"]))
    schemes: list[Auth] = []
    if basic:
        schemes.append(BasicAuth(basic))
    if bearer:
        schemes.append(BearerAuth(bearer))
    if not schemes:
        return None
    return schemes[0] if len(schemes) == 1 else AnyOf(schemes)


class AnyOf:
    """The first of several ``auth`` callables that recognises the request."""

    def __init__(self, schemes: list[Auth]) -> None:
        self._schemes = schemes
        self.challenge = next(
            (c for c in (getattr(s, "challenge", None) for s in schemes) if isinstance(c, str)),
            None,
        )

    def __call__(self, environ: Environ) -> DashboardUser | bool | None:
        for scheme in self._schemes:
            answer = scheme(environ)
            if answer:
                return answer
        return None
