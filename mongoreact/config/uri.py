"""MongoDB URIs as they may be shown: in reprs, logs, error messages and pages."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, quote, unquote

MASK: Final = "***"
# Query options holding a secret (compared in lower case): passwords of TLS keys and
# AWS session tokens (in authMechanismProperties), whatever the driver version calls them.
_SECRET_OPTION: Final = re.compile(r"password|secret|token|authmechanismproperties", re.I)


def redact_uri(uri: str) -> str:
    """``uri`` with its password and every secret query option masked.

    The user information ends at the *last* ``@`` before the query string, as drivers
    read it: a password holding an unescaped ``@`` is masked whole, never in part.
    """
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return MASK if "@" in uri else uri
    authority_and_path, question, query = rest.partition("?")
    userinfo, at, hosts = authority_and_path.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0]
        authority_and_path = f"{user}:{MASK}@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    if question:
        query = "&".join(
            f"{key}={MASK if _SECRET_OPTION.search(key) else quote(value, safe=':/,@')}"
            for key, value in parse_qsl(query, keep_blank_values=True)
        )
    return f"{scheme}://{authority_and_path}" + (f"?{query}" if question else "")


def secrets_of(uri: str) -> list[str]:
    """The secret parts of ``uri`` (its password, secret options' values), so that an
    error message quoting any of them can be cleaned (``without_secrets``)."""
    _, _, rest = uri.partition("://")
    authority_and_path, _, query = rest.partition("?")
    userinfo, at, _ = authority_and_path.rpartition("@")
    found = [userinfo.split(":", 1)[1]] if at and ":" in userinfo else []
    found += [v for k, v in parse_qsl(query) if _SECRET_OPTION.search(k)]
    return [s for secret in found if secret for s in {secret, unquote(secret)}]


def without_secrets(text: str, uri: str | None) -> str:
    """``text`` (an error message) with the secrets of ``uri`` masked wherever quoted."""
    if not uri:
        return text
    for secret in sorted(secrets_of(uri), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text.replace(uri, redact_uri(uri))
