"""managedblob: a SQLite database kept in blob storage (a directory or an Azure Blob Storage
container) with a full local cache, for Python's ``sqlite3``.

The package ships the loadable extension (``libmanagedblob``), which registers the
``managedblob`` VFS in the SQLite that ``sqlite3`` uses. ``import managedblob`` registers it,
also on Pythons whose ``sqlite3`` cannot load extensions (pyenv's, by default), through
ctypes; where even that is impossible, :func:`connect`, :func:`load` and :func:`register`
raise :class:`RegistrationError` saying why and what to use instead.

>>> import managedblob
>>> db = managedblob.connect("h1/corpus.db", remote="/srv/remote")
>>> with managedblob.batch(db):          # one upload for everything inside
...     db.executemany("INSERT INTO t(body) VALUES (?)", rows)
>>> managedblob.status(db)["requests"]["versions_up"]
1

A statement that fails on a managed database raises :class:`ManagedError` (a subclass of
``sqlite3.OperationalError``) with managedblob's cause, ``last_error``, in its message and as
an attribute: a failed upload is more than ``disk I/O error``.

Plain ``sqlite3`` works too once the package is imported:
``sqlite3.connect("file:h1/corpus.db?vfs=managedblob&remote=/srv/remote", uri=True)``.
"""

from . import _extension
from ._connect import SETTINGS, connect, uri
from ._errors import ManagedConnection, ManagedCursor, ManagedError
from ._extension import RegistrationError, load, loadable_path, register
from ._pragmas import batch, status

__all__ = [
    "ManagedConnection",
    "ManagedCursor",
    "ManagedError",
    "RegistrationError",
    "SETTINGS",
    "batch",
    "connect",
    "load",
    "loadable_path",
    "register",
    "status",
    "uri",
]

_extension.register_quietly()
