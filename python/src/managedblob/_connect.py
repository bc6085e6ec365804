"""``connect``: a ``sqlite3`` connection to a managed database, from a cache path, a remote and
settings, through a ``file:`` URI built (and percent-escaped) here."""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Dict, Optional, Union
from urllib.parse import quote

from ._errors import ManagedError, connection_class
from ._extension import VFS_NAME, register

PathLike = Union[str, "os.PathLike[str]"]

#: managedblob's settings (README, Configuration), passed as URI parameters; ``mode`` is
#: SQLite's own (``ro``: read-only, no lease, no upload).
SETTINGS = (
    "blob",
    "lease_secs",
    "lease_linger_ms",
    "staleness_ms",
    "retry_attempts",
    "retry_base_ms",
    "retry_total_ms",
    "sync",
    "history",
    "flush_ms",
    "fetch",
    "cache_max",
    "as_of",
    "version",
    "mode",
)

#: Keyword arguments handed to ``sqlite3.connect`` itself.
SQLITE_CONNECT_ARGS = (
    "timeout",
    "detect_types",
    "isolation_level",
    "check_same_thread",
    "factory",
    "cached_statements",
    "autocommit",
)


def _escape_path(path: str) -> str:
    # Only %, ? and # end or alter a URI path; quote() also escapes spaces and non-ASCII,
    # which SQLite decodes the same way. A leading '//' would read as an authority.
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return quote(path, safe="/")


def _escape_value(value: str) -> str:
    # In the query, '&', '=' and '#' are syntax (a SAS has all of them); '%' must be escaped
    # so that a SAS's own %2B or %3D survive SQLite's decoding as they were.
    return quote(value, safe="/:")


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)) or isinstance(value, os.PathLike):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    raise TypeError(
        f"managedblob setting {name!r} must be a string, number or path, got {type(value).__name__}"
    )


def uri(cache_path: PathLike, remote: Optional[PathLike] = None, **settings: Any) -> str:
    """The ``file:`` URI that :func:`connect` opens: the cache path, ``vfs=managedblob``, the
    remote and the settings, each percent-escaped (a SAS in the remote URL included).

    >>> uri("caches/h1/corpus db.sqlite", "https://acct.blob.core.windows.net/c?sv=1&sig=a%2Bb")
    'file:caches/h1/corpus%20db.sqlite?vfs=managedblob&remote=https://acct.blob.core.windows.net/c%3Fsv%3D1%26sig%3Da%252Bb'
    """
    path = os.fspath(cache_path)
    if not path:
        raise ValueError("managedblob.connect needs a cache path (the local copy's file name)")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(
            f"unknown managedblob setting(s) {', '.join(unknown)}; the settings are "
            f"remote, {', '.join(SETTINGS)} (and sqlite3.connect's {', '.join(SQLITE_CONNECT_ARGS)})"
        )
    params: Dict[str, str] = {"vfs": VFS_NAME}
    if remote is not None:
        params["remote"] = _text("remote", remote)
    for name in SETTINGS:
        if settings.get(name) is not None:
            params[name] = _text(name, settings[name])
    query = "&".join(f"{name}={_escape_value(value)}" for name, value in params.items())
    return f"file:{_escape_path(path)}?{query}"


def connect(cache_path: PathLike, remote: Optional[PathLike] = None, **options: Any) -> sqlite3.Connection:
    """Open a managed database: a ``sqlite3.Connection`` whose file ``cache_path`` is the
    local copy of the blob in ``remote``.

    Args:
        cache_path: the cache file (created when missing, with its directory: mode 0700).
            Each host (process, machine) that shares a database has its own cache.
        remote: a directory (``/srv/remote``, ``file:///srv/remote``) or an Azure container
            URL, with a SAS in its query string or credentials from the environment
            (README, Azure credentials). ``None``: ``MANAGEDBLOB_REMOTE``.
        **options: managedblob settings (``blob``, ``lease_secs``, ``lease_linger_ms``,
            ``staleness_ms``, ``retry_attempts``, ``retry_base_ms``, ``retry_total_ms``,
            ``sync``, ``history``, ``flush_ms``; ``fetch="lazy"`` for a sparse cache that
            fetches what reads need, with ``cache_max`` (``"256MiB"``) bounding it;
            ``as_of`` or ``version`` to open a past version read-only; and SQLite's
            ``mode="ro"``), which go into the URI; and
            ``sqlite3.connect``'s own
            keyword arguments (``timeout``, ``isolation_level``, ``check_same_thread``,
            ``factory``, ...), which are passed on. Anything else is a ``TypeError``.

    The extension is registered first (see :func:`managedblob.register`). A missing or
    invalid setting, or an unreachable remote, raises :class:`managedblob.ManagedError` (an
    ``sqlite3.OperationalError``) with managedblob's message naming the setting.

    The connection is a :class:`managedblob.ManagedConnection` (or, with ``factory=``, that
    class mixed into yours): a statement that fails on the managed database raises
    :class:`managedblob.ManagedError`, whose message and ``last_error`` give managedblob's
    cause (a failed upload reaches SQLite only as ``disk I/O error``).
    """
    sqlite_args: Dict[str, Any] = {k: v for k, v in options.items() if k in SQLITE_CONNECT_ARGS}
    settings = {k: v for k, v in options.items() if k not in SQLITE_CONNECT_ARGS}
    target = uri(cache_path, remote, **settings)
    sqlite_args["factory"] = connection_class(sqlite_args.get("factory"))
    register()
    try:
        return sqlite3.connect(target, uri=True, **sqlite_args)
    except sqlite3.OperationalError as error:
        raise ManagedError(str(error)) from error
