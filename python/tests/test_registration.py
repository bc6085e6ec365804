"""Registering the VFS: through ctypes for Pythons whose sqlite3 cannot load extensions, the
error where that is impossible too, and the shipped library itself (stripped)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

import managedblob
from managedblob import _extension, _process_sqlite

PACKAGE = Path(managedblob.__file__).resolve().parent


def run(python: str, code: str, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done


def test_ctypes_route_registers_the_vfs_in_the_sqlite_of_the_sqlite3_module(remote, cache):
    # A fresh process in which nothing registered the VFS: load the ctypes module alone
    # (not the package, whose import would register it the usual way).
    code = f"""
import importlib.util, json, sqlite3
spec = importlib.util.spec_from_file_location("process_sqlite", {str(PACKAGE / "_process_sqlite.py")!r})
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
before = m.vfs_registered("managedblob")
m.load_extension({managedblob.loadable_path()!r}, "sqlite3_managedblob_init", "managedblob")
m.load_extension({managedblob.loadable_path()!r}, "sqlite3_managedblob_init", "managedblob")
db = sqlite3.connect("file:{cache("h1")}?vfs=managedblob&remote={remote}", uri=True, isolation_level=None)
db.execute("CREATE TABLE t(x)")
db.execute("INSERT INTO t VALUES (1)")
status = json.loads(db.execute("PRAGMA managedblob_status").fetchone()[0])
print(json.dumps({{"before": before, "after": m.vfs_registered("managedblob"), "status": status}}))
"""
    report = json.loads(run(sys.executable, code).stdout)
    assert report["before"] is False
    assert report["after"] is True
    assert report["status"]["requests"]["versions_up"] == 2, report


def python_without_extension_loading() -> Optional[str]:
    """A Python on PATH (pyenv's, here) whose sqlite3 has no enable_load_extension."""
    probe = "import sqlite3, sys; sys.exit(hasattr(sqlite3.Connection, 'enable_load_extension'))"
    candidates: List[str] = []
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found:
            candidates.append(found)
    for candidate in candidates:
        if subprocess.run([candidate, "-c", probe], capture_output=True, timeout=60).returncode == 0:
            return candidate
    return None


def test_import_registers_on_a_python_without_extension_loading(remote, cache):
    python = python_without_extension_loading()
    if python is None:
        pytest.skip("no Python without sqlite3 extension loading on PATH (pyenv's is one)")
    code = f"""
import json, sqlite3
assert not hasattr(sqlite3.Connection, "enable_load_extension")
import managedblob
plain = sqlite3.connect("file:{cache("h1")}?vfs=managedblob&remote={remote}", uri=True)
plain.execute("CREATE TABLE t(x)")
plain.commit()
plain.close()
db = managedblob.connect({str(cache("h2"))!r}, remote={str(remote)!r})
with managedblob.batch(db):
    db.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
print(json.dumps(managedblob.status(db)))
"""
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    status = json.loads(run(python, code, env).stdout)
    assert status["requests"]["versions_down"] == 1, status
    assert status["requests"]["versions_up"] == 1, status


def test_where_ctypes_cannot_either_the_error_says_why_and_what_to_use():
    def unreachable(path: str) -> None:
        raise _process_sqlite.ProcessSqliteError("the SQLite inside _sqlite3.so is not reachable from ctypes")

    with pytest.raises(managedblob.RegistrationError) as raised:
        _extension.register_once(
            managedblob.loadable_path(), module_loads_extensions=False, ctypes_loader=unreachable
        )
    message = str(raised.value)
    assert "built without extension loading" in message
    assert "not reachable from ctypes" in message
    assert "/usr/bin/python3" in message
    assert "--enable-loadable-sqlite-extensions" in message


def elf_section_names(path: Path) -> List[str]:
    """The section names of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF"
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset = headers[shstrndx][4]
    names = []
    for name_offset, *_ in headers:
        start = strtab_offset + name_offset
        names.append(data[start : data.index(b"\0", start)].decode())
    return names


def test_the_shipped_extension_has_no_debug_info_and_exports_its_entry_point():
    path = Path(managedblob.loadable_path())
    sections = elf_section_names(path)
    assert ".text" in sections and ".dynsym" in sections, sections
    debug = [s for s in sections if s.startswith((".debug", ".zdebug"))]
    assert debug == [], f"{path} carries debug info: {debug}"
    assert path.stat().st_size < 9 * 1024 * 1024, path.stat().st_size
    # Stripping must keep the dynamic symbol SQLite looks up.
    assert ctypes.CDLL(str(path)).sqlite3_managedblob_init
