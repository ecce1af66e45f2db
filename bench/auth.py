"""Authentication under load, both servers on loopback in the same run (PERFORMANCE.md P6, P7).

P6: `GET /api/auth/me` with a session cookie through the real app (`kluis serve`) against a plain
FastAPI JSON endpoint, both served by uvicorn (one process each), driven by `wrk` (Debian package;
a threaded httpx generator when it is missing). Throughput ratio and the authenticated p99.

P7: a login storm through `POST /api/auth/login` (argon2id + TOTP + session + audit, every login
a different user with a fresh code) against raw `argon2.PasswordHasher.verify` throughput with the
same concurrency; and the p99 of a steady stream of other requests during the storm vs at idle.

Each figure is the median of 5 repetitions after a warm-up. Database: the embedded SQLite.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
from sqlalchemy.orm import Session

from orchestrator import passwords, totp
from orchestrator.config import Environment, Settings
from orchestrator.db import make_engine, upgrade_database
from orchestrator.models import (
    Institution,
    Role,
    TokenKind,
    TokenState,
    TotpToken,
    User,
    UserStatus,
)

REPEATS = 5
PASSWORD = "bench password, long enough"  # noqa: S105 (throw-away bench users)
HOST = "127.0.0.1"
P6_CONNECTIONS = 4
P6_SECONDS = 4
P6_FALLBACK_REQUESTS = 2000
P7_CONCURRENCY = 2  # the cores of our machines: more only queues inside the server
P7_LOGINS = 60  # per storm
PROBE_INTERVAL_S = 0.02


# --- servers --------------------------------------------------------------------------------------


def plain_app() -> Any:
    """The baseline: FastAPI's minimal JSON endpoint, no middleware, no database."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up")


class Server:
    def __init__(self, args: list[str], env: dict[str, str], ready_path: str) -> None:
        self.port = _free_port()
        self.base = f"http://{HOST}:{self.port}"
        env = {**env, "KLUIS_PORT": str(self.port), "BENCH_PORT": str(self.port)}
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ready(self.base + ready_path)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- data -----------------------------------------------------------------------------------------


def _seed(settings: Settings, count: int) -> list[tuple[str, bytes]]:
    """`count` researchers who can log in, each with a token of its own; (username, seed)."""
    engine = make_engine(settings)
    today = date.today()
    password_hash = passwords.hash_password(PASSWORD)  # salted: sharing it changes no cost
    users = []
    with Session(engine) as session:
        institution = Institution(
            name="Bench institute",
            country="NL",
            authorised_from=today - timedelta(days=1),
            authorised_until=today + timedelta(days=365),
            allowed_networks=[],
        )
        session.add(institution)
        session.flush()
        for i in range(count):
            user = User(
                username=f"bench-{i:05d}",
                email="bench@example.org",
                full_name="Bench",
                role=Role.RESEARCHER,
                status=UserStatus.ACTIVE,
                institution_id=institution.id,
                password_hash=password_hash,
                statement_valid_until=today + timedelta(days=365),
            )
            session.add(user)
            session.flush()
            seed = totp.new_software_seed()
            session.add(
                TotpToken(
                    serial=f"B-{i:05d}",
                    kind=TokenKind.SOFTWARE,
                    seed_encrypted=totp.encrypt_seed(settings, seed),
                    state=TokenState.ON_LOAN,
                    user_id=user.id,
                )
            )
            users.append((user.username, seed))
        session.commit()
    engine.dispose()
    return users


def _code(seed: bytes) -> str:
    return pyotp.TOTP(base64.b32encode(seed).decode()).at(datetime.now(UTC))


def _login_body(user: tuple[str, bytes]) -> dict[str, str]:
    return {"username": user[0], "password": PASSWORD, "code": _code(user[1])}


# --- load generators ------------------------------------------------------------------------------


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, headers: dict[str, str], seconds: int) -> tuple[float, float]:
    """(requests/s, p99 ms) from one bounded wrk run."""
    args = ["wrk", "-t1", f"-c{P6_CONNECTIONS}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = _WRK_RPS.search(out)
    p99 = _WRK_P99.search(out)
    if rps is None or p99 is None:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw failing responses:\n{out}")
    return float(rps.group(1)), float(p99.group(1)) * _UNIT_MS[p99.group(2)]


def _httpx_load(url: str, headers: dict[str, str], requests: int) -> tuple[float, float]:
    """The fallback generator: a few threads, a fixed number of requests."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(headers=headers, timeout=10) as client:
            for _ in range(n):
                start = time.perf_counter()
                client.get(url).raise_for_status()
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(P6_CONNECTIONS) as pool:
        list(pool.map(worker, [requests // P6_CONNECTIONS] * P6_CONNECTIONS))
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, _percentile(latencies, 99)


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _load(url: str, headers: dict[str, str], warm: bool = False) -> tuple[float, float]:
    if shutil.which("wrk"):
        return _wrk(url, headers, 1 if warm else P6_SECONDS)
    return _httpx_load(url, headers, 200 if warm else P6_FALLBACK_REQUESTS)


class Prober:
    """A steady trickle of authenticated requests; records each one's latency."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                client.get(self.url).raise_for_status()
                self.latencies.append((time.perf_counter() - start) * 1000)
                self._stop.wait(PROBE_INTERVAL_S)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- P6 -------------------------------------------------------------------------------------------


def _p6(kluis: Server, plain: Server, cookie: dict[str, str]) -> dict[str, Any]:
    me, baseline = kluis.base + "/api/auth/me", plain.base + "/plain"
    _load(baseline, {}, warm=True)
    _load(me, cookie, warm=True)
    plain_rps, auth_rps, auth_p99, plain_p99 = [], [], [], []
    for _ in range(REPEATS):
        rps, p99 = _load(baseline, {})
        plain_rps.append(rps)
        plain_p99.append(p99)
        rps, p99 = _load(me, cookie)
        auth_rps.append(rps)
        auth_p99.append(p99)
    ratio = statistics.median(auth_rps) / statistics.median(plain_rps)
    return {
        "P6 load generator": "wrk" if shutil.which("wrk") else "httpx threads",
        "P6 plain FastAPI JSON, req/s (median of 5)": round(statistics.median(plain_rps)),
        "P6 GET /api/auth/me with session, req/s (median of 5)": round(statistics.median(auth_rps)),
        "P6 throughput ratio (goal >= 0.35)": round(ratio, 3),
        "P6 /api/auth/me p99 ms (goal <= 20)": round(statistics.median(auth_p99), 2),
        "P6 plain p99 ms": round(statistics.median(plain_p99), 2),
    }


# --- P7 -------------------------------------------------------------------------------------------


def _raw_verify_rate(count: int) -> float:
    hasher = passwords.HASHER
    stored = hasher.hash(PASSWORD)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(P7_CONCURRENCY) as pool:
        list(pool.map(lambda _: hasher.verify(stored, PASSWORD), range(count)))
    return count / (time.perf_counter() - started)


def _storm(base: str, users: list[tuple[str, bytes]]) -> float:
    """Log every user in once, `P7_CONCURRENCY` at a time; logins per second."""
    url = base + "/api/auth/login"
    local = threading.local()

    def one(user: tuple[str, bytes]) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        response = local.client.post(url, json=_login_body(user))
        if response.status_code != 200:
            raise RuntimeError(f"login failed: {response.status_code} {response.text}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(P7_CONCURRENCY) as pool:
        list(pool.map(one, users))
    return len(users) / (time.perf_counter() - started)


def _p7(kluis: Server, users: list[tuple[str, bytes]], cookie: dict[str, str]) -> dict[str, Any]:
    """Throughput: storms alone, against raw verifies, alternating. Latency: the prober's p99
    at idle and during further storms (the prober's own load is kept out of the throughput)."""
    me = kluis.base + "/api/auth/me"
    batches = [users[i * P7_LOGINS : (i + 1) * P7_LOGINS] for i in range(2 * REPEATS + 1)]
    _raw_verify_rate(P7_CONCURRENCY * 4)
    _storm(kluis.base, batches[0])  # warm-up
    raw, storm, idle_p99, storm_p99 = [], [], [], []
    for batch in batches[1 : REPEATS + 1]:
        raw.append(_raw_verify_rate(P7_LOGINS))
        storm.append(_storm(kluis.base, batch))
    for batch in batches[REPEATS + 1 :]:
        with Prober(me, cookie) as idle:
            time.sleep(P7_LOGINS / statistics.median(storm))  # as long as a storm lasts
        with Prober(me, cookie) as busy:
            _storm(kluis.base, batch)
        idle_p99.append(_percentile(idle.latencies, 99))
        storm_p99.append(_percentile(busy.latencies, 99))
    return {
        "P7 concurrency (clients = threads)": P7_CONCURRENCY,
        "P7 raw argon2 verify/s (median of 5)": round(statistics.median(raw), 2),
        "P7 logins/s through POST /api/auth/login (median of 5)": round(
            statistics.median(storm), 2
        ),
        "P7 login/verify ratio (goal >= 0.85)": round(
            statistics.median(storm) / statistics.median(raw), 3
        ),
        "P7 other requests p99 ms, idle": round(statistics.median(idle_p99), 2),
        "P7 other requests p99 ms, during storm": round(statistics.median(storm_p99), 2),
        "P7 p99 storm/idle (goal <= 3)": round(
            statistics.median(storm_p99) / statistics.median(idle_p99), 2
        ),
    }


# --- entry points ---------------------------------------------------------------------------------


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kluis-bench-auth-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KLUIS_")},
            "KLUIS_ENVIRONMENT": Environment.DEVELOPMENT.value,
            "KLUIS_DATA_DIR": tmp,
            "KLUIS_COOKIE_SECURE": "false",  # http on loopback
            "KLUIS_HOST": HOST,
            "KLUIS_LOG_FORMAT": "json",
        }
        settings = Settings(
            environment=Environment.DEVELOPMENT, data_dir=Path(tmp), cookie_secure=False
        )
        upgrade_database(settings)
        users = _seed(settings, 1 + (2 * REPEATS + 1) * P7_LOGINS)
        serve = "from orchestrator.cli import main; main()"
        kluis_cmd = [sys.executable, "-c", serve, "serve", "--no-migrate"]
        plain_cmd = [sys.executable, "-m", "bench.auth", "plain"]
        kluis = Server(kluis_cmd, env, "/healthz")
        plain = Server(plain_cmd, env, "/plain")
        try:
            response = httpx.post(kluis.base + "/api/auth/login", json=_login_body(users[0]))
            response.raise_for_status()
            cookie = {"Cookie": f"kluis_session={response.cookies['kluis_session']}"}
            metrics = {
                "database": "SQLite (embedded default, WAL)",
                **_p6(kluis, plain, cookie),
                **_p7(kluis, users[1:], cookie),
            }
        finally:
            kluis.stop()
            plain.stop()
    return {"metrics": metrics}


def _serve_plain() -> None:
    import uvicorn

    port = int(os.environ["BENCH_PORT"])
    uvicorn.run(
        plain_app(), host=HOST, port=port, log_config=None, access_log=False, server_header=False
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["plain"]:
        _serve_plain()
