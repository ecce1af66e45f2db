"""Run by `make images` inside the built workspace image: the analysis stack imports and works
(an ACRO crosstab suppresses a small cell), the lockdown holds (not root; no sudo, compilers or
network tools; pip without an index; Jupyter answers 403 on download routes and the download and
extension-manager plugins are disabled), and both kernels are registered."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

STACK = ("pandas", "statsmodels", "scikit-learn", "pyreadstat", "matplotlib", "acro", "jupyterlab")
FORBIDDEN_TOOLS = (
    "sudo",
    "gcc",
    "cc",
    "c++",
    "g++",
    "make",
    "ld",
    "as",
    "curl",
    "wget",
    "ssh",
    "scp",
    "sftp",
    "nc",
    "ncat",
    "netcat",
    "socat",
    "telnet",
    "ftp",
    "rsync",
    "git",
    "node",
    "npm",
)


def require(condition: object, detail: object) -> None:
    """Like assert, but also under python -O, and with the detail on failure."""
    if not condition:
        raise SystemExit(f"workspace check failed: {detail}")


def check_stack() -> None:
    import acro
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import pyreadstat
    import statsmodels.formula.api as smf
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    n = 400
    df = pd.DataFrame(
        {
            "region": rng.choice(["north", "east", "south", "west"], n),
            "sector": rng.choice(["public", "private"], n),
            "income": rng.normal(30_000, 5_000, n).round(),
        }
    )
    df.loc[0, "region"] = "islands"  # a cell of one person: must be suppressed
    df["high"] = (df["income"] > 32_000).astype(int)

    model = smf.ols("income ~ C(region) + C(sector)", data=df).fit()
    require(model.df_resid > 10, model.df_resid)
    LogisticRegression().fit(df[["income"]], df["high"])
    with tempfile.TemporaryDirectory() as tmp:
        pyreadstat.write_sav(df, f"{tmp}/check.sav")
        back, meta = pyreadstat.read_sav(f"{tmp}/check.sav")
        require(len(back) == n and "income" in meta.column_names, meta.column_names)
        plt.figure()
        df["income"].plot.hist()
        plt.savefig(f"{tmp}/check.png")

    session = acro.ACRO(suppress=True)
    logging.getLogger("acro").setLevel(logging.WARNING)
    table = session.crosstab(df["region"], df["sector"])
    record = session.results.get_index(0)
    require(record.status != "pass", record.status)
    require(table.loc["islands"].isna().all(), table)
    print(f"workspace: ACRO crosstab {record.status}: the cell of 1 is suppressed")
    versions = {name: version(name) for name in STACK}
    print("workspace: python", sys.version.split()[0], versions)


def check_lockdown() -> None:
    require(os.getuid() == 1000 and os.getgid() == 100, (os.getuid(), os.getgid()))
    require(os.access(Path.home(), os.W_OK), f"{Path.home()} is not writable")
    present = [tool for tool in FORBIDDEN_TOOLS if shutil.which(tool)]
    require(not present, f"in the image: {present}")
    privileged = subprocess.run(
        ["find", "/", "-xdev", "-type", "f", "-perm", "/6000"], capture_output=True, text=True
    ).stdout.split()
    require(not privileged, f"setuid/setgid files: {privileged}")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tempfile.mkdtemp(), "six"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    require(pip.returncode != 0 and "Looking in indexes" not in pip.stdout, pip.stdout)
    print("workspace: uid 1000, no setuid, sudo, compilers or network tools, pip has no index")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def check_jupyter() -> None:
    root = Path(tempfile.mkdtemp())
    (root / "result.csv").write_text("a,b\n1,2\n")
    (root / "n.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    port, token = free_port(), "check-" + os.urandom(8).hex()
    server = subprocess.Popen(
        [
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.root_dir={root}",
            f"--IdentityProvider.token={token}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if get(f"{base}/api/status", token)[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                raise AssertionError(server.stderr.read() if server.stderr else "server died")
            time.sleep(0.5)
        else:
            raise AssertionError("jupyter lab did not start within 60 s")
        status, body = get(f"{base}/api/contents/result.csv", token)
        require(status == 200, ("api/contents", status, body[:200]))
        for path in (
            "files/result.csv",
            "files/result.csv?download=1",
            "view/result.csv",
            "nbconvert/html/n.ipynb?download=true",
        ):
            status, body = get(f"{base}/{path}", token)
            require(status == 403, (path, status, body[:200]))
        status, page = get(f"{base}/lab", token)
        require(status == 200, ("lab", status))
        for plugin in (
            "@jupyterlab/docmanager-extension:download",
            "@jupyterlab/filebrowser-extension:download",
            "@jupyterlab/extensionmanager-extension",
        ):
            require(plugin in page, plugin)
        specs = json.loads(get(f"{base}/api/kernelspecs", token)[1])["kernelspecs"]
        require({"python3", "ir"} <= set(specs), sorted(specs))
        print(
            "workspace: jupyter lab 403 on files/view/nbconvert, download and extension"
            " plugins disabled, kernels",
            sorted(specs),
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    check_stack()
    check_lockdown()
    check_jupyter()
    print("workspace: python ok")
