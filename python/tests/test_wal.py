"""Apps that ask for WAL at connect (issue 14, item 2): on a managed database
``PRAGMA journal_mode=WAL`` (and ``=OFF``) is answered as SQLite answers a mode it cannot
set: no error, and the mode in force is returned. Writes then go on as usual."""

from __future__ import annotations

import pytest

import managedblob


@pytest.mark.parametrize("asked", ["WAL", "wal", "OFF"])
def test_an_unsupported_journal_mode_returns_the_mode_in_force(remote, cache, asked):
    db = managedblob.connect(cache("h1"), remote=remote, isolation_level=None)
    assert db.execute(f"PRAGMA journal_mode={asked}").fetchall() == [("delete",)]
    assert db.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
    db.execute("CREATE TABLE t(x)")
    db.execute("INSERT INTO t VALUES (1)")
    assert managedblob.status(db)["requests"]["versions_up"] == 2
    db.close()
    other = managedblob.connect(cache("h2"), remote=remote)
    assert other.execute("SELECT x FROM t").fetchall() == [(1,)]
    other.close()


def test_the_mode_in_force_is_returned_when_it_is_not_the_default(remote, cache):
    db = managedblob.connect(cache("h1"), remote=remote, isolation_level=None)
    assert db.execute("PRAGMA journal_mode=TRUNCATE").fetchall() == [("truncate",)]
    assert db.execute("PRAGMA journal_mode=WAL").fetchall() == [("truncate",)]
    db.close()
