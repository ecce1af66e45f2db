"""A minimal clamd client: scan a file by streaming it over clamd's unix socket (INSTREAM).

Fail-closed by design: anything but clamd's explicit "OK" (a signature found, a clamd error, a
refused or dropped connection, a timeout, a size limit) is a `ScanResult` with `clean=False`.
Protocol: `zINSTREAM\\0`, then chunks of `<4-byte big-endian length><data>`, then a zero length;
clamd answers `stream: OK`, `stream: <name> FOUND` or `... ERROR` (clamd(8), "INSTREAM").
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024


@dataclass(frozen=True)
class ScanResult:
    clean: bool
    detail: str  # "OK", the signature name, or why the scan could not be done


def scan_file(socket_path: Path, path: Path, timeout: float) -> ScanResult:
    """Stream `path` to clamd and return its verdict; never raises for scanner trouble."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(socket_path))
            conn.sendall(b"zINSTREAM\0")
            try:
                with path.open("rb") as source:
                    while chunk := source.read(CHUNK):
                        if time.monotonic() > deadline:
                            return ScanResult(False, "scanner timed out")
                        conn.sendall(struct.pack(">I", len(chunk)) + chunk)
                conn.sendall(struct.pack(">I", 0))
            except (BrokenPipeError, ConnectionResetError):
                # clamd stops reading when it refuses the stream (e.g. over StreamMaxLength) and
                # says why before closing: report that reason, still as a failure.
                said = _read_reply(conn, time.monotonic() + 2.0)
                return ScanResult(False, f"scanner refused the file: {said[:200] or 'closed'}")
            reply = _read_reply(conn, deadline)
    except TimeoutError:
        return ScanResult(False, "scanner timed out")
    except OSError as exc:
        return ScanResult(False, f"scanner unavailable: {exc.strerror or type(exc).__name__}")
    return parse_reply(reply)


def ping(socket_path: Path, timeout: float = 2.0) -> bool:
    """Whether clamd answers PING with PONG."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(socket_path))
            conn.sendall(b"zPING\0")
            return _read_reply(conn, time.monotonic() + timeout) == "PONG"
    except OSError:
        return False


def _read_reply(conn: socket.socket, deadline: float) -> str:
    data = b""
    while not data.endswith(b"\0"):
        if time.monotonic() > deadline:
            raise TimeoutError
        part = conn.recv(4096)
        if not part:
            break
        data += part
        if len(data) > 4096:
            break
    return data.rstrip(b"\0").decode("utf-8", "replace").strip()


def parse_reply(reply: str) -> ScanResult:
    """clamd's answer to INSTREAM as a verdict: only an exact "stream: OK" is clean."""
    if reply == "stream: OK":
        return ScanResult(True, "OK")
    if reply.endswith(" FOUND"):
        name = reply.removeprefix("stream:").removesuffix(" FOUND").strip()
        return ScanResult(False, f"malware found: {name[:200]}")
    return ScanResult(False, f"scanner error: {reply[:200] or 'no answer'}")
