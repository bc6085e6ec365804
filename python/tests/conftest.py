"""Fixtures for the package's tests. They test the installed package (``pip install ./python``),
not the source tree: ``src/`` is not on sys.path.

A missing prerequisite (Azurite, sqlite-vec, a Python without extension loading) skips
the test with the reason, unless the environment variable CI is set: then it fails, as in
the Rust tests."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable, Iterator

import pytest

from azurite import Azurite, binary

REPO = Path(__file__).resolve().parents[2]


def require(condition: bool, why: str) -> None:
    """Skip (or, under CI, fail) unless ``condition``."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI is set, so this is a failure, not a skip")
        pytest.skip(why)


@pytest.fixture(autouse=True)
def _no_managedblob_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the tests' URIs only, never from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("MANAGEDBLOB_"):
            monkeypatch.delenv(name)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """An empty local remote directory."""
    path = tmp_path / "remote"
    path.mkdir()
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Callable[[str], Path]:
    """``cache("h1")``: the cache file of host h1 (its directory made)."""

    def make(host: str, name: str = "corpus.db") -> Path:
        directory = tmp_path / host
        directory.mkdir(exist_ok=True)
        return directory / name

    return make


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite for the session, on a free loopback port, stopped at the end."""
    path = binary(REPO)
    require(
        path.exists(), f"Azurite is not installed at {path} (run scripts/azurite.sh, or set AZURITE_BLOB)"
    )
    running = Azurite(path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sqlite_vec():
    """The sqlite-vec package (from PyPI), for vec0 tables."""
    try:
        import sqlite_vec
    except ImportError:
        require(False, "sqlite-vec is not installed (pip install sqlite-vec)")
    require(
        hasattr(sqlite3.Connection, "enable_load_extension"),
        "this Python's sqlite3 cannot load extensions (sqlite-vec needs it); use /usr/bin/python3",
    )
    return sqlite_vec
