"""The corpus_search demo (examples/corpus_search) on a local remote and on Azurite: the
ingest is one upload, and a second host (another cache) searches what it ingested. Then FTS5
and vec0 queries, directly, on a database opened on a second host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

import managedblob

from conftest import REPO

DEMO = REPO / "examples" / "corpus_search"
SAMPLES = DEMO / "sample_texts"


def demo(env: Dict[str, str], cache: Path, *args: str) -> dict:
    """Run the demo with ``--json`` as its own process (as a user would); its report."""
    done = subprocess.run(
        [sys.executable, str(DEMO / "corpus_search.py"), "--cache", str(cache), "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return json.loads(done.stdout)


def check_ingest_and_search_on_two_hosts(env: Dict[str, str], tmp_path: Path, corpus: Path) -> None:
    ingest = demo(env, tmp_path / "h1", "ingest", str(corpus))
    assert (ingest["files"], ingest["unchanged"]) == (6, 0), ingest
    assert ingest["chunks"] == 18, ingest
    # The whole ingest (schema, 18 chunks in three indexes) is one upload.
    assert ingest["counters"]["uploads"] == 1, ingest
    assert ingest["status"]["dirty"] is False and ingest["status"]["lease_held"] is False, ingest

    found = demo(env, tmp_path / "h2", "search", "lease expires before renewal", "-k", "2")
    assert found["counters"] == {**found["counters"], "uploads": 0, "downloads": 1}, found
    assert [h["path"] for h in found["fts"]][:1] == ["leases.txt"], found
    assert found["fts"][0]["snippet"].count("[") >= 1, found
    assert found["vector"][0]["path"] == "leases.txt", found
    assert len(found["vector"]) == 2, found

    found = demo(env, tmp_path / "h2", "search", "sourdough starter")
    assert found["fts"][0]["path"] == "sourdough.txt", found
    assert found["vector"][0]["path"] == "sourdough.txt", found

    # A changed file, ingested on host 2: only it is indexed again, in one upload.
    (corpus / "comets.txt").write_text("Comets have tails.\n\nHalley's comet returns every 76 years.\n")
    again = demo(env, tmp_path / "h2", "ingest", str(corpus))
    assert (again["files"], again["chunks"], again["unchanged"]) == (1, 2, 5), again
    assert again["counters"]["uploads"] == 1, again
    found = demo(env, tmp_path / "h1", "search", "Halley")
    assert [(h["path"], h["chunk"]) for h in found["fts"]] == [("comets.txt", 2)], found

    # A third host searches lazily: the same hits, from a sparse cache that fetched
    # only part of the database, and says how much.
    lazy = demo(env, tmp_path / "h3", "--fetch", "lazy", "search", "Halley")
    assert [(h["path"], h["chunk"]) for h in lazy["fts"]] == [("comets.txt", 2)], lazy
    assert lazy["status"]["fetch"] == "lazy", lazy
    present, total = lazy["counters"]["chunks_present"], lazy["counters"]["chunks_total"]
    assert 0 < present <= total, lazy
    assert lazy["counters"]["downloads"] == 1 and lazy["counters"]["bytes_down"] > 0, lazy


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A copy of the sample texts (a test changes one)."""
    return Path(shutil.copytree(SAMPLES, tmp_path / "texts"))


def test_demo_on_a_local_remote(sqlite_vec, tmp_path, corpus):
    env = {"CORPUS_SEARCH_BACKEND": "local", "CORPUS_SEARCH_LOCAL_DIR": str(tmp_path / "remote")}
    check_ingest_and_search_on_two_hosts(env, tmp_path, corpus)
    assert (tmp_path / "remote" / "corpus.db").is_file()


def test_demo_on_azurite(sqlite_vec, azurite, tmp_path, corpus):
    url = azurite.fresh_container()
    env = {"CORPUS_SEARCH_BACKEND": "azure", "CORPUS_SEARCH_AZURE_CONTAINER_URL": url}
    check_ingest_and_search_on_two_hosts(env, tmp_path, corpus)


def test_demo_refuses_an_unknown_backend(tmp_path):
    done = subprocess.run(
        [sys.executable, str(DEMO / "corpus_search.py"), "--cache", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CORPUS_SEARCH_BACKEND": "s3"},
    )
    assert done.returncode == 2
    assert "CORPUS_SEARCH_BACKEND must be local or azure" in done.stderr


def test_fts5_and_vec0_queries_on_a_second_host(sqlite_vec, remote, cache):
    def open_host(host: str):
        db = managedblob.connect(cache(host), remote=remote)
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.enable_load_extension(False)
        return db

    h1 = open_host("h1")
    with managedblob.batch(h1):
        h1.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
        h1.execute("CREATE VIRTUAL TABLE points USING vec0(v float[3])")
        h1.executemany(
            "INSERT INTO notes(rowid, body) VALUES (?, ?)",
            [(1, "blob leases expire"), (2, "bread needs a starter"), (3, "leases are renewed")],
        )
        h1.executemany(
            "INSERT INTO points(rowid, v) VALUES (?, ?)",
            [
                (1, sqlite_vec.serialize_float32([1, 0, 0])),
                (2, sqlite_vec.serialize_float32([0, 1, 0])),
                (3, sqlite_vec.serialize_float32([0.9, 0.1, 0])),
            ],
        )
    assert managedblob.status(h1)["requests"]["versions_up"] == 1
    h1.close()

    h2 = open_host("h2")
    fts = h2.execute("SELECT rowid FROM notes WHERE notes MATCH 'leases' ORDER BY rowid").fetchall()
    assert fts == [(1,), (3,)]
    nearest = h2.execute(
        "SELECT rowid FROM points WHERE v MATCH ? AND k = 2 ORDER BY distance",
        (sqlite_vec.serialize_float32([1, 0.05, 0]),),
    ).fetchall()
    assert nearest == [(1,), (3,)]
    status = managedblob.status(h2)
    assert status["requests"]["versions_down"] == 1 and status["requests"]["versions_up"] == 0, status
    h2.close()
