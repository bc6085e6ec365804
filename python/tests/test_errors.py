"""managedblob.ManagedError: a failed statement on a managed database carries managedblob's cause
(``last_error``), in its message and as an attribute; it is an ``sqlite3.OperationalError``. And
the cache directory: ``connect`` makes a missing one, mode 0700."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import traceback

import pytest

import managedblob


@pytest.fixture
def table(remote, cache):
    """Host h1's connection to a database with table t, committed to the remote."""
    # No warm lease after a commit: the tests' other host takes the lease at once.
    conn = managedblob.connect(cache("h1"), remote=remote, timeout=0, lease_linger_ms=0)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    yield conn
    conn.close()


def full_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def test_a_write_refused_by_a_lease_elsewhere_says_why(table, remote, cache):
    other = managedblob.connect(cache("h2"), remote=remote, isolation_level=None, lease_linger_ms=0)
    other.execute("PRAGMA managedblob_batch=begin").fetchall()  # h2 holds the lease
    try:
        with pytest.raises(managedblob.ManagedError) as caught:
            table.execute("INSERT INTO t VALUES (1)")
            table.commit()
        error = caught.value
        assert isinstance(error, sqlite3.OperationalError)
        assert error.last_error, error.status
        assert "held by another writer" in error.last_error, error.last_error
        assert str(error).startswith("database is locked: "), str(error)
        assert error.last_error in str(error)
        assert error.status["blob"] == "corpus.db"
        assert getattr(error, "sqlite_errorname", "SQLITE_BUSY").startswith("SQLITE_BUSY")
        # The cause reaches the traceback, with SQLite's own error chained to it.
        assert "held by another writer" in full_text(error)
        assert isinstance(error.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("PRAGMA managedblob_batch=end").fetchall()
        other.close()


def test_a_failed_upload_is_more_than_disk_io_error(table, remote, tmp_path):
    # The remote directory goes away and a file takes its place: every request fails.
    shutil.move(str(remote), str(tmp_path / "moved-away"))
    remote.write_text("not a directory")
    with pytest.raises(managedblob.ManagedError) as caught:
        table.execute("INSERT INTO t VALUES (1)")
        table.commit()
    error = caught.value
    print(error)
    assert error.last_error, error.status
    assert error.last_error in str(error)
    assert "managedblob" in error.last_error
    assert str(remote) in error.last_error or "Not a directory" in error.last_error, error.last_error


def test_a_failed_commit_in_a_with_block_says_why(table, remote, tmp_path):
    # The insert takes the lease (and keeps it); the commit's upload then fails.
    table.execute("INSERT INTO t VALUES (0)")
    shutil.move(str(remote), str(tmp_path / "moved-away"))
    remote.write_text("not a directory")
    with pytest.raises(managedblob.ManagedError) as caught:
        with table:
            table.execute("INSERT INTO t VALUES (1)")
    assert caught.value.last_error, caught.value.status
    assert caught.value.last_error in str(caught.value)


def test_fetches_and_executemany_translate_too(table, remote, cache):
    other = managedblob.connect(cache("h2"), remote=remote, isolation_level=None, lease_linger_ms=0)
    other.execute("PRAGMA managedblob_batch=begin").fetchall()
    try:
        with pytest.raises(managedblob.ManagedError, match="held by another writer"):
            table.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
            table.commit()
        table.rollback()
        cursor = table.cursor()
        assert isinstance(cursor, managedblob.ManagedCursor)
        with pytest.raises(managedblob.ManagedError, match="held by another writer"):
            # The statement runs at the fetch; RETURNING makes it a write that returns rows.
            cursor.execute("INSERT INTO t VALUES (3) RETURNING x")
            cursor.fetchall()
            table.commit()
    finally:
        other.execute("PRAGMA managedblob_batch=end").fetchall()
        other.close()


def test_other_errors_are_left_as_they_are(table):
    with pytest.raises(sqlite3.OperationalError) as caught:
        table.execute("SELECT * FROM no_such_table")
    assert not isinstance(caught.value, managedblob.ManagedError)
    assert "no such table" in str(caught.value)


def test_an_open_error_is_a_managed_error(tmp_path):
    with pytest.raises(managedblob.ManagedError, match="setting 'lease_secs'") as caught:
        managedblob.connect(tmp_path / "h1" / "c.db", remote=tmp_path / "remote", lease_secs=5)
    assert isinstance(caught.value, sqlite3.OperationalError)


def test_a_factory_of_the_callers_keeps_its_behaviour(remote, cache):
    class Mine(sqlite3.Connection):
        def greet(self) -> str:
            return "hello"

    conn = managedblob.connect(cache("h1"), remote=remote, factory=Mine)
    assert isinstance(conn, Mine) and isinstance(conn, managedblob.ManagedConnection)
    assert conn.greet() == "hello"
    conn.close()


def test_plain_sqlite3_gets_it_with_the_factory(table, remote, cache):
    other = managedblob.connect(cache("h2"), remote=remote, isolation_level=None, lease_linger_ms=0)
    other.execute("PRAGMA managedblob_batch=begin").fetchall()
    try:
        plain = sqlite3.connect(
            managedblob.uri(cache("h3"), remote), uri=True, timeout=0, factory=managedblob.ManagedConnection
        )
        with pytest.raises(managedblob.ManagedError, match="held by another writer"):
            plain.execute("INSERT INTO t VALUES (1)")
        plain.close()
    finally:
        other.execute("PRAGMA managedblob_batch=end").fetchall()
        other.close()


def test_connect_makes_a_missing_cache_directory_private(remote, tmp_path):
    cache = tmp_path / "new" / "nested" / "corpus.db"
    conn = managedblob.connect(cache, remote=remote)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    assert cache.is_file()
    for directory in (tmp_path / "new", tmp_path / "new" / "nested"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert (remote / "corpus.db").is_file()


def test_plain_sqlite3_with_mode_rwc_makes_it_too_and_mode_rw_names_it(remote, tmp_path):
    made = tmp_path / "made" / "c.db"
    sqlite3.connect(managedblob.uri(made, remote), uri=True).close()
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    missing = tmp_path / "nodir" / "c.db"
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite3.connect(managedblob.uri(missing, remote, mode="rw"), uri=True)
    assert f"its directory {missing.parent} does not exist" in str(caught.value), str(caught.value)
    assert not missing.parent.exists()
