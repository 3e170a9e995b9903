"""The embedded server answers in English: every Spanish error message in the installed
mongoeco's source is in the translation table (mongoreact/testing/server/english.py).

It reads mongoeco's source, so Python 3.13: marked ``once``, which CI runs on 3.13 only.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

pytestmark = pytest.mark.once

# Words that only a Spanish message has.
SPANISH = re.compile(
    r"\b(necesita|debe|deben|usa un|no acepta|sesion|transaccion|invalido|recibir|lista)\b"
)


def _messages(tree: ast.AST) -> list[str]:
    """The messages of ``raise X("...")`` and ``message = "..."``, f-strings rendered
    with "12" in each field."""

    def text(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(
                str(part.value) if isinstance(part, ast.Constant) else "12" for part in node.values
            )
        return None

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            found.append(text(node.exc.args[0]))
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "message" for t in node.targets
        ):
            found.append(text(node.value))
    return [message for message in found if message]


def test_every_spanish_message_of_mongoeco_has_an_english_one() -> None:
    import mongoeco

    from mongoreact.testing.server.english import english

    root = pathlib.Path(mongoeco.__file__).parent
    spanish = sorted(
        {
            message
            for path in root.rglob("*.py")
            for message in _messages(ast.parse(path.read_text(encoding="utf-8")))
            if SPANISH.search(message)
        }
    )
    assert len(spanish) >= 20  # the scan finds them (mongoeco 4.11.0 has 28)
    untranslated = [message for message in spanish if english(message) is None]
    assert untranslated == []
    for message in spanish:
        assert not SPANISH.search(english(message) or ""), message


@pytest.mark.parametrize(
    ("spanish", "english_text"),
    [
        ("$in necesita una lista", "$in needs an array"),
        ("$nor debe recibir una lista no vacia", "$and/$or/$nor must be a nonempty array"),
        ("$or necesita una lista de filtros", "$or must be an array"),
        ("string de ObjectId debe ser de 24 hex, no 7",
         "an ObjectId string must be 24 hex characters, not 7"),
    ],
)  # fmt: skip
def test_messages_read_as_mongodb_words_them(spanish: str, english_text: str) -> None:
    from mongoreact.testing.server.english import english, translated

    assert english(spanish) == english_text
    reply = translated({"ok": 0.0, "errmsg": spanish})
    assert reply == {"ok": 0.0, "errmsg": english_text, "code": 2, "codeName": "BadValue"}
    assert translated({"ok": 0.0, "errmsg": "E11000 duplicate key", "code": 11000}) == {
        "ok": 0.0, "errmsg": "E11000 duplicate key", "code": 11000,
    }  # fmt: skip
