"""Run pymongo's own tests against the embedded server: ``python -m tests.peer.run``.

The tests come from pymongo's source distribution at the installed (pinned) version,
fetched through pip into a cache directory - never copied into this repository. Each
test file runs in its own pytest process against a fresh embedded server, with
``tests.peer.plugin`` marking the failures listed in ``expected-failures.txt`` (each
with the reason it cannot pass here). The run fails on any other failure, and on a
listed test that passes.

    python -m tests.peer.run                          # the default files
    python -m tests.peer.run test/test_session.py     # some files
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from mongoreact.testing import EmbeddedServer

ROOT: Final = Path(__file__).resolve().parents[2]
DEFAULT_FILES: Final = (
    "test/test_change_stream.py",
    "test/test_transactions.py",
    "test/test_transactions_unified.py",
    "test/test_session.py",
    "test/test_crud_unified.py",
)
PER_TEST_TIMEOUT: Final = 60  # seconds; a test that hangs is a failure, not a stall


def fetch_sources(version: str, cache: Path) -> Path:
    """pymongo's unpacked source distribution at ``version`` (downloaded once)."""
    unpacked = cache / f"pymongo-{version}"
    if (unpacked / "test" / "__init__.py").exists():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-binary", ":all:", f"pymongo=={version}", "--dest", str(cache)],
        check=True,
    )  # fmt: skip
    with tarfile.open(cache / f"pymongo-{version}.tar.gz") as archive:
        archive.extractall(cache, filter="data")
    return unpacked


def run_file(sources: Path, test_file: str, extra: list[str]) -> int:
    """One test file against a fresh embedded server; pytest's exit status."""
    with EmbeddedServer() as server:
        port = server.uri.rsplit(":", 1)[1].split("/", 1)[0]
        env = {
            **os.environ,
            "DB_IP": "127.0.0.1",
            "DB_PORT": port,
            # This repository first, so ``-p tests.peer.plugin`` imports; pymongo's
            # ``test`` package comes from the working directory (the sources).
            "PYTHONPATH": os.pathsep.join([str(sources), str(ROOT)]),
        }
        command = [
            sys.executable, "-m", "pytest", test_file, "-q", "-p", "no:cacheprovider",
            "-p", "tests.peer.plugin", "-o", "addopts=", "-m", "default or default_async",
            "--timeout", str(PER_TEST_TIMEOUT), "-rfEX", *extra,
        ]  # fmt: skip
        return subprocess.run(command, cwd=sources, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "mongoreact-peer"
    )
    args, extra = parser.parse_known_args(argv)
    version = importlib.metadata.version("pymongo")
    sources = fetch_sources(version, args.cache)
    failed = [name for name in args.files if run_file(sources, name, extra) not in (0, 5)]
    passed = len(args.files) - len(failed)
    print(f"pymongo {version}: {passed} of {len(args.files)} files as expected")
    for name in failed:
        print(f"  unexpected results in {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
