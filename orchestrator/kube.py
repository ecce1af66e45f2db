"""The one door to Kubernetes: server-side apply, get, list by label and delete on plain dicts.

Only this module imports the `kubernetes` client (import-linter checks it). Requests go straight
to each kind's REST path through `ApiClient.call_api` — no discovery round trips, no model
(de)serialisation — so one reconcile costs exactly the calls it needs, counted by verb. Failures
surface as two exceptions the reconciler understands: `Retryable` and `Permanent`.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from orchestrator.config import Settings

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class KubeError(Exception):
    """A failed call to the API server; `status` is the HTTP status (0 without a response)."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Retryable(KubeError):
    """Try again later: the server is unreachable, overloaded, or the object is mid-change."""


class Permanent(KubeError):
    """Retrying the same request cannot help: forbidden, or an object the server refuses."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    api_version: str
    plural: str
    namespaced: bool

    @property
    def prefix(self) -> str:
        group = "/" in self.api_version  # core kinds live under /api, the rest under /apis
        return f"/apis/{self.api_version}" if group else f"/api/{self.api_version}"


# The kinds the manifest builders emit. Unknown kinds are refused rather than discovered.
RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("v1", "namespaces", namespaced=False),
    "PersistentVolume": Resource("v1", "persistentvolumes", namespaced=False),
    "ResourceQuota": Resource("v1", "resourcequotas", namespaced=True),
    "LimitRange": Resource("v1", "limitranges", namespaced=True),
    "ServiceAccount": Resource("v1", "serviceaccounts", namespaced=True),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims", namespaced=True),
    "NetworkPolicy": Resource("networking.k8s.io/v1", "networkpolicies", namespaced=True),
    "Role": Resource("rbac.authorization.k8s.io/v1", "roles", namespaced=True),
    "RoleBinding": Resource("rbac.authorization.k8s.io/v1", "rolebindings", namespaced=True),
}


# Kinds the reconciler only lists and deletes, never applies: workspace server pods (started by the
# hub) that must stop when a project is frozen or ends. Not in RESOURCES: resync never prunes them.
WORKLOADS: dict[str, Resource] = {"Pod": Resource("v1", "pods", namespaced=True)}


def resource_for(kind: str) -> Resource:
    try:
        return RESOURCES.get(kind) or WORKLOADS[kind]
    except KeyError:
        raise Permanent(f"kind {kind} is not managed by Kluis") from None


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace or "", name): how the reconciler tells objects apart."""
    meta = obj.get("metadata", {})
    return str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"])


def _selector_text(selector: str | Mapping[str, str]) -> str:
    if isinstance(selector, str):
        return selector
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify(status: int, message: str, verb: str, retry_after: float | None = None) -> KubeError:
    """Map an HTTP failure to retry-later or permanent (the reconciler's two outcomes)."""
    text = f"{verb} failed: HTTP {status}: {message}"[:500]
    if status in (429, 0) or status >= 500:
        return Retryable(text, status, retry_after)
    if status == 409:
        # A conflict on delete or create means the object is changing under us: look again.
        return Retryable(text, status, retry_after)
    if status == 404:
        # On apply: the namespace is not there (yet); a later pass creates it first.
        return Retryable(text, status, retry_after)
    if status == 403 and "being terminated" in message:
        # Namespace lifecycle admission refuses new objects while the namespace is deleted.
        return Retryable(text, status, retry_after)
    return Permanent(text, status, retry_after)


class KubeClient:
    """A thread-safe client for the kinds in `RESOURCES`; every call has a timeout and is counted.

    `calls` counts requests by HTTP verb (GET, LIST, PATCH, DELETE, POST, PUT) for metrics and
    tests.
    """

    def __init__(
        self,
        api_client: Any,
        field_manager: str,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    ) -> None:
        self._api = api_client
        self.field_manager = field_manager
        self.timeout = timeout
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_kubeconfig(
        cls, path: Path, field_manager: str, pool_size: int = 8, **kwargs: Any
    ) -> KubeClient:
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=configuration
        )
        return cls(_api_client(configuration, pool_size), field_manager, **kwargs)

    @classmethod
    def in_cluster(cls, field_manager: str, pool_size: int = 8, **kwargs: Any) -> KubeClient:
        configuration = client.Configuration()
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        return cls(_api_client(configuration, pool_size), field_manager, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeClient:
        """The configured kubeconfig; else in-cluster config; else the local dev cluster."""
        # One connection per request in flight: projects at once x objects of one at once.
        pool = settings.reconcile_concurrency * max(2, settings.reconcile_apply_parallelism)
        if settings.kubeconfig is not None:
            path = settings.kubeconfig.expanduser().resolve()
            return cls.from_kubeconfig(path, settings.field_manager, pool)
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(settings.field_manager, pool)
        dev = settings.effective_cluster_dir / "admin.kubeconfig"
        return cls.from_kubeconfig(dev, settings.field_manager, pool)

    def close(self) -> None:
        self._api.close()

    # --- the four operations ---------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` under our field manager, taking over conflicting fields."""
        kind, namespace, name = object_key(obj)
        path = self._path(kind, namespace, name)
        query = {"fieldManager": self.field_manager, "force": "true"}
        body = json.dumps(obj)  # JSON is YAML: the apply content type accepts it
        result = self._call("PATCH", path, query, body, APPLY_CONTENT_TYPE)
        assert result is not None
        return result

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        return self._call("GET", self._path(kind, namespace or "", name), missing_ok=True)

    def list_owned(
        self, kind: str, selector: str | Mapping[str, str], namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `kind` matching the label selector (in `namespace`, or cluster-wide).

        Items carry `kind` and `apiVersion` (list responses leave them out)."""
        resource = resource_for(kind)
        path = self._path(kind, namespace or "", None)
        query = {"labelSelector": _selector_text(selector)}
        result = self._call("LIST", path, query, missing_ok=True)
        items: list[dict[str, Any]] = (result or {}).get("items") or []
        for item in items:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", resource.api_version)
        return items

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """Delete with background propagation; an object already gone is fine."""
        query = {"propagationPolicy": "Background"}
        self._call("DELETE", self._path(kind, namespace or "", name), query, missing_ok=True)

    # --- leases (leader election) ----------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The `coordination.k8s.io/v1` Lease, or None when there is none yet."""
        return self._call("GET", _lease_path(namespace, name), missing_ok=True)

    def create_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Lease; `Retryable` (409) when another replica created it first."""
        namespace = str(lease["metadata"]["namespace"])
        path = _lease_path(namespace, None)
        # A JSON content type: the client serialises the dict itself.
        result = self._call("POST", path, body=dict(lease), content_type="application/json")
        assert result is not None
        return result

    def replace_lease(self, lease: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a Lease whose `metadata.resourceVersion` is the one read (optimistic
        concurrency): `Retryable` (409) when another replica wrote it in between."""
        meta = lease["metadata"]
        if not meta.get("resourceVersion"):
            raise Permanent("replacing a Lease needs the resourceVersion it was read at")
        path = _lease_path(str(meta["namespace"]), str(meta["name"]))
        result = self._call("PUT", path, body=dict(lease), content_type="application/json")
        assert result is not None
        return result

    # --- plumbing --------------------------------------------------------------------------------

    def _path(self, kind: str, namespace: str, name: str | None) -> str:
        resource = resource_for(kind)
        path = resource.prefix
        if resource.namespaced:
            if namespace:
                path += f"/namespaces/{quote(namespace, safe='')}"
            elif name is not None:
                raise Permanent(f"{kind} {name} needs a namespace")
        path += f"/{resource.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        return path

    def _call(
        self,
        verb: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: str | dict[str, Any] | None = None,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        method = "GET" if verb == "LIST" else verb
        headers: dict[str, str] = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        with self._lock:
            self.calls[verb] += 1
        query_list = list((query or {}).items())
        try:
            _, url, headers, _, _ = self._api.param_serialize(
                method=method,
                resource_path=path,
                header_params=headers,
                auth_settings=["BearerToken"],
            )
            if query_list:
                url += "?" + urlencode(query_list)
            response = self._api.call_api(
                method, url, header_params=headers, body=body, _request_timeout=self.timeout
            )
            data = response.read()
        except ApiException as exc:  # raised for TLS failures, status 0
            raise Retryable(f"{verb} {path}: {exc.reason}"[:500], exc.status or 0) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Retryable(f"{verb} {path}: {type(exc).__name__}: {exc}"[:500]) from exc
        status = int(response.status)
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise classify(status, _message(data), f"{verb} {path}", _retry_after(response.headers))
        if not data:
            return {}
        decoded: dict[str, Any] = json.loads(data)
        return decoded


LEASE_API_VERSION = "coordination.k8s.io/v1"


def _lease_path(namespace: str, name: str | None) -> str:
    path = f"/apis/{LEASE_API_VERSION}/namespaces/{quote(namespace, safe='')}/leases"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def matches(desired: Any, live: Any) -> bool:
    """Whether `live` holds everything `desired` says: a subset comparison that ignores fields the
    server adds (defaults, uid, status) and compares quantities by value ("1024Mi" == "1Gi")."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(
            _empty(value) if key not in live else matches(value, live[key])
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(matches(a, b) for a, b in zip(desired, live, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live  # True == 1 in Python, not in a manifest
    if desired == live:
        return True
    if isinstance(desired, str | int) and isinstance(live, str | int):
        try:
            same = parse_quantity(desired) == parse_quantity(live)  # type: ignore[no-untyped-call]
            return bool(same)
        except ValueError:
            return False
    return False


def _empty(value: Any) -> bool:
    # The server leaves empty strings, maps and lists out of what it returns.
    return value is None or value == "" or value == {} or value == []


def _message(data: bytes | None) -> str:
    """The `message` of a Kubernetes Status body, or the start of whatever came back."""
    if not data:
        return ""
    try:
        status = json.loads(data)
    except ValueError:
        return data[:200].decode(errors="replace")
    if isinstance(status, dict):
        return str(status.get("message") or status.get("reason") or "")
    return ""


def _api_client(configuration: Any, pool_size: int) -> Any:
    # No urllib3 retries: the reconciler owns retrying (with backoff) and counts every call.
    configuration.retries = False
    configuration.connection_pool_maxsize = max(pool_size, 1)
    return client.ApiClient(configuration)
