"""``ManagedError``: what a failed statement on a managed database raises, with managedblob's
cause (``PRAGMA managedblob_status`` -> ``last_error``) in the message and as an attribute.

SQLite passes only a result code up from a VFS once the database is open: a failed upload
reaches Python as ``disk I/O error``, a lease held elsewhere as ``database is locked``. The
cause is in the status. Connections from :func:`managedblob.connect` are
:class:`ManagedConnection` objects, whose statements (``execute``, ``executemany``,
``executescript``, their cursors' fetches, ``commit``, ``rollback``, ``with conn:``) turn such
an ``sqlite3.OperationalError`` into a :class:`ManagedError`, a subclass, so existing
``except sqlite3.OperationalError`` blocks still catch it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any, Dict, Iterator, Optional

#: SQLite's primary result codes a managed VFS fails a statement with.
_MANAGED_CODES = {
    5,  # SQLITE_BUSY: the lease is held elsewhere, or the remote moved
    10,  # SQLITE_IOERR (and its extended codes): an upload, download or check failed
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    26,  # SQLITE_NOTADB
}

#: The same, by the messages SQLite gives them (for Pythons before 3.11, whose exceptions
#: carry no code).
_MANAGED_MESSAGES = (
    "disk I/O error",
    "database is locked",
    "database or disk is full",
    "unable to open database file",
    "locking protocol",
    "file is not a database",
)


class ManagedError(sqlite3.OperationalError):
    """A statement on a managed database failed. The message is SQLite's, followed by
    managedblob's cause (``last_error`` of ``PRAGMA managedblob_status``) when it has one.

    Attributes:
        last_error: managedblob's cause (a string), or ``None`` when the status has none (or
            could not be read).
        status: the whole status, as :func:`managedblob.status` gives it, or ``None``.
        sqlite_errorcode, sqlite_errorname: SQLite's, as on the original exception (Python
            3.11 and later).
    """

    last_error: Optional[str]
    status: Optional[Dict[str, Any]]

    def __init__(
        self, message: str, last_error: Optional[str] = None, status: Optional[Dict[str, Any]] = None
    ):
        super().__init__(message)
        self.last_error = last_error
        self.status = status


def _is_managed_failure(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _MANAGED_CODES:
        return True
    text = str(error)
    return "managedblob" in text or any(m in text for m in _MANAGED_MESSAGES)


def _status_of(conn: sqlite3.Connection) -> Optional[Dict[str, Any]]:
    try:
        row = sqlite3.Connection.execute(conn, "PRAGMA managedblob_status").fetchone()
        return json.loads(row[0]) if row else None
    except (sqlite3.Error, ValueError, TypeError):
        return None


def translate(conn: sqlite3.Connection, error: sqlite3.OperationalError) -> sqlite3.OperationalError:
    """``error`` as a :class:`ManagedError` carrying ``conn``'s ``last_error``, when it is a
    failure a managed database gives; else ``error`` itself."""
    if isinstance(error, ManagedError) or not _is_managed_failure(error):
        return error
    status = _status_of(conn)
    last_error = status.get("last_error") if status else None
    message = str(error)
    if last_error and last_error not in message:
        message = f"{message}: {last_error}"
    managed = ManagedError(message, last_error, status)
    for name in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(error, name):
            setattr(managed, name, getattr(error, name))
    return managed


@contextlib.contextmanager
def translating(conn: sqlite3.Connection) -> Iterator[None]:
    """Re-raise a managed failure inside the block as a :class:`ManagedError` (chained to the
    original)."""
    try:
        yield
    except sqlite3.OperationalError as error:
        managed = translate(conn, error)
        if managed is error:
            raise
        raise managed from error


class ManagedCursor(sqlite3.Cursor):
    """A cursor whose statements and fetches raise :class:`ManagedError` for managed
    failures (SQLite runs a statement as its rows are fetched)."""

    def execute(self, *args: Any) -> ManagedCursor:
        with translating(self.connection):
            return super().execute(*args)  # type: ignore[return-value]

    def executemany(self, *args: Any) -> ManagedCursor:
        with translating(self.connection):
            return super().executemany(*args)  # type: ignore[return-value]

    def executescript(self, *args: Any) -> ManagedCursor:
        with translating(self.connection):
            return super().executescript(*args)  # type: ignore[return-value]

    def fetchone(self) -> Any:
        with translating(self.connection):
            return super().fetchone()

    def fetchmany(self, *args: Any, **kwargs: Any) -> Any:
        with translating(self.connection):
            return super().fetchmany(*args, **kwargs)

    def fetchall(self) -> Any:
        with translating(self.connection):
            return super().fetchall()

    def __next__(self) -> Any:
        with translating(self.connection):
            return super().__next__()


class ManagedConnection(sqlite3.Connection):
    """The connection :func:`managedblob.connect` returns: an ``sqlite3.Connection`` whose
    managed failures raise :class:`ManagedError`. Its cursors are :class:`ManagedCursor`
    objects (unless ``cursor(factory=...)`` names another)."""

    def cursor(self, factory: Any = ManagedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, *args: Any) -> Any:
        return self.cursor().execute(*args)

    def executemany(self, *args: Any) -> Any:
        return self.cursor().executemany(*args)

    def executescript(self, *args: Any) -> Any:
        return self.cursor().executescript(*args)

    def commit(self) -> None:
        with translating(self):
            super().commit()

    def rollback(self) -> None:
        with translating(self):
            super().rollback()

    def __exit__(self, *exc: Any) -> Any:
        # Python 3.11's sqlite3 commits here without calling the commit method.
        with translating(self):
            return super().__exit__(*exc)


def connection_class(factory: Any) -> Any:
    """The connection class for ``sqlite3.connect(factory=...)``: :class:`ManagedConnection`,
    or the caller's own ``factory`` with its behaviour added."""
    if factory is None or factory is sqlite3.Connection:
        return ManagedConnection
    if isinstance(factory, type) and issubclass(factory, ManagedConnection):
        return factory
    if isinstance(factory, type) and issubclass(factory, sqlite3.Connection):
        return type(f"Managed{factory.__name__}", (ManagedConnection, factory), {})
    raise TypeError(
        f"managedblob.connect's factory must be a subclass of sqlite3.Connection, got {factory!r}"
    )
