"""Azurite (the Azure Storage emulator) for the tests, as tests/common/azurite.rs runs it:
found at ``$AZURITE_BLOB`` or in the repository's ``target/azurite`` (``scripts/azurite.sh``
installs it there), started on a free 127.0.0.1 port with its data in a temp dir, stopped
when the test session ends. Containers are made with an account SAS for the well-known
development account, computed here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import quote

DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def binary(repo: Path) -> Path:
    """Where azurite-blob is expected."""
    env = os.environ.get("AZURITE_BLOB")
    return Path(env) if env else repo / "target/azurite/node_modules/.bin/azurite-blob"


def account_sas(permissions: str = "rwdlac", expiry: str = "2099-01-01T00:00:00Z") -> str:
    """An account SAS query string (``sv=...&sig=...``) signed with the development key."""
    sv, ss, srt, spr = "2019-12-12", "b", "sco", "https,http"
    to_sign = f"{DEV_ACCOUNT}\n{permissions}\n{ss}\n{srt}\n\n{expiry}\n\n{spr}\n{sv}\n"
    digest = hmac.new(base64.b64decode(DEV_KEY), to_sign.encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    return f"sv={sv}&ss={ss}&srt={srt}&sp={permissions}&se={expiry}&spr={spr}&sig={sig}"


class Azurite:
    """A running azurite-blob; :meth:`stop` ends it and removes its data."""

    def __init__(self, bin_path: Path) -> None:
        self._data = tempfile.TemporaryDirectory(prefix="azurite-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._process = subprocess.Popen(
            [
                str(bin_path),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                self._data.name,
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            # A connect to a free ephemeral port can succeed by connecting to itself
            # (TCP simultaneous open); that is not Azurite listening.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    if probe.getsockname() != probe.getpeername():
                        return
            except OSError:
                pass
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"azurite exited with {self._process.returncode}: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"azurite did not listen on port {self.port} within 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if self._process.stderr:
            self._process.stderr.close()
        self._data.cleanup()

    def container_url(self, container: str) -> str:
        return f"http://127.0.0.1:{self.port}/{DEV_ACCOUNT}/{container}"

    def fresh_container(self, name: Optional[str] = None) -> str:
        """Create a new container; its URL with an account SAS (a complete ``remote``)."""
        name = name or f"t-{secrets.token_hex(8)}"
        sas = account_sas()
        request = urllib.request.Request(
            f"{self.container_url(name)}?restype=container&{sas}",
            data=b"",
            method="PUT",
            headers={"x-ms-version": "2019-12-12"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201, response.status
        return f"{self.container_url(name)}?{sas}"
