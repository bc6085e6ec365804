"""No SAS signature in any exception of the package's entry points (issue 25, item 3):
``connect`` (and plain ``sqlite3.connect`` on ``uri()``), statements through
``ManagedError``, ``batch`` and ``status``, run into each failure they can meet with a SAS in
the remote URL. The exception's text, its ``repr``, its chained cause, its ``last_error`` and
the whole formatted traceback must show neither the signature (in any encoding) nor any
``sig=`` / ``sig%3D`` / ``sig%253D`` value but ``<redacted>``."""

from __future__ import annotations

import re
import sqlite3
import traceback
from pathlib import Path
from typing import Callable, List

import pytest

import managedblob

FAKE_CORE = "Zm9vU0VDUkVUc2lnbmF0dXJl"
FAKE_SIG = FAKE_CORE + "%2B%2FQ%3D"

SIG_VALUE = re.compile(r"sig(?:=|%(?:25)*3d)(?!<redacted>|redacted)([^&\"'\s;%]|%(?!(?:25)*26))", re.I)


def shows_a_signature(text: str, core: str) -> bool:
    return core in text or SIG_VALUE.search(text) is not None


def test_the_checker_sees_signatures_in_every_encoding():
    for shown in (f"sig={FAKE_SIG}", "c?sig=abc", "remote=h%3Fsv%3D1%26sig%3DQUJD%253D", "%2526SIG%253Dabc"):
        assert shows_a_signature(shown, FAKE_CORE), shown
    for clean in ("sig=<redacted>&se=1", "h%3Fsv%3D1%26sig%3D<redacted>&blob=a", "sig=REDACTED", "design=1"):
        assert not shows_a_signature(clean, FAKE_CORE), clean


def texts_of(error: BaseException) -> List[str]:
    out = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    ]
    if error.__cause__ is not None:
        out += [str(error.__cause__), repr(error.__cause__)]
    for name in ("last_error", "status"):
        if getattr(error, name, None) is not None:
            out.append(str(getattr(error, name)))
    return out


def assert_secret_free(what: str, action: Callable[[], object], core: str) -> BaseException:
    with pytest.raises(sqlite3.Error) as caught:
        action()
    for text in texts_of(caught.value):
        assert not shows_a_signature(text, core), f"{what}: {text}"
    print(f"{what}: {caught.value}")
    return caught.value


def without_container(url: str) -> str:
    """``url`` with its container name (the last path segment) left out."""
    return re.sub(r"/[^/?]*\?", "/?", url, count=1)


def open_failures(url: str, core: str, tmp_path: Path) -> None:
    """The failures of an open with ``url`` as the remote: through connect and plain sqlite3."""
    is_dir = tmp_path / "dir-cache" / "c.db"
    is_dir.mkdir(parents=True)
    under_file = tmp_path / "file"
    under_file.write_text("x")
    cases = {
        "first open of an empty cache": tmp_path / "h1" / "c.db",
        "cache path is a directory": is_dir,
        "cache under a file": under_file / "sub" / "c.db",
    }
    for what, cache in cases.items():
        assert_secret_free(
            f"connect, {what}", lambda c=cache: managedblob.connect(c, remote=url, retry_attempts=1), core
        )
        target = managedblob.uri(cache, url, retry_attempts=1)
        assert_secret_free(f"sqlite3.connect, {what}", lambda t=target: sqlite3.connect(t, uri=True), core)
    assert_secret_free(
        "connect, invalid setting",
        lambda: managedblob.connect(tmp_path / "h2" / "c.db", remote=url, retry_attempts=99),
        core,
    )
    assert_secret_free(
        "connect, missing container name",
        lambda: managedblob.connect(tmp_path / "h3" / "c.db", remote=without_container(url)),
        core,
    )


def test_an_unreachable_remote_with_a_sas(tmp_path):
    url = (
        "http://127.0.0.1:9/devstoreaccount1/corpus"
        f"?sv=2022-11-02&sp=rwdlac&se=2099-01-01T00:00:00Z&sig={FAKE_SIG}"
    )
    open_failures(url, FAKE_CORE, tmp_path)


def test_azurite_with_a_refused_signature(azurite, tmp_path):
    url = azurite.fresh_container()
    forged = re.sub(r"sig=[^&]*", f"sig={FAKE_SIG}", url)
    open_failures(forged, FAKE_CORE, tmp_path)


def test_azurite_with_a_valid_sas_statements_batch_and_status(azurite, tmp_path):
    url = azurite.fresh_container()
    core = re.search(r"sig=([A-Za-z0-9]+)", url).group(1)
    assert len(core) >= 8
    h1 = managedblob.connect(
        tmp_path / "h1" / "c.db", remote=url, timeout=0, isolation_level=None, lease_linger_ms=0
    )
    h1.execute("CREATE TABLE t(x)")
    h2 = managedblob.connect(tmp_path / "h2" / "c.db", remote=url, timeout=0)
    h1.execute("PRAGMA managedblob_batch=begin").fetchall()  # h1 holds the lease
    try:
        assert_secret_free(
            "a statement refused by the lease", lambda: h2.execute("INSERT INTO t VALUES (1)"), core
        )
        h2.rollback()

        def batch() -> None:
            with managedblob.batch(h2):
                pass

        assert_secret_free("batch refused by the lease", batch, core)
        status = managedblob.status(h2)
        assert not shows_a_signature(str(status), core), status
        assert status["last_error"], status
    finally:
        h1.execute("PRAGMA managedblob_batch=end").fetchall()
    # The same cache for another container in this process: refused by name.
    other = azurite.fresh_container()
    assert_secret_free(
        "the same cache for another remote",
        lambda: managedblob.connect(tmp_path / "h1" / "c.db", remote=other),
        core,
    )
    h1.close()
    h2.close()
