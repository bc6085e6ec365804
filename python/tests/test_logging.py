"""MANAGEDBLOB_LOG / MANAGEDBLOB_LOG_FILE through the package: the extension's log lines on
stderr or in the file when set, nothing when not (whatever RUST_LOG says), one line for a bad
setting. Each case runs in a fresh interpreter, since logging is set up once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

# A line the debug filter lets through on every commit: the local backend's upload.
DEBUG_LINE = " DEBUG managedblob::backend::local"

SCRIPT = """
import sys
import managedblob
db = managedblob.connect(sys.argv[1], remote=sys.argv[2])
db.execute("CREATE TABLE IF NOT EXISTS t(x)")
db.execute("INSERT INTO t VALUES (1)")
db.commit()
print(db.execute("SELECT count(*) FROM t").fetchone()[0])
db.close()
"""


def run(cache: Path, remote: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    """The script in a new interpreter (this venv's), with ``env`` added; the conftest has
    removed every MANAGEDBLOB_* variable from this process's environment."""
    full = {key: value for key, value in os.environ.items() if key != "RUST_LOG"}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache), str(remote)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_managedblob_log_debug_logs_to_stderr(remote, cache):
    out = run(cache("h1"), remote, {"MANAGEDBLOB_LOG": "debug"})
    assert out.returncode == 0, out
    assert out.stdout.strip() == "1", out
    assert DEBUG_LINE in out.stderr, out


def test_managedblob_log_file_receives_the_lines_and_is_appended_to(remote, cache, tmp_path):
    log = tmp_path / "managedblob.log"
    env = {"MANAGEDBLOB_LOG": "managedblob=debug", "MANAGEDBLOB_LOG_FILE": str(log)}
    out = run(cache("h1"), remote, env)
    assert out.returncode == 0 and out.stderr == "", out
    first = log.read_text()
    assert DEBUG_LINE in first, first
    out = run(cache("h2"), remote, env)
    assert out.returncode == 0 and out.stderr == "", out
    assert out.stdout.strip() == "2", out
    both = log.read_text()
    assert both.startswith(first), "the file was not appended to"
    assert DEBUG_LINE in both[len(first) :], both


def test_without_managedblob_log_nothing_is_logged_even_with_rust_log(remote, cache):
    out = run(cache("h1"), remote, {"RUST_LOG": "trace"})
    assert out.returncode == 0, out
    assert out.stdout.strip() == "1", out
    assert out.stderr == "", out


def test_a_bad_filter_gives_one_line_and_the_database_still_opens(remote, cache):
    out = run(cache("h1"), remote, {"MANAGEDBLOB_LOG": "managedblob=loud"})
    assert out.returncode == 0, out
    assert out.stdout.strip() == "1", out
    assert len(out.stderr.splitlines()) == 1, out
    assert out.stderr.startswith("managedblob: logging stays off: MANAGEDBLOB_LOG="), out
