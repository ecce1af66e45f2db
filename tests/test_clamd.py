"""The clamd client over TCP (KLUIS_CLAMD_ADDRESS, an existing clamd) against a real clamd of the
tests' own listening on a loopback port (`TCPSocket`/`TCPAddr`, the EICAR-only signature
database): clean is OK, EICAR is found, and anything else — a closed port, a silent server, a
stream over clamd's limit — fails closed; uploads through the airlock are scanned over TCP on
both database backends; a malformed address is refused at start-up with a clear message."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airlock_helpers import CLAMD, EICAR, airlock_settings
from clamd_helpers import free_port, start_tcp_clamd
from project_factories import make_project, make_researcher
from pydantic import ValidationError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from orchestrator import airlock, clamd
from orchestrator.airlock_models import UploadState
from orchestrator.cli import app
from orchestrator.config import Settings, split_host_port
from orchestrator.models import ProjectState

CSV = b"region,count\nNorth,120\nSouth,85\n"
runner = CliRunner()


@pytest.fixture(scope="module")
def tcp_clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    if not Path(CLAMD).exists():
        pytest.fail("clamd is missing: install Debian's clamav-daemon (.ci/system-packages)")
    process, endpoint = start_tcp_clamd(tmp_path_factory.mktemp("tcp-clamd"))
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "clean.csv").write_bytes(CSV)
    (tmp_path / "eicar.txt").write_bytes(EICAR)
    return {"clean": tmp_path / "clean.csv", "eicar": tmp_path / "eicar.txt"}


# --- the client over TCP --------------------------------------------------------------------------


def test_clamd_tcp_ping_answers(tcp_clamd: tuple[str, int]) -> None:
    assert clamd.ping(tcp_clamd)


def test_clamd_tcp_clean_file_is_ok(tcp_clamd: tuple[str, int], files: dict[str, Path]) -> None:
    result = clamd.scan_file(tcp_clamd, files["clean"], timeout=20)

    assert result == clamd.ScanResult(True, "OK")


def test_clamd_tcp_eicar_is_found(tcp_clamd: tuple[str, int], files: dict[str, Path]) -> None:
    result = clamd.scan_file(tcp_clamd, files["eicar"], timeout=20)

    assert not result.clean
    assert result.detail.startswith("malware found: Kluis.Test.EICAR")


def test_clamd_tcp_closed_port_fails_closed(files: dict[str, Path]) -> None:
    closed = ("127.0.0.1", free_port())

    result = clamd.scan_file(closed, files["clean"], timeout=5)

    assert not result.clean
    assert result.detail.startswith("scanner unavailable:")
    assert not clamd.ping(closed)


def test_clamd_tcp_unknown_host_fails_closed(files: dict[str, Path]) -> None:
    result = clamd.scan_file(("no-such-clamd.invalid", 3310), files["clean"], timeout=5)

    assert not result.clean
    assert result.detail.startswith("scanner unavailable:")


def test_clamd_tcp_silent_server_times_out(files: dict[str, Path]) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
    thread.start()
    try:
        result = clamd.scan_file(server.getsockname()[:2], files["clean"], timeout=0.5)
    finally:
        server.close()
        for conn in accepted:
            conn.close()

    assert result == clamd.ScanResult(False, "scanner timed out")


def test_clamd_tcp_stream_over_clamd_limit_fails_closed(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    process, endpoint = start_tcp_clamd(tmp_path_factory.mktemp("small"), stream_max="1M")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 * 1024 * 1024))
    try:
        result = clamd.scan_file(endpoint, big, timeout=20)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert not result.clean
    # clamd says why before it closes; over TCP a reset may swallow that: refused, still blocked.
    assert "size limit exceeded" in result.detail or result.detail.startswith("scanner refused")


def test_clamd_describe_names_the_endpoint() -> None:
    assert clamd.describe(("clamd.av.svc", 3310)) == "clamd.av.svc:3310"
    assert clamd.describe(("fd00::5", 3310)) == "[fd00::5]:3310"
    assert clamd.describe(Path("/run/clamav/clamd.ctl")) == "/run/clamav/clamd.ctl"


# --- the airlock scans over TCP (both backends) ---------------------------------------------------


@pytest.fixture
def tcp_settings(db_settings: Settings, tmp_path: Path, tcp_clamd: tuple[str, int]) -> Settings:
    # The socket points nowhere: a scan that passes went over TCP.
    base = airlock_settings(db_settings, tmp_path, tmp_path / "no-such.sock")
    return base.model_copy(update={"clamd_address": f"{tcp_clamd[0]}:{tcp_clamd[1]}"})


def _upload(session: Session, settings: Settings, data: bytes, name: str) -> UploadState:
    session.info["settings"] = settings
    member = make_researcher(session)
    project = make_project(session, state=ProjectState.ACTIVE, members=[member])
    received = airlock.receive_file(settings, io.BytesIO(data))
    row = airlock.register_upload(
        session, settings, member, project, received, name, "Our survey", datetime.now(UTC)
    )
    return row.state


def test_clamd_tcp_airlock_clean_upload_awaits_review(
    db_session: Session, tcp_settings: Settings
) -> None:
    assert _upload(db_session, tcp_settings, CSV, "regions.csv") is UploadState.PENDING_REVIEW


def test_clamd_tcp_airlock_eicar_upload_is_blocked(
    db_session: Session, tcp_settings: Settings
) -> None:
    assert _upload(db_session, tcp_settings, EICAR, "notes.txt") is UploadState.BLOCKED


def test_clamd_tcp_airlock_closed_port_blocks_the_upload(
    db_session: Session, tcp_settings: Settings
) -> None:
    down = tcp_settings.model_copy(update={"clamd_address": f"127.0.0.1:{free_port()}"})

    assert _upload(db_session, down, CSV, "regions.csv") is UploadState.BLOCKED


# --- configuration --------------------------------------------------------------------------------


def test_clamd_address_is_used_instead_of_the_socket(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, clamd_address="clamd.antivirus.svc:3310")

    assert settings.clamd_endpoint == ("clamd.antivirus.svc", 3310)
    assert Settings(data_dir=tmp_path).clamd_endpoint == Path("/run/clamav/clamd.ctl")
    assert Settings(data_dir=tmp_path, clamd_address="").clamd_endpoint == Path(
        "/run/clamav/clamd.ctl"
    )
    assert split_host_port("[fd00::5]:3310") == ("fd00::5", 3310)
    assert split_host_port("10.0.0.7:3310") == ("10.0.0.7", 3310)


@pytest.mark.parametrize(
    "value",
    [
        "clamd",
        "clamd:",
        "clamd:0",
        "clamd:65536",
        "clamd:port",
        ":3310",
        "tcp://clamd:3310",
        "fd00::5:3310",
        "[not-v6]:3310",
        "a..b:3310",
        "clam d:3310",
    ],
)
def test_clamd_address_malformed_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match=r'clamd_address\n.*must be "host:port"'):
        Settings(data_dir=tmp_path, clamd_address=value)


def test_clamd_address_malformed_stops_the_cli_with_a_clear_error(clean_env: Path) -> None:
    result = runner.invoke(
        app, ["airlock", "scanner"], env={"KLUIS_CLAMD_ADDRESS": "clamd.antivirus.svc"}
    )

    assert result.exit_code == 2
    assert 'configuration error: KLUIS_CLAMD_ADDRESS: must be "host:port"' in result.output


def test_clamd_address_scanner_command_pings_over_tcp(
    clean_env: Path, tcp_clamd: tuple[str, int]
) -> None:
    address = f"{tcp_clamd[0]}:{tcp_clamd[1]}"
    env = {"KLUIS_CLAMD_ADDRESS": address, "KLUIS_CLAMD_SOCKET": str(clean_env / "none.sock")}

    ok = runner.invoke(app, ["airlock", "scanner"], env=env)
    down = runner.invoke(
        app, ["airlock", "scanner"], env={**env, "KLUIS_CLAMD_ADDRESS": f"127.0.0.1:{free_port()}"}
    )

    assert ok.exit_code == 0, ok.output
    assert f"clamd answers on {address}" in ok.output
    assert down.exit_code == 1
