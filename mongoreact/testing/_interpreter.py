"""Find (or provision) a Python interpreter that can run the embedded server.

The server is built on mongoeco, which needs Python >= 3.13, while mongoreact itself
supports 3.10+. In order of preference the server runs on:

1. ``$MONGOREACT_SERVER_PYTHON``;
2. the current interpreter, when it is 3.13+ and has mongoeco installed;
3. a private virtual environment under the user cache directory, created once from any
   Python 3.13+ found on the machine, with the server's requirements installed by pip.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ..errors import MongoReactError

logger = logging.getLogger(__name__)

MONGOECO_VERSION: Final = "4.11.0"  # the one the server is written against (server/seam.py)
MONGOECO_REQUIREMENT: Final = f"mongoeco=={MONGOECO_VERSION}"
# What `import mongoreact.testing.server` needs besides mongoeco (mongoreact's own
# runtime dependencies are imported by the package's __init__).
_SERVER_REQUIREMENTS: Final = (
    MONGOECO_REQUIREMENT,
    "pymongo>=4.9,<5",
    "attrs>=23.1",
    "tenacity>=8.2",
    "croniter>=2.0",
)
_MIN_VERSION: Final = (3, 13)
FIRST_RUN_NOTICE: Final = (
    "first run: preparing a Python 3.13 environment for the embedded server (mongoeco) "
    "in the user cache; this takes a few seconds, once"
)


class ServerInterpreterError(MongoReactError):
    """No Python 3.13+ interpreter could be found or prepared for the embedded server."""


def server_python() -> str:
    """Path of a Python executable able to run ``python -m mongoreact.testing.server``."""
    configured = os.environ.get("MONGOREACT_SERVER_PYTHON")
    if configured:
        return configured
    if _hosts_server():
        return sys.executable
    return str(_provisioned_python())


def server_ready() -> bool:
    """Whether the embedded server can start without preparing an environment first
    (the first run on a machine whose Python cannot host it takes a few seconds)."""
    if os.environ.get("MONGOREACT_SERVER_PYTHON"):
        return True
    if _hosts_server():
        return True
    return (_venv_dir() / ".complete").exists()


def _hosts_server() -> bool:
    """Whether this interpreter can run the server: Python 3.13+ with the mongoeco the
    server is written against (another version: the prepared environment is used)."""
    if sys.version_info < _MIN_VERSION or importlib.util.find_spec("mongoeco") is None:
        return False
    try:
        installed = importlib.metadata.version("mongoeco")
    except importlib.metadata.PackageNotFoundError:
        return False
    if installed != MONGOECO_VERSION:
        logger.warning(
            "mongoeco %s is installed here; the embedded server needs %s and runs in its "
            "own environment",
            installed, MONGOECO_VERSION,
        )  # fmt: skip
        return False
    return True


def _venv_dir() -> Path:
    return cache_dir() / ("server-" + MONGOECO_REQUIREMENT.replace("==", "-"))


def cache_dir() -> Path:
    """``$MONGOREACT_CACHE_DIR``, else ``$XDG_CACHE_HOME/mongoreact`` (~/.cache/mongoreact)."""
    explicit = os.environ.get("MONGOREACT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "mongoreact"


def _provisioned_python() -> Path:
    venv = _venv_dir()
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if marker.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(venv.parent / (venv.name + ".lock")):
        if marker.exists():
            return python
        base = _find_base_python()
        logger.info("creating the embedded server environment in %s", venv)
        shutil.rmtree(venv, ignore_errors=True)
        _run([base, "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", *_SERVER_REQUIREMENTS])
        marker.write_text(MONGOECO_REQUIREMENT + "\n")
    return python


def _find_base_python() -> str:
    candidates: list[str] = []
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for pattern in ("3.13*", "3.14*", "3.15*"):
        candidates += sorted(
            glob.glob(os.path.join(pyenv_root, "versions", pattern, "bin", "python3"))
        )
    for name in ("python3.13", "python3.14", "python3.15", "python3"):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    for candidate in candidates:
        if _version_of(candidate) >= _MIN_VERSION:
            return candidate
    raise ServerInterpreterError(
        "the embedded MongoDB server needs Python >= 3.13 (for mongoeco) and none was "
        "found; install one or set MONGOREACT_SERVER_PYTHON to an interpreter that has "
        f"'{MONGOECO_REQUIREMENT}' installed"
    )


def _version_of(python: str) -> tuple[int, int]:
    try:
        output = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return int(output[0]), int(output[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return (0, 0)


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServerInterpreterError(
            f"preparing the embedded server environment failed: {' '.join(command)}\n"
            f"{result.stderr.strip()[-2000:]}"
        )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
