"""The chart's clamd and freshclam configuration, checked by the real ClamAV (Debian's
clamav-daemon): clamconf parses both files, and clamd started with the rendered clamd.conf
(folders moved into a temporary directory) answers Kluis's own client on its socket."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helm.chart_support import find, render
from orchestrator import clamd

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
CLAMCONF = shutil.which("clamconf") or "/usr/bin/clamconf"
# A signature of our own (ClamAV's .hdb format: md5:size:name); no download is reachable here.
SAMPLE = b"kluis helm chart clamd configuration test sample\n"


@pytest.fixture
def rendered_conf(helm: Path) -> dict[str, str]:
    if not Path(CLAMD).exists():
        pytest.fail("clamd is missing: install Debian's clamav-daemon (.ci/system-packages)")
    objects = render(helm, "production")
    data: dict[str, str] = find(objects, "ConfigMap", "r-kluis-clamav")["data"]
    return data


def _moved(conf: str, root: Path) -> str:
    """The configuration with the pod's folders moved under `root` (one line at a time)."""
    lines = []
    for line in conf.splitlines():
        key, _, value = line.partition(" ")
        for folder in ("/run/clamav", "/var/lib/clamav", "/etc/kluis-clamav", "/tmp"):
            if value == folder or value.startswith(folder + "/"):
                target = root / folder.strip("/").replace("/", "-")
                target.mkdir(exist_ok=True)
                value = str(target) + value.removeprefix(folder)
                break
        lines.append(f"{key} {value}")
    return "\n".join(lines) + "\n"


def test_clamav_config_socket_is_the_one_kluis_scans_through(
    helm: Path, rendered_conf: dict[str, str]
) -> None:
    settings = find(render(helm, "production"), "ConfigMap", "r-kluis")["data"]

    assert f"LocalSocket {settings['KLUIS_CLAMD_SOCKET']}\n" in rendered_conf["clamd.conf"]
    assert "NotifyClamd /etc/kluis-clamav/clamd.conf\n" in rendered_conf["freshclam.conf"]


def test_clamav_config_both_files_parse(rendered_conf: dict[str, str], tmp_path: Path) -> None:
    for name, text in rendered_conf.items():
        (tmp_path / name).write_text(text)

    result = subprocess.run(
        [CLAMCONF, "-c", str(tmp_path)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "ERROR" not in result.stdout + result.stderr
    assert 'StreamMaxLength = "2147483648"' in result.stdout


def test_clamav_config_clamd_serves_kluis_on_the_rendered_config(
    rendered_conf: dict[str, str], tmp_path: Path
) -> None:
    conf = _moved(rendered_conf["clamd.conf"], tmp_path)
    database = tmp_path / "var-lib-clamav"
    digest = hashlib.md5(SAMPLE).hexdigest()  # noqa: S324 - ClamAV's .hdb format
    (database / "kluis-helm.hdb").write_text(f"{digest}:{len(SAMPLE)}:Kluis.Helm.Sample\n")
    (tmp_path / "clamd.conf").write_text(conf)
    sock = tmp_path / "run-clamav" / "clamd.ctl"
    infected, clean = tmp_path / "infected.bin", tmp_path / "clean.bin"
    infected.write_bytes(SAMPLE)
    clean.write_bytes(b"nothing to see\n")

    process = subprocess.Popen(
        [CLAMD, "--foreground", f"--config-file={tmp_path / 'clamd.conf'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (sock.exists() and clamd.ping(sock)):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "clamd did not answer within 60 s"
            time.sleep(0.05)

        assert clamd.scan_file(sock, clean, timeout=10).clean
        verdict = clamd.scan_file(sock, infected, timeout=10)
        assert not verdict.clean
        assert "Kluis.Helm.Sample" in verdict.detail
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
    finally:
        process.terminate()
        process.wait(timeout=10)
