"""Run the local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok.

Every process listens on 127.0.0.1 only, on free ports, with TLS and client certificates. The
folder given to `LocalCluster` holds the PKI, kubeconfigs, etcd data, one log file per component
and `state.json` (pids and ports), so `status` and `down` work from another process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from orchestrator.devcluster import build, pki

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_PREFIX = "kwok-node-"
POD_CIDR = "10.244.0.0/16"
_PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    """The control plane could not be started or did not become healthy; names the log to read."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent dies (Linux prctl).

    KILL, not TERM: a kube-apiserver whose etcd vanished first can take minutes to drain.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _owned(pid: int, root: Path) -> bool:
    """True when pid is one of our processes (its command line mentions our folder)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return str(root) in cmdline


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@dataclass
class Ports:
    etcd_client: int = field(default_factory=_free_port)
    etcd_peer: int = field(default_factory=_free_port)
    apiserver: int = field(default_factory=_free_port)
    controller_manager: int = field(default_factory=_free_port)
    scheduler: int = field(default_factory=_free_port)
    kwok: int = field(default_factory=_free_port)


class LocalCluster:
    """A real control plane in a folder. `up()` is idempotent; `down()` leaves no process behind."""

    def __init__(
        self,
        root: Path,
        nodes: int = 1,
        tie_to_parent: bool = False,
        apiserver_flags: Sequence[str] = (),
    ) -> None:
        self.root = root.resolve()
        self.nodes = nodes
        # When True, every component dies with the process that started it (test sessions).
        self.tie_to_parent = tie_to_parent
        # Extra kube-apiserver flags, after the defaults (a later flag wins), e.g. the
        # benchmarks' `--max-requests-inflight=0`.
        self.apiserver_flags = tuple(apiserver_flags)
        self.pki = pki.Pki(self.root / "pki")
        self.logs = self.root / "logs"

    # -- paths and state ---------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def log_file(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @property
    def server(self) -> str:
        port = self._state().get("ports", {}).get("apiserver")
        if not port:
            raise ClusterError(f"the cluster in {self.root} is not running")
        return f"https://127.0.0.1:{port}"

    def _client(self, stem: str = "admin", timeout: float = 5.0) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.cert(stem)), str(self.pki.key(stem)))
        return httpx.Client(verify=context, timeout=timeout)

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> None:
        """Start every component (building binaries first if needed) and wait until healthy."""
        bins = build.ensure_built()
        if self._running_pids() and all(v == "healthy" for v in self.status().values()):
            return
        self.down()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        pki.ensure_pki(self.pki.root)
        ports = Ports()
        state: dict[str, Any] = {"ports": vars(ports), "pids": {}, "bin_dir": str(bins)}
        self._save_state(state)
        server = f"https://127.0.0.1:{ports.apiserver}"
        for stem, user in (
            ("admin", "kluis-admin"),
            ("controller-manager", "controller-manager"),
            ("scheduler", "scheduler"),
            ("kwok", "kwok"),
        ):
            path = self.kubeconfig if stem == "admin" else self.root / f"{stem}.kubeconfig"
            pki.write_kubeconfig(path, pki.make_kubeconfig(self.pki, server, stem, user))
        deadline = time.monotonic() + timeout
        try:
            self._start(state, "etcd", self._etcd_args(bins, ports))
            self._wait("etcd", deadline, self._etcd_healthy)
            self._start(state, "kube-apiserver", self._apiserver_args(bins, ports))
            self._wait("kube-apiserver", deadline, self._apiserver_ready)
            self._start(
                state, "kube-controller-manager", self._controller_manager_args(bins, ports)
            )
            self._start(state, "kube-scheduler", self._scheduler_args(bins, ports))
            self._wait("kube-controller-manager", deadline, self._default_service_account)
            self._wait("kube-scheduler", deadline, lambda: self._component_healthy("scheduler"))
            self._create_nodes()
            self._start(state, "kwok", self._kwok_args(bins, ports))
            self._wait("kwok", deadline, self._nodes_ready)
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop every component, clients first and etcd last; safe to call at any time.

        Each gets SIGTERM and a grace period, then SIGKILL: the apiserver drains while etcd is
        still there, so nothing hangs on a vanished backend.
        """
        state = self._state()
        pids: dict[str, int] = state.get("pids", {})
        first = [n for n in ("kwok", "kube-scheduler", "kube-controller-manager") if n in pids]
        for group in (first, ["kube-apiserver"], ["etcd"]):
            live = [
                pids[n]
                for n in group
                if n in pids and _alive(pids[n]) and _owned(pids[n], self.root)
            ]
            for pid in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in live) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in live:
                if _alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if state:
            state["pids"] = {}
            self._save_state(state)

    def stop_apiserver(self) -> None:
        """Stop only the API server (an outage for the clients; etcd and the rest keep running).
        `start_apiserver` brings it back on the same port with the same certificates."""
        state = self._state()
        pid = state.get("pids", {}).pop("kube-apiserver", None)
        if pid is not None and _alive(pid) and _owned(pid, self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._save_state(state)

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Start the API server stopped by `stop_apiserver` and wait until it is ready."""
        state = self._state()
        if not state.get("ports"):
            raise ClusterError(f"the cluster in {self.root} was never started")
        if "kube-apiserver" in self._running_pids():
            return
        ports = Ports(**state["ports"])
        self._start(state, "kube-apiserver", self._apiserver_args(Path(state["bin_dir"]), ports))
        self._wait("kube-apiserver", time.monotonic() + timeout, self._apiserver_ready)

    def _running_pids(self) -> dict[str, int]:
        pids: dict[str, int] = self._state().get("pids", {})
        return {n: p for n, p in pids.items() if _alive(p) and _owned(p, self.root)}

    def _start(self, state: dict[str, Any], name: str, args: list[str]) -> None:
        log = self.log_file(name).open("ab")
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.tie_to_parent else None,
        )
        log.close()
        state["pids"][name] = proc.pid
        self._save_state(state)

    def _wait(self, name: str, deadline: float, check: Callable[[], bool]) -> None:
        pid = self._state()["pids"].get(name)
        while time.monotonic() < deadline:
            if pid and not _alive(pid):
                raise ClusterError(f"{name} exited during start-up; see {self.log_file(name)}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                if check():
                    return
            time.sleep(0.2)
        raise ClusterError(f"{name} did not become ready in time; see {self.log_file(name)}")

    # -- command lines ---------------------------------------------------------------------------
    def _etcd_args(self, bins: Path, ports: Ports) -> list[str]:
        client = f"https://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        p = self.pki
        return [
            str(bins / "etcd"),
            "--name=kluis",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kluis={peer}",
            "--initial-cluster-state=new",
            f"--cert-file={p.cert('etcd-server')}",
            f"--key-file={p.key('etcd-server')}",
            f"--trusted-ca-file={p.ca_cert}",
            "--client-cert-auth=true",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_args(self, bins: Path, ports: Ports) -> list[str]:
        p = self.pki
        return [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=https://127.0.0.1:{ports.etcd_client}",
            f"--etcd-cafile={p.ca_cert}",
            f"--etcd-certfile={p.cert('apiserver-etcd-client')}",
            f"--etcd-keyfile={p.key('apiserver-etcd-client')}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--cert-dir={self.root / 'apiserver-certs'}",
            f"--tls-cert-file={p.cert('apiserver')}",
            f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.path('sa.pub')}",
            f"--service-account-signing-key-file={p.path('sa.key')}",
            f"--service-cluster-ip-range={pki.SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--anonymous-auth=false",
            "--allow-privileged=false",
            "--profiling=false",
            # Loopback is not a valid endpoint for the in-cluster service; nothing uses it here.
            "--endpoint-reconciler-type=none",
            f"--encryption-provider-config={p.path('encryption.yaml')}",
            "--v=1",
            *self.apiserver_flags,
        ]

    def _controller_manager_args(self, bins: Path, ports: Ports) -> list[str]:
        p, kc = self.pki, str(self.root / "controller-manager.kubeconfig")
        return [
            str(bins / "kube-controller-manager"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p.path('sa.key')}",
            f"--root-ca-file={p.ca_cert}",
            f"--cluster-signing-cert-file={p.ca_cert}",
            f"--cluster-signing-key-file={p.ca_key}",
            "--controllers=*",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={self.root / 'controller-manager-certs'}",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_args(self, bins: Path, ports: Ports) -> list[str]:
        kc = str(self.root / "scheduler.kubeconfig")
        return [
            str(bins / "kube-scheduler"),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--cert-dir={self.root / 'scheduler-certs'}",
            "--profiling=false",
            "--v=1",
        ]

    def _kwok_args(self, bins: Path, ports: Ports) -> list[str]:
        return [
            str(bins / "kwok"),
            f"--kubeconfig={self.root / 'kwok.kubeconfig'}",
            "--manage-all-nodes=true",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports.kwok}",
        ]

    # -- health ----------------------------------------------------------------------------------
    def _etcd_healthy(self) -> bool:
        port = self._state()["ports"]["etcd_client"]
        with self._client("apiserver-etcd-client", timeout=2) as client:
            response = client.get(f"https://127.0.0.1:{port}/health")
        return response.status_code == 200 and response.json().get("health") == "true"

    def _apiserver_ready(self) -> bool:
        with self._client(timeout=3) as client:
            return client.get(f"{self.server}/readyz").status_code == 200

    def _component_healthy(self, component: str) -> bool:
        port = self._state()["ports"][component.replace("-", "_")]
        with httpx.Client(verify=False, timeout=2) as client:  # noqa: S501 - self-signed, loopback
            response = client.get(f"https://127.0.0.1:{port}/healthz")
        return response.status_code == 200

    def _default_service_account(self) -> bool:
        with self._client() as client:
            url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
            return client.get(url).status_code == 200

    def _create_nodes(self) -> None:
        with self._client() as client:
            for i in range(self.nodes):
                name = f"{NODE_PREFIX}{i}"
                node = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "kubernetes.io/hostname": name,
                            "type": "kwok",
                            "kluis.io/devcluster": "true",
                        },
                    },
                    "status": {
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    },
                }
                response = client.post(f"{self.server}/api/v1/nodes", json=node)
                if response.status_code not in (201, 409):
                    raise ClusterError(f"could not create node {name}: {response.text}")

    def _nodes_ready(self) -> bool:
        with self._client() as client:
            items = client.get(f"{self.server}/api/v1/nodes").json().get("items", [])
        ready = [
            n
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) >= self.nodes

    def status(self) -> dict[str, str]:
        """Each component: 'healthy', 'unhealthy' (running, failing its check) or 'stopped'."""
        pids = self._running_pids()
        checks: dict[str, Callable[[], bool]] = {
            "etcd": self._etcd_healthy,
            "kube-apiserver": self._apiserver_ready,
            "kube-controller-manager": lambda: self._component_healthy("controller-manager"),
            "kube-scheduler": lambda: self._component_healthy("scheduler"),
            "kwok": self._nodes_ready,
        }
        result: dict[str, str] = {}
        for name in COMPONENTS:
            if name not in pids:
                result[name] = "stopped"
                continue
            try:
                result[name] = "healthy" if checks[name]() else "unhealthy"
            except (httpx.HTTPError, OSError, KeyError, ValueError):
                result[name] = "unhealthy"
        return result

    def memory_kib(self) -> dict[str, int]:
        """Resident memory (RSS, KiB) of each running component."""
        return {name: _rss_kib(pid) for name, pid in self._running_pids().items()}
