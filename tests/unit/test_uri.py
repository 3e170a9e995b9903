"""URIs as shown in reprs, logs and messages: no password, no secret option, however
the URI is written (review findings: "?" and "/" in passwords, ";" separators)."""

from __future__ import annotations

import pytest

from mongoreact.config.uri import redact_uri, without_secrets


@pytest.mark.parametrize(
    ("uri", "shown", "secrets"),
    [
        ("mongodb://u:pw@h:1/db", "mongodb://u:***@h:1/db", ["pw"]),
        ("mongodb://u:p@ss@h1,h2/db?replicaSet=rs", "mongodb://u:***@h1,h2/db?replicaSet=rs",
         ["p@ss"]),
        ("mongodb://u:pa?ss@h/db", "mongodb://u:***@h/db", ["pa?ss"]),
        ("mongodb://u:p/ss@h/db", "mongodb://u:***@h/db", ["p/ss"]),
        ("mongodb://u:p@h/x@host/db", "mongodb://u:***@host/db", ["p@h/x"]),
        ("mongodb://u:p%40ss@h", "mongodb://u:***@h", ["p%40ss", "p@ss"]),
        ("mongodb+srv://u:s3cret@cluster.x/db?w=majority",
         "mongodb+srv://u:***@cluster.x/db?w=majority", ["s3cret"]),
        ("mongodb://h/db?appName=a@b&tlsCertificateKeyFilePassword=kp99",
         "mongodb://h/db?appName=a@b&tlsCertificateKeyFilePassword=***", ["kp99"]),
        ("mongodb://h/?appname=x;TLSCERTIFICATEKEYFILEPASSWORD=kp99",
         "mongodb://h/?appname=x;TLSCERTIFICATEKEYFILEPASSWORD=***", ["kp99"]),
        ("mongodb://u@h/?authMechanismProperties=AWS_SESSION_TOKEN:tok9",
         "mongodb://u@h/?authMechanismProperties=***", ["AWS_SESSION_TOKEN:tok9"]),
        ("mongodb://[::1]:27017/db", "mongodb://[::1]:27017/db", []),
        ("mongodb://a:b9@", "mongodb://a:***@", ["b9"]),
    ],
)  # fmt: skip
def test_secrets_never_survive(uri: str, shown: str, secrets: list[str]) -> None:
    assert redact_uri(uri) == shown
    quoted = " and ".join(secrets)
    message = without_secrets(f"cannot connect to {uri}: {quoted} refused", uri)
    for secret in secrets:
        assert secret not in redact_uri(uri) and secret not in message
