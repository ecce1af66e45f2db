"""A minimal clamd client: scan a file by streaming it to clamd (INSTREAM) over its unix socket
or over TCP ("host:port", an existing clamd).

Fail-closed by design: anything but clamd's explicit "OK" (a signature found, a clamd error, a
refused or dropped connection, a timeout, a size limit) is a `ScanResult` with `clean=False`.
Protocol: `zINSTREAM\\0`, then chunks of `<4-byte big-endian length><data>`, then a zero length;
clamd answers `stream: OK`, `stream: <name> FOUND` or `... ERROR` (clamd(8), "INSTREAM").
The protocol is the same on both transports (clamd.conf `LocalSocket` or `TCPSocket`/`TCPAddr`);
clamd has no authentication or encryption on either, so a TCP clamd must be reachable only by
the control plane (a NetworkPolicy, a private network).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024

# Where clamd listens: a unix socket's path, or (host, port) over TCP.
Endpoint = Path | tuple[str, int]


@dataclass(frozen=True)
class ScanResult:
    clean: bool
    detail: str  # "OK", the signature name, or why the scan could not be done


def describe(endpoint: Endpoint) -> str:
    """The endpoint for messages: the socket's path, or `host:port`."""
    if isinstance(endpoint, tuple):
        host, port = endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(endpoint)


def connect(endpoint: Endpoint, timeout: float) -> socket.socket:
    """An open connection to clamd (TCP for `(host, port)`, else the unix socket), with
    `timeout` on the connect and on every later send and receive. Raises OSError."""
    if isinstance(endpoint, tuple):
        conn = socket.create_connection(endpoint, timeout=timeout)
        # Small protocol messages (the command, the last chunk's terminator) go out at once.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(timeout)
        conn.connect(str(endpoint))
    except BaseException:
        conn.close()
        raise
    return conn


def scan_file(endpoint: Endpoint, path: Path, timeout: float) -> ScanResult:
    """Stream `path` to clamd and return its verdict; never raises for scanner trouble."""
    deadline = time.monotonic() + timeout
    try:
        with connect(endpoint, timeout) as conn:
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
                # says why before closing: report that reason, still as a failure. Over TCP the
                # reset may have discarded that reason already.
                try:
                    said = _read_reply(conn, time.monotonic() + 2.0)
                except OSError:
                    said = ""
                return ScanResult(False, f"scanner refused the file: {said[:200] or 'closed'}")
            reply = _read_reply(conn, deadline)
    except TimeoutError:
        return ScanResult(False, "scanner timed out")
    except OSError as exc:
        return ScanResult(False, f"scanner unavailable: {exc.strerror or type(exc).__name__}")
    return parse_reply(reply)


def ping(endpoint: Endpoint, timeout: float = 2.0) -> bool:
    """Whether clamd answers PING with PONG."""
    try:
        with connect(endpoint, timeout) as conn:
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
