"""The extension file shipped in the package, and registering its VFS in this process.

The VFS is process-wide: once any connection of the SQLite library that Python's ``sqlite3``
module uses has loaded the extension, every connection of that library can open
``file:...?vfs=managedblob`` URIs. Two routes get there:

- the module can load extensions (Debian's ``/usr/bin/python3``, most distribution Pythons):
  ``load_extension`` on a private ``:memory:`` connection;
- it cannot (``enable_load_extension`` is missing: pyenv and other source builds without
  ``--enable-loadable-sqlite-extensions``): the same, through ctypes, on the library the
  module is linked to (see ``_process_sqlite``).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Callable, Optional

from . import _process_sqlite

VFS_NAME = "managedblob"
ENTRY_POINT = "sqlite3_managedblob_init"

INSTEAD = (
    "Use a Python whose sqlite3 module can load extensions: Debian's or Ubuntu's "
    "/usr/bin/python3, or a pyenv Python built with "
    "PYTHON_CONFIGURE_OPTS=--enable-loadable-sqlite-extensions; or link a shared libsqlite3 "
    "(./configure --enable-loadable-sqlite-extensions or a shared system SQLite)."
)


class RegistrationError(RuntimeError):
    """The managedblob VFS cannot be registered in this Python's SQLite; the message says why
    and what to use instead."""


def loadable_path() -> str:
    """The path of the loadable extension inside the installed package
    (``.../managedblob/libmanagedblob.abi3.so``).

    Give it to any SQLite that loads extensions: ``conn.load_extension(path)``, or
    ``.load <path>`` in the ``sqlite3`` shell. SQLite derives the entry point,
    ``sqlite3_managedblob_init``, from the file name.
    """
    here = Path(__file__).resolve().parent
    found = sorted(p for p in here.glob("libmanagedblob*") if p.suffix in (".so", ".dylib", ".pyd"))
    if not found:
        raise FileNotFoundError(
            f"the managedblob package at {here} has no built extension (libmanagedblob*.so): "
            "install it with `pip install ./python` from a clone, which builds it"
        )
    return str(found[0])


def _module_loads_extensions() -> bool:
    return hasattr(sqlite3.Connection, "enable_load_extension")


def _load_through_module(path: str) -> None:
    boot = sqlite3.connect(":memory:")
    try:
        boot.enable_load_extension(True)  # type: ignore[attr-defined]
        boot.load_extension(path)  # type: ignore[attr-defined]
    except sqlite3.Error as e:
        raise RegistrationError(f"loading {path} into SQLite {sqlite3.sqlite_version} failed: {e}") from e
    finally:
        boot.close()


def _load_through_ctypes(path: str) -> None:
    _process_sqlite.load_extension(path, ENTRY_POINT, VFS_NAME)


def register_once(
    path: str,
    module_loads_extensions: bool,
    ctypes_loader: Callable[[str], None] = _load_through_ctypes,
) -> None:
    """Register the VFS by the route this Python allows; raise :class:`RegistrationError`
    saying why not and what to use instead."""
    if module_loads_extensions:
        _load_through_module(path)
        return
    try:
        ctypes_loader(path)
    except _process_sqlite.ProcessSqliteError as e:
        raise RegistrationError(
            f"managedblob cannot register its VFS in this Python: its sqlite3 module was built "
            f"without extension loading (sqlite3.Connection has no enable_load_extension), and "
            f"loading {path} into the SQLite it uses through ctypes failed: {e}. {INSTEAD}"
        ) from e


_lock = threading.Lock()
_registered = False
_failure: Optional[str] = None


def register() -> None:
    """Register the ``managedblob`` VFS in the SQLite that Python's ``sqlite3`` module uses,
    for the life of the process. Idempotent; ``import managedblob`` calls it already.

    Raises :class:`RegistrationError` (with the reason and what to use instead) when this
    Python's SQLite cannot take the extension.
    """
    global _registered, _failure
    with _lock:
        if _registered:
            return
        if _failure is not None:
            raise RegistrationError(_failure)
        try:
            register_once(loadable_path(), _module_loads_extensions())
        except (RegistrationError, FileNotFoundError) as e:
            _failure = str(e)
            raise RegistrationError(_failure) from e
        _registered = True


def register_quietly() -> None:
    """:func:`register` at import: a failure is kept and raised by the first call that
    needs the VFS (so ``loadable_path()`` stays usable on any Python)."""
    try:
        register()
    except RegistrationError:
        pass


def load(conn: sqlite3.Connection) -> None:
    """Load the managedblob extension into ``conn``'s SQLite, like ``sqlite_vec.load(conn)``.

    The VFS it registers is process-wide, so every later connection (of this SQLite) can
    open ``file:...?vfs=managedblob`` URIs. ``conn``'s own extension-loading switch is left
    as it was: if loading was off, it is turned on for this load only. On a Python whose
    ``sqlite3`` cannot load extensions, this registers the VFS through ctypes instead
    (see :func:`register`).
    """
    global _registered
    if not hasattr(conn, "load_extension"):
        register()
        return
    path = loadable_path()
    try:
        conn.load_extension(path)
    except sqlite3.OperationalError as e:
        if "not authorized" not in str(e):
            raise
        conn.enable_load_extension(True)
        try:
            conn.load_extension(path)
        finally:
            conn.enable_load_extension(False)
    with _lock:
        _registered = True
