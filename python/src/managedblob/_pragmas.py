"""The managedblob pragmas as Python: ``batch`` (``PRAGMA managedblob_batch=begin`` ... ``=end``)
and ``status`` (``PRAGMA managedblob_status``)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any, Dict, Iterator


def _batch_pragma(conn: sqlite3.Connection, value: str) -> None:
    conn.execute(f"PRAGMA managedblob_batch={value}").fetchall()


@contextlib.contextmanager
def batch(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A managedblob batch around the block: the commits inside it stay in the local cache,
    under the remote lease, and the end uploads them once.

    ``PRAGMA managedblob_batch=begin`` on entry (inside a read transaction it fails: finish
    that first; a write transaction, which holds the lease already, joins the batch).
    On leaving, like ``with conn:``, the transaction the block left open (``sqlite3``'s
    implicit one) is committed, or rolled back if the block raised; then
    ``PRAGMA managedblob_batch=end`` always runs, which uploads what the batch committed and
    releases the lease. The block's exception is re-raised, never swallowed; if ending the
    batch fails as well, that failure is added to it as a note. Batches nest; only the
    outermost end uploads.

    >>> with managedblob.batch(conn):
    ...     conn.executemany("INSERT INTO t(body) VALUES (?)", rows)
    """
    _batch_pragma(conn, "begin")
    try:
        yield conn
        if conn.in_transaction:
            conn.commit()
    except BaseException as failure:
        try:
            if conn.in_transaction:
                conn.rollback()
            _batch_pragma(conn, "end")
        except sqlite3.Error as end_failure:
            note = f"managedblob: ending the batch after this error failed too: {end_failure}"
            if hasattr(failure, "add_note"):
                failure.add_note(note)
        raise
    _batch_pragma(conn, "end")


def status(conn: sqlite3.Connection) -> Dict[str, Any]:
    """``PRAGMA managedblob_status`` as a dict: ``remote``, ``blob``, ``etag``, ``dirty``,
    ``flush_due_ms`` (only while deferred commits wait, ``flush_ms``), ``lease_held``,
    ``batch_depth``, ``generation``, ``in_flight``, ``waiting_on`` (the remote requests
    under way, e.g. ``["upload"]``), ``conflicts``, ``last_error`` and ``requests`` (per kind, bytes, and ``versions_up`` /
    ``versions_down``: versions published and taken in), ``fetch`` (``full`` or ``lazy``) and, for a
    lazy cache, ``residence`` (``chunks_present``, ``chunks_total``, ``chunk_size``,
    ``resident_bytes``, ``cache_hits``, ``cache_misses``, ``chunks_fetched``,
    ``chunks_evicted``, ``fetch_rounds``; see the README). Secrets never appear in it.

    Raises ``ValueError`` when ``conn``'s main database is not a managed one.
    """
    row = conn.execute("PRAGMA managedblob_status").fetchone()
    if row is None:
        raise ValueError(
            "not a managed database: PRAGMA managedblob_status gave no row "
            "(open it with managedblob.connect, or a file: URI with vfs=managedblob)"
        )
    result: Dict[str, Any] = json.loads(row[0])
    return result
