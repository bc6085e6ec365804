"""Serve a managed database live with Datasette: a Datasette plugin (registered by the package's
``datasette`` entry point, so ``pip install datasette ./python`` is all it takes) and the
:class:`ManagedDatabase` it adds.

Datasette opens a database file as ``file:<path>?mode=ro``, which cannot name a VFS or a
remote. The plugin reads its databases from Datasette's plugin configuration instead, and
opens each through :func:`managedblob.connect` (reads with ``mode=ro``: no lease, no upload,
and the cache is still refreshed, so a page shows what other hosts committed, as fresh as
``staleness_ms``)::

    # metadata.json
    {"plugins": {"managedblob": {"databases": {
        "corpus": {"cache": "datasette-cache/corpus.db", "remote": "/srv/remote",
                   "staleness_ms": 0}
    }}}}

    datasette serve -m metadata.json          # http://127.0.0.1:8001/corpus

Each database's entry takes ``cache`` (its own cache file, made with its directory when
missing), ``remote`` (or ``MANAGEDBLOB_REMOTE``) and any :func:`managedblob.connect`
setting (``blob``, ``staleness_ms``, ...). Datasette's writes (its write API, plugins) go
through the same connection settings with the lease, as any writer's. In a Python program:
``ds.add_database(ManagedDatabase(ds, "cache/corpus.db", remote="/srv/remote"), name="corpus")``.

This module imports Datasette: import it only where Datasette is installed.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Optional

from datasette import hookimpl
from datasette.database import Database

from ._connect import PathLike, connect


class ManagedDatabase(Database):
    """A Datasette database whose file is a managedblob cache of ``remote``'s blob."""

    def __init__(self, ds: Any, cache_path: PathLike, remote: Optional[PathLike] = None, **settings: Any):
        super().__init__(ds, path=os.fspath(cache_path), is_mutable=True)
        self.remote = remote
        self.settings = settings

    def connect(self, write: bool = False) -> sqlite3.Connection:
        mode = {} if write else {"mode": "ro"}
        conn = connect(self.path, remote=self.remote, check_same_thread=False, **self.settings, **mode)
        self._all_file_connections.append(conn)
        return conn


@hookimpl
def startup(datasette: Any) -> None:
    """Add the databases of the ``managedblob`` plugin configuration, each opened once here
    (the first sync: a bad setting or an unreachable remote stops the server at start)."""
    config = datasette.plugin_config("managedblob") or {}
    for name, entry in (config.get("databases") or {}).items():
        settings = dict(entry)
        if "cache" not in settings:
            raise ValueError(f"managedblob plugin: database {name!r} needs a 'cache' (its cache file)")
        cache = settings.pop("cache")
        remote = settings.pop("remote", None)
        database = ManagedDatabase(datasette, cache, remote, **settings)
        database.connect().close()
        datasette.add_database(database, name=name)
