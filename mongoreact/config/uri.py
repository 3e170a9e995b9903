"""MongoDB URIs as they may be shown: in reprs, logs, error messages and pages."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

MASK: Final = "***"
# Query options holding a secret (any case): passwords of TLS keys and AWS session
# tokens (in authMechanismProperties), whatever the driver version calls them.
_SECRET_OPTION: Final = re.compile(r"password|secret|token|authmechanismproperties", re.I)
# What may follow the user information: a host list, up to the path or the options.
_HOSTS: Final = re.compile(r"[A-Za-z0-9._\-\[\]:,%]*")


def _split(uri: str) -> tuple[str, str | None, str, str]:
    """``(scheme, userinfo or None, hosts, rest)`` of ``uri`` (``rest`` starts with
    ``/``, ``?`` or is empty). The user information ends at the first ``@`` that a host
    list follows, and its user (before the first ``:``) holds no ``/`` or ``?``: so a
    password with an unescaped ``@``, ``/`` or ``?`` is taken whole, and an ``@`` in an
    option's value (``appName=a@b``) is not taken for one."""
    scheme, _, after = uri.partition("://")
    # The last "@" before the options first (a password may hold "@" and "/"), then
    # every "@" in order (a password may hold "?").
    question = after.find("?")
    candidates = [after.rfind("@", 0, question if question != -1 else len(after))]
    candidates += [i for i, char in enumerate(after) if char == "@"]
    for at in candidates:
        if at == -1:
            continue
        userinfo, tail = after[:at], after[at + 1 :]
        hosts = _HOSTS.match(tail)
        user = userinfo.split(":", 1)[0]
        ends = hosts is not None and (hosts.end() == len(tail) or tail[hosts.end()] in "/?")
        if ends and hosts is not None and "/" not in user and "?" not in user:
            return scheme, userinfo, tail[: hosts.end()], tail[hosts.end() :]
    hosts = _HOSTS.match(after)
    end = hosts.end() if hosts else 0
    return scheme, None, after[:end], after[end:]


def redact_uri(uri: str) -> str:
    """``uri`` with its password and every secret option masked."""
    if "://" not in uri:
        return MASK if "@" in uri or "=" in uri else uri
    scheme, userinfo, hosts, rest = _split(uri)
    shown = f"{scheme}://"
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        shown += f"{user}:{MASK}@" if colon else f"{user}@"
    path, question, query = rest.partition("?")
    if question:
        query = re.sub(
            r"(?P<key>[^&;=]+)=(?P<value>[^&;]*)",
            lambda m: f"{m['key']}={MASK}" if _SECRET_OPTION.search(m["key"]) else m[0],
            query,
        )
    return shown + hosts + path + (f"?{query}" if question else "")


def secrets_of(uri: str) -> list[str]:
    """The secret parts of ``uri`` (its password, secret options' values), raw and
    decoded, so that an error message quoting any of them can be cleaned."""
    if "://" not in uri:
        return []
    _, userinfo, _, rest = _split(uri)
    found = [userinfo.split(":", 1)[1]] if userinfo and ":" in userinfo else []
    _, _, query = rest.partition("?")
    for part in re.split(r"[&;]", query):
        key, equals, value = part.partition("=")
        if equals and _SECRET_OPTION.search(key):
            found.append(value)
    return sorted({s for secret in found if secret for s in (secret, unquote(secret))}, key=len)


def without_secrets(text: str, uri: str | None) -> str:
    """``text`` (an error message) with the secrets of ``uri`` masked wherever quoted."""
    if not uri:
        return text
    text = text.replace(uri, redact_uri(uri))
    for secret in reversed(secrets_of(uri)):  # the longest first
        text = text.replace(secret, MASK)
    return text
