"""The reconciler's own RBAC: a ClusterRole granting exactly the calls it makes and no more, a
binding to its service account, and a namespaced Role for its leader-election Lease.

Pure builders returning plain dicts. The Helm chart (a later issue) renders these same rules, so
this module is the single statement of what the reconciler may do; tests run the reconciler under
a service account bound to exactly this role (tests/cluster/test_reconciler_rbac.py).

Why each rule is there:

- cluster-scoped `namespaces` and `persistentvolumes`: the reconciler creates, resyncs, prunes and
  tears down project namespaces and the project's Retain volumes. Server-side apply is a PATCH
  that may create, so both `patch` and `create` are needed.
- the namespaced kinds of a workspace (quota, limit range, network policies, service account,
  hub Role and RoleBinding, claims): applied, listed by label and deleted in project namespaces.
  There is no namespace-scoped way to grant "every project namespace", hence a ClusterRole.
- RBAC escalation prevention: the API server only lets a subject create a Role (or bind one)
  whose rules it holds itself. The hub Role in `manifests.make_hub_role` grants verbs on pods,
  services, events and claims, so the reconciler must hold exactly those verbs too.
- `pods` `list` and `delete` (within the hub's grants above): the reconciler stops workspace
  servers (label `kluis.io/kind: server`) when a project is frozen or ends.
- `coordination.k8s.io` leases: only in the reconciler's own namespace (a Role, not cluster-wide).

Never here: wildcards, `escalate`, `bind`, `impersonate`, secrets, pods/exec, cluster roles.
"""

from __future__ import annotations

from typing import Any

from orchestrator import names

Manifest = dict[str, Any]

RBAC_API = "rbac.authorization.k8s.io/v1"
RECONCILER_ROLE_NAME = "kluis-reconciler"
LEASE_ROLE_NAME = "kluis-reconciler-lease"

# What the reconciler does with the objects it owns: apply (create or patch), read, list by
# label, delete. Cluster-scoped kinds also get `watch` (namespace teardown waits on them).
_CLUSTER_OWNED = ["create", "delete", "get", "list", "patch", "watch"]
_NAMESPACED_OWNED = ["create", "delete", "get", "list", "patch"]

# The hub Role's grants (manifests.make_hub_role), held so that creating that Role is allowed.
_HUB_READ = ["get", "list", "watch"]
_HUB_MANAGE = ["create", "delete", "get", "list", "patch", "watch"]


def _labels() -> dict[str, str]:
    return {**names.MANAGED_LABELS, names.COMPONENT_LABEL: "reconciler"}


def _rule(group: str, resources: list[str], verbs: list[str]) -> dict[str, list[str]]:
    return {"apiGroups": [group], "resources": resources, "verbs": sorted(verbs)}


def _merged(verbs: list[str], *more: list[str]) -> list[str]:
    return sorted(set(verbs).union(*more))


def make_reconciler_cluster_role(name: str = RECONCILER_ROLE_NAME) -> Manifest:
    """The ClusterRole the reconciler runs under: exactly the calls of `orchestrator.kube` on the
    kinds of `manifests.make_workspace`, plus the hub Role's own grants (escalation prevention)."""
    rules = [
        _rule("", ["namespaces", "persistentvolumes"], _CLUSTER_OWNED),
        _rule(
            "",
            ["limitranges", "resourcequotas", "serviceaccounts"],
            _NAMESPACED_OWNED,
        ),
        # Claims: owned by the reconciler and read by the hub.
        _rule("", ["persistentvolumeclaims"], _merged(_NAMESPACED_OWNED, _HUB_READ)),
        _rule("networking.k8s.io", ["networkpolicies"], _NAMESPACED_OWNED),
        _rule("rbac.authorization.k8s.io", ["rolebindings", "roles"], _NAMESPACED_OWNED),
        # Held because the hub Role grants them; of these the reconciler itself only lists and
        # deletes server pods (frozen and ended projects).
        _rule("", ["events"], _HUB_READ),
        _rule("", ["pods", "services"], _HUB_MANAGE),
    ]
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _labels()},
        "rules": rules,
    }


def make_reconciler_cluster_role_binding(
    sa_name: str, sa_namespace: str, role_name: str = RECONCILER_ROLE_NAME
) -> Manifest:
    """Binds the reconciler ClusterRole to the reconciler's service account."""
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name, "labels": _labels()},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role_name,
        },
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
    }


def make_reconciler_lease_role(namespace: str, name: str = LEASE_ROLE_NAME) -> Manifest:
    """Leader election: get, create and renew (update) Leases in the reconciler's namespace only."""
    return {
        "apiVersion": RBAC_API,
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
        "rules": [_rule("coordination.k8s.io", ["leases"], ["create", "get", "update"])],
    }


def make_reconciler_lease_role_binding(
    sa_name: str, namespace: str, name: str = LEASE_ROLE_NAME
) -> Manifest:
    """Binds the lease Role to the reconciler's service account (same namespace)."""
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": namespace}],
    }
