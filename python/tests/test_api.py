"""The package API: loadable_path, load, connect (URI and escaping), status."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

import pytest

import managedblob
from managedblob import _connect as managedblob_connect
from conftest import REPO, require


def count(path: Path, table: str) -> int:
    """Rows of ``table`` in a plain SQLite file (a remote blob), opened without managedblob."""
    plain = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        return plain.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        plain.close()


def test_loadable_path_is_the_extension_in_the_package():
    path = Path(managedblob.loadable_path())
    assert path.is_file(), path
    assert path.parent == Path(managedblob.__file__).resolve().parent
    # SQLite's default entry point comes from the name: libmanagedblob... -> sqlite3_managedblob_init.
    assert path.name.startswith("libmanagedblob."), path.name


def test_import_registers_the_vfs_for_plain_sqlite3(remote, cache):
    uri = f"file:{cache('h1')}?vfs=managedblob&remote={remote}"
    db = sqlite3.connect(uri, uri=True)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    assert managedblob.status(db)["blob"] == "corpus.db"
    db.close()
    assert count(remote / "corpus.db", "t") == 0


def test_load_into_a_connection_is_harmless_again_and_restores_its_switch(remote, cache):
    conn = sqlite3.connect(":memory:")
    managedblob.load(conn)
    managedblob.load(conn)  # the VFS is there already: loading again changes nothing
    if hasattr(conn, "enable_load_extension"):
        # Loading was off before, so it is off again: SQL's load_extension() is refused.
        with pytest.raises(sqlite3.OperationalError, match="not authorized"):
            conn.execute("SELECT load_extension(?)", (managedblob.loadable_path(),))
    db = sqlite3.connect(f"file:{cache('h1')}?vfs=managedblob&remote={remote}", uri=True)
    assert managedblob.status(db)["dirty"] is False
    db.close()


def test_connect_writes_through_and_a_second_host_reads(remote, cache):
    h1 = managedblob.connect(cache("h1"), remote=remote, isolation_level=None)
    h1.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
    h1.execute("INSERT INTO t(body) VALUES ('one'), ('two')")
    status = managedblob.status(h1)
    assert status["requests"]["versions_up"] == 2, status
    # Uploaded; the lease lingers (lease_linger_ms, 1 s by default) for the next write.
    assert status["dirty"] is False and status["lease_held"] is True, status
    assert status["remote"].endswith(str(remote)), status
    h1.close()
    assert count(remote / "corpus.db", "t") == 2

    h2 = managedblob.connect(cache("h2"), remote=remote)
    assert h2.execute("SELECT group_concat(body, ',') FROM t").fetchone()[0] == "one,two"
    assert managedblob.status(h2)["requests"]["versions_down"] == 1
    h2.close()


def test_settings_reach_the_vfs(remote, cache):
    db = managedblob.connect(
        cache("h1", "local-name.db"), remote=remote, blob="shared/corpus.db", staleness_ms=0
    )
    db.execute("CREATE TABLE t(x)")
    db.commit()
    assert managedblob.status(db)["blob"] == "shared/corpus.db"
    db.close()
    assert (remote / "shared" / "corpus.db").is_file()


def test_a_lazy_host_fetches_what_it_reads(remote, cache):
    h1 = managedblob.connect(cache("h1"), remote=remote, isolation_level=None)
    h1.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    h1.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
        "INSERT INTO t SELECT i, randomblob(4000) FROM n"
    )
    h1.close()
    lazy = managedblob.connect(cache("h2"), remote=remote, fetch="lazy", cache_max="256MiB")
    assert lazy.execute("SELECT length(body) FROM t WHERE id = 1500").fetchone()[0] == 4000
    status = managedblob.status(lazy)
    assert status["fetch"] == "lazy", status
    residence = status["residence"]
    assert 0 < residence["chunks_present"] < residence["chunks_total"], status
    lazy.close()


def test_lease_linger_zero_gives_the_lease_back_with_each_commit(remote, cache):
    db = managedblob.connect(cache("h1"), remote=remote, lease_linger_ms=0, isolation_level=None)
    db.execute("CREATE TABLE t(x)")
    status = managedblob.status(db)
    assert status["dirty"] is False and status["lease_held"] is False, status
    assert status["requests"]["lease_release"] == 1, status
    db.close()


def test_connect_knows_every_setting_of_the_vfs():
    # The VFS's settings are the URI names in src/config/mod.rs (Key::uri_name) and the
    # pinned-version parameters (src/pinned.rs); connect() must pass each of them on.
    config = REPO / "src" / "config" / "mod.rs"
    require(config.is_file(), f"{config} (the VFS's settings) is not in this checkout")
    text = config.read_text()
    body = text[text.index("pub fn uri_name") : text.index("pub fn env_name")]
    names = set(re.findall(r'=> "([a-z_]+)"', body)) | {"as_of", "version"}
    names.discard("remote")  # connect()'s own argument
    assert len(names) >= 10, names
    assert names <= set(managedblob_connect.SETTINGS), names - set(managedblob_connect.SETTINGS)


def test_read_only_mode_opens_without_a_lease(remote, cache):
    writer = managedblob.connect(cache("h1"), remote=remote)
    writer.execute("CREATE TABLE t(x)")
    writer.commit()
    writer.close()
    reader = managedblob.connect(cache("h2"), remote=remote, mode="ro")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("INSERT INTO t VALUES (1)")
    assert managedblob.status(reader)["requests"]["lease_acquire"] == 0
    reader.close()


def test_paths_and_remotes_with_uri_syntax_in_them_are_escaped(tmp_path):
    # A cache path and a remote directory with every character that means something in a
    # file: URI (space, ?, #, %, &, =, +).
    odd = "a b?c#d%e&f=g+h"
    remote = tmp_path / f"remote {odd}"
    remote.mkdir()
    cache_dir = tmp_path / f"cache {odd}"
    cache_dir.mkdir()
    db = managedblob.connect(cache_dir / f"db {odd}.sqlite", remote=remote, isolation_level=None)
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (1)")
    assert managedblob.status(db)["blob"] == f"db {odd}.sqlite"
    db.close()
    assert (cache_dir / f"db {odd}.sqlite").is_file()
    assert count(remote / f"db {odd}.sqlite", "t") == 1


def test_uri_escapes_a_sas_so_sqlite_hands_it_over_unchanged():
    sas = "sv=2019-12-12&sp=rwdlac&se=2099-01-01T00:00:00Z&sig=ab%2Bc%2Fd%3D"
    uri = managedblob.uri("/caches/h1/x.db", f"https://acct.blob.core.windows.net/c?{sas}", lease_secs=20)
    assert uri == (
        "file:/caches/h1/x.db?vfs=managedblob&remote=https://acct.blob.core.windows.net/c"
        "%3Fsv%3D2019-12-12%26sp%3Drwdlac%26se%3D2099-01-01T00:00:00Z%26sig%3Dab%252Bc%252Fd%253D"
        "&lease_secs=20"
    )
    # A leading '//' would be read as a URI authority.
    assert managedblob.uri("//srv/x.db").startswith("file:/srv/x.db?")


def test_unknown_settings_are_refused_by_name(remote, cache):
    with pytest.raises(TypeError, match="staleness"):
        managedblob.connect(cache("h1"), remote=remote, staleness=0)


def test_a_missing_remote_raises_the_vfs_message(cache):
    with pytest.raises(sqlite3.OperationalError, match="setting 'remote' is missing"):
        managedblob.connect(cache("h1"))


def test_remote_from_the_environment(remote, cache, monkeypatch):
    monkeypatch.setenv("MANAGEDBLOB_REMOTE", str(remote))
    db = managedblob.connect(cache("h1"))
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    assert (remote / "corpus.db").is_file()


def test_status_of_a_plain_database_says_it_is_not_managed(tmp_path):
    plain = sqlite3.connect(tmp_path / "plain.db")
    with pytest.raises(ValueError, match="not a managed database"):
        managedblob.status(plain)
    plain.close()


def test_azure_remote_with_a_sas_in_the_url(azurite, cache):
    remote = azurite.fresh_container()
    signature = remote.rsplit("sig=", 1)[1]
    db = managedblob.connect(cache("h1"), remote=remote, isolation_level=None)
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (42)")
    status = managedblob.status(db)
    db.close()
    assert status["remote"].startswith(f"azure:http://127.0.0.1:{azurite.port}/"), status
    assert signature not in str(status)
    assert status["requests"]["versions_up"] == 2, status
    other = managedblob.connect(cache("h2"), remote=remote)
    assert other.execute("SELECT x FROM t").fetchall() == [(42,)]
    other.close()
