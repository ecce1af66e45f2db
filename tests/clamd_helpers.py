"""A real clamd of the tests' own on a free loopback TCP port (`TCPSocket`/`TCPAddr`), with the
EICAR-only signature database of airlock_helpers: for the client over TCP and the chart's
existing-clamd profile."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
from pathlib import Path

from airlock_helpers import CLAMD, EICAR

from orchestrator import clamd


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_tcp_clamd(
    folder: Path, stream_max: str = "200M"
) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    """clamd on a free loopback port (no unix socket); waits for PONG over TCP."""
    database = folder / "db"
    database.mkdir()
    md5 = hashlib.md5(EICAR).hexdigest()  # noqa: S324 (ClamAV's .hdb format is md5:size:name)
    (database / "kluis-test.hdb").write_text(f"{md5}:{len(EICAR)}:Kluis.Test.EICAR\n")
    endpoint = ("127.0.0.1", free_port())
    config = folder / "clamd.conf"
    config.write_text(
        f"TCPSocket {endpoint[1]}\nTCPAddr {endpoint[0]}\nForeground yes\n"
        f"DatabaseDirectory {database}\nLogFile {folder / 'clamd.log'}\n"
        f"TemporaryDirectory {folder}\nStreamMaxLength {stream_max}\n"
    )
    process = subprocess.Popen(
        [CLAMD, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clamd exited: {(folder / 'clamd.log').read_text()[-2000:]}")
        if clamd.ping(endpoint, timeout=1.0):
            return process, endpoint
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("clamd did not answer within 60 s")
