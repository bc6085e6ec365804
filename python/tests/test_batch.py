"""managedblob.batch: one upload for the block; the end runs even when the block raises, and
the block's exception comes out unchanged."""

from __future__ import annotations

import sqlite3

import pytest

import managedblob


def uploads(db: sqlite3.Connection) -> int:
    return managedblob.status(db)["requests"]["versions_up"]


@pytest.fixture
def db(remote, cache):
    conn = managedblob.connect(cache("h1"), remote=remote)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    yield conn
    conn.close()


def rows_on_the_remote(remote, cache) -> int:
    other = managedblob.connect(cache("other"), remote=remote)
    try:
        return other.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        other.close()


def test_many_commits_upload_once(db, remote, cache):
    before = uploads(db)
    with managedblob.batch(db) as same:
        assert same is db
        for i in range(20):
            db.execute("INSERT INTO t VALUES (?)", (i,))
            db.commit()
        inside = managedblob.status(db)
        assert inside["batch_depth"] == 1 and inside["lease_held"] and inside["dirty"], inside
        assert uploads(db) == before
    after = managedblob.status(db)
    assert after["requests"]["versions_up"] == before + 1, after
    assert after["batch_depth"] == 0 and not after["lease_held"] and not after["dirty"], after
    assert rows_on_the_remote(remote, cache) == 20


def test_the_open_implicit_transaction_is_committed_at_the_end(db, remote, cache):
    before = uploads(db)
    with managedblob.batch(db):
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
        assert db.in_transaction  # sqlite3's implicit transaction, left open
    assert not db.in_transaction
    assert uploads(db) == before + 1
    assert rows_on_the_remote(remote, cache) == 5


def test_an_exception_ends_the_batch_keeps_earlier_commits_and_is_not_swallowed(db, remote, cache):
    before = uploads(db)

    class Boom(Exception):
        pass

    with pytest.raises(Boom) as raised:
        with managedblob.batch(db):
            db.execute("INSERT INTO t VALUES ('committed')")
            db.commit()
            db.execute("INSERT INTO t VALUES ('left open')")
            raise Boom("from the block")
    assert str(raised.value) == "from the block"
    assert not getattr(raised.value, "__notes__", None)
    status = managedblob.status(db)
    assert status["batch_depth"] == 0 and not status["lease_held"] and not status["dirty"], status
    assert status["requests"]["versions_up"] == before + 1, status
    # The open transaction was rolled back; the commit before it was uploaded.
    assert db.execute("SELECT x FROM t").fetchall() == [("committed",)]
    assert rows_on_the_remote(remote, cache) == 1


def test_when_the_end_fails_too_the_blocks_exception_comes_out_with_a_note(remote, cache):
    db = managedblob.connect(cache("h1"), remote=remote, retry_attempts=1)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    moved = remote.with_name("moved-away")
    with pytest.raises(KeyError) as raised:
        with managedblob.batch(db):
            db.execute("INSERT INTO t VALUES (1)")
            db.commit()
            remote.rename(moved)  # the end's upload has nowhere to go
            remote.write_text("a file where the remote directory was")
            raise KeyError("mine")
    assert raised.value.args == ("mine",)
    notes = getattr(raised.value, "__notes__", [])
    assert any("ending the batch after this error failed too" in n for n in notes), notes
    remote.unlink()
    moved.rename(remote)
    db.close()


def test_batches_nest_and_only_the_outermost_end_uploads(db):
    before = uploads(db)
    with managedblob.batch(db):
        with managedblob.batch(db):
            db.execute("INSERT INTO t VALUES (1)")
        assert managedblob.status(db)["batch_depth"] == 1
        assert uploads(db) == before
        db.execute("INSERT INTO t VALUES (2)")
    assert uploads(db) == before + 1


def test_a_batch_begun_inside_a_write_transaction_takes_it_in(db, remote, cache):
    before = uploads(db)
    db.execute("INSERT INTO t VALUES (1)")  # sqlite3's implicit transaction, under the lease
    with managedblob.batch(db):
        db.execute("INSERT INTO t VALUES (2)")
    assert not db.in_transaction
    assert uploads(db) == before + 1
    assert rows_on_the_remote(remote, cache) == 2


def test_begin_inside_a_read_transaction_is_refused_and_nothing_is_left_begun(db):
    db.isolation_level = None
    db.execute("BEGIN")
    db.execute("SELECT count(*) FROM t").fetchall()
    with pytest.raises(sqlite3.OperationalError, match="cannot start a batch inside a transaction"):
        with managedblob.batch(db):
            pass
    db.execute("COMMIT")
    assert managedblob.status(db)["batch_depth"] == 0
