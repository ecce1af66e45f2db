"""Airlock test scaffolding: a real clamd of the tests' own (Debian's clamav-daemon) on a unix
socket in a temporary folder, with a signature database holding only the EICAR test file's
md5:size (signature downloads are not reachable here), and hostile files made by hand."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import clamd
from orchestrator.config import Settings

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"


def start_clamd(folder: Path, stream_max: str = "200M") -> tuple[subprocess.Popen[bytes], Path]:
    """Start clamd in `folder` and wait for PONG on its socket (about a second)."""
    database = folder / "db"
    database.mkdir()
    md5 = hashlib.md5(EICAR).hexdigest()  # noqa: S324 (ClamAV's .hdb format is md5:size:name)
    (database / "kluis-test.hdb").write_text(f"{md5}:{len(EICAR)}:Kluis.Test.EICAR\n")
    sock = folder / "clamd.sock"
    config = folder / "clamd.conf"
    config.write_text(
        f"LocalSocket {sock}\nForeground yes\nDatabaseDirectory {database}\n"
        f"LogFile {folder / 'clamd.log'}\nTemporaryDirectory {folder}\n"
        f"StreamMaxLength {stream_max}\nMaxScanSize 400M\nMaxFileSize 200M\n"
    )
    process = subprocess.Popen(
        [CLAMD, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clamd exited: {(folder / 'clamd.log').read_text()[-2000:]}")
        if sock.exists() and clamd.ping(sock):
            return process, sock
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("clamd did not answer within 60 s")


@pytest.fixture(scope="session")
def clamd_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not Path(CLAMD).exists():
        pytest.fail("clamd is missing: install Debian's clamav-daemon (.ci/system-packages)")
    process, sock = start_clamd(tmp_path_factory.mktemp("clamd"))
    yield sock
    process.terminate()
    process.wait(timeout=10)


def airlock_settings(base: Settings, root: Path, sock: Path, **extra: object) -> Settings:
    return base.model_copy(
        update={
            "airlock_dir": root / "airlock",
            "project_storage_root": root / "projects",
            "clamd_socket": sock,
            "clamd_timeout_seconds": 20.0,
            **extra,
        }
    )


def zip_bytes(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def tar_bytes(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            content = (data or {}).get(member.name)
            if content is not None:
                member.size = len(content)
                archive.addfile(member, io.BytesIO(content))
            else:
                archive.addfile(member)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    return member
