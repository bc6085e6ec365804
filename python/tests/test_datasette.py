"""The Datasette recipe (managedblob.datasette): Datasette serves a managed database live, and a
page shows a row that another cache inserted after the server started. In process (Datasette's
own client) and as the README runs it (``datasette serve -m metadata.json``)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import managedblob

from conftest import require

try:
    from datasette.app import Datasette

    from managedblob.datasette import ManagedDatabase
except ImportError:  # pragma: no cover - the require() below says so
    Datasette = None


@pytest.fixture(autouse=True)
def _datasette_installed():
    require(Datasette is not None, "datasette is not installed (pip install datasette)")


def plugin_metadata(cache: Path, remote: Path) -> dict:
    return {
        "plugins": {
            "managedblob": {
                "databases": {"corpus": {"cache": str(cache), "remote": str(remote), "staleness_ms": 0}}
            }
        }
    }


def rows(db) -> list:
    return [r[0] for r in db.execute("SELECT body FROM t ORDER BY id")]


@pytest.fixture
def writer(remote, cache):
    """Host h1: table t with one row, committed to the remote."""
    db = managedblob.connect(cache("h1"), remote=remote, isolation_level=None)
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO t(body) VALUES ('before the server')")
    yield db
    db.close()


def test_datasette_in_process_shows_a_row_another_cache_inserted(writer, remote, tmp_path):
    ds = Datasette(metadata=plugin_metadata(tmp_path / "datasette-cache" / "corpus.db", remote))

    async def scenario():
        await ds.invoke_startup()
        assert isinstance(ds.databases["corpus"], ManagedDatabase)
        first = await ds.client.get("/corpus/t.json?_shape=array")
        assert first.status_code == 200, first.text
        assert [r["body"] for r in first.json()] == ["before the server"]
        writer.execute("INSERT INTO t(body) VALUES ('inserted by h1')")
        second = await ds.client.get("/corpus/t.json?_shape=array")
        assert [r["body"] for r in second.json()] == ["before the server", "inserted by h1"]

    asyncio.run(scenario())
    # Datasette's cache is a managed cache of its own (its directory made), never written.
    assert (tmp_path / "datasette-cache" / "corpus.db").is_file()
    assert managedblob.status(writer)["requests"]["versions_up"] >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_datasette_serve_from_the_command_line(writer, remote, tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(plugin_metadata(tmp_path / "datasette-cache" / "corpus.db", remote)))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", "-m", str(metadata), "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}/corpus/t.json?_shape=array"
        first = get_json(url, time.monotonic() + 60)
        assert [r["body"] for r in first] == ["before the server"]
        writer.execute("INSERT INTO t(body) VALUES ('inserted by h1')")
        second = get_json(url, time.monotonic() + 10)
        assert [r["body"] for r in second] == ["before the server", "inserted by h1"]
    finally:
        server.kill()
        output = server.communicate()[0].decode(errors="replace")
        print(output)
