"""Load a SQLite extension into the SQLite library that Python's ``sqlite3`` module uses,
through ctypes, for Pythons whose ``sqlite3`` module cannot load extensions itself.

Such Pythons (pyenv's and many source builds: CPython's ``--enable-loadable-sqlite-extensions``
is off by default) still link a SQLite that can: the switch only hides
``Connection.enable_load_extension``. ctypes reaches that same library by opening the
``_sqlite3`` module again (``dlopen`` of a loaded file returns the loaded copy) and looking the
``sqlite3_*`` functions up through it, which searches the module and then its own dependencies,
the way the module's calls are bound. The extension is then loaded on a private ``:memory:``
connection; its entry point returns ``SQLITE_OK_LOAD_PERMANENTLY``, so what it registers (the
VFS) stays for the life of the process after that connection closes.

This module imports nothing from the package, so a test can load it on its own, in a process
where nothing registered the VFS yet.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
from typing import Any, Optional


class ProcessSqliteError(RuntimeError):
    """The extension could not be loaded into the process's SQLite; the message says why."""


def _library() -> ctypes.CDLL:
    """The SQLite that ``sqlite3`` calls, as a ctypes library (checked by its version)."""
    import _sqlite3  # the C module behind sqlite3

    module_file: Optional[str] = getattr(_sqlite3, "__file__", None)
    try:
        # None (a module built into the interpreter) opens the program itself.
        lib = ctypes.CDLL(module_file)
    except OSError as e:
        raise ProcessSqliteError(f"ctypes cannot open {module_file or 'the interpreter'}: {e}") from e
    try:
        version = _bind(lib, "sqlite3_libversion", ctypes.c_char_p, [])()
        for name in ("sqlite3_open", "sqlite3_enable_load_extension", "sqlite3_load_extension"):
            getattr(lib, name)
    except AttributeError as e:
        raise ProcessSqliteError(
            f"the SQLite inside {module_file or 'the interpreter'} is not reachable from ctypes "
            f"(linked in statically without exported symbols, or built without extension "
            f"loading): {e}"
        ) from e
    if version.decode() != sqlite3.sqlite_version:
        raise ProcessSqliteError(
            f"ctypes reached SQLite {version.decode()}, but the sqlite3 module runs "
            f"{sqlite3.sqlite_version}: not the same library"
        )
    return lib


def _bind(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list) -> Any:
    """``lib.name`` with its C signature declared (ctypes would assume int everywhere)."""
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


def vfs_registered(name: str) -> bool:
    """Whether the process's SQLite (the one ``sqlite3`` uses) has a VFS called ``name``."""
    find = _bind(_library(), "sqlite3_vfs_find", ctypes.c_void_p, [ctypes.c_char_p])
    return bool(find(name.encode()))


def load_extension(path: str, entry_point: str, vfs_name: str) -> None:
    """Load the extension at ``path`` (calling ``entry_point``) into the SQLite that the
    ``sqlite3`` module uses, unless a VFS called ``vfs_name`` is registered already; then
    check that it is. Raises :class:`ProcessSqliteError` saying what failed."""
    lib = _library()
    db_pointer = ctypes.c_void_p
    find = _bind(lib, "sqlite3_vfs_find", ctypes.c_void_p, [ctypes.c_char_p])
    if find(vfs_name.encode()):
        return
    open_db = _bind(lib, "sqlite3_open", ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(db_pointer)])
    close_db = _bind(lib, "sqlite3_close", ctypes.c_int, [db_pointer])
    errmsg = _bind(lib, "sqlite3_errmsg", ctypes.c_char_p, [db_pointer])
    enable = _bind(lib, "sqlite3_enable_load_extension", ctypes.c_int, [db_pointer, ctypes.c_int])
    load = _bind(
        lib,
        "sqlite3_load_extension",
        ctypes.c_int,
        [db_pointer, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)],
    )
    free = _bind(lib, "sqlite3_free", None, [ctypes.c_void_p])

    db = db_pointer()
    if open_db(b":memory:", ctypes.byref(db)) != 0:
        message = errmsg(db).decode(errors="replace") if db else "out of memory"
        close_db(db)
        raise ProcessSqliteError(f"sqlite3_open(':memory:') failed: {message}")
    try:
        if enable(db, 1) != 0:
            raise ProcessSqliteError(
                f"sqlite3_enable_load_extension failed: {errmsg(db).decode(errors='replace')}"
            )
        error = ctypes.c_void_p()
        if load(db, os.fsencode(path), entry_point.encode(), ctypes.byref(error)) != 0:
            message = ctypes.string_at(error.value).decode(errors="replace") if error.value else "no message"
            free(error)
            raise ProcessSqliteError(f"sqlite3_load_extension({path}) failed: {message}")
    finally:
        close_db(db)
    if not find(vfs_name.encode()):
        raise ProcessSqliteError(f"{path} loaded, but no VFS called {vfs_name!r} is registered")
