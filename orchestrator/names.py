"""Names and labels of every Kubernetes object Kluis owns: one function makes the names, so they
are valid DNS-1123 labels and never collide, and one place says which labels mark Kluis's objects.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

# RFC 1123 label as Kubernetes checks it (k8s.io/apimachinery validation.IsDNS1123Label).
MAX_NAME_LENGTH = 63
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HASH_LENGTH = 10  # hex digits: 40 bits, so accidental collisions need ~10^6 names in one scope
_NOT_ALLOWED = re.compile(r"[^a-z0-9-]+")
_DASHES = re.compile(r"-{2,}")
_PLAIN_CODE = re.compile(r"^[a-z0-9]{1,40}$")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
PROJECT_LABEL = "kluis.io/project"
KIND_LABEL = "kluis.io/kind"
DATASET_VERSION_LABEL = "kluis.io/dataset-version"
# On every object the reconciler applies; with `kluis.io/project` it finds what it owns.
MANAGED_LABELS: dict[str, str] = {
    MANAGED_BY_LABEL: "kluis",
    PART_OF_LABEL: "kluis",
    COMPONENT_LABEL: "workspace",
}
# What a workspace server pod (started by the hub) carries; the NetworkPolicies open the server
# port to pods with these labels only, so any other pod in the namespace stays fully isolated.
SERVER_POD_LABELS: dict[str, str] = {KIND_LABEL: "server"}

_PROJECT_PREFIX = "kluis-p"


def object_name(*parts: str) -> str:
    """A DNS-1123 label (at most 63 characters) for `parts`, always ending in a hash of them.

    The readable body is the parts joined by '-', NFKC-normalised, lower-cased, with every run of
    other characters made one '-' and cut to fit. The suffix hashes the exact parts (not the body),
    so inputs that normalise or truncate alike ('Ab_c' and 'ab-c', look-alike letters, long
    names sharing a prefix) still get different names. Deterministic across processes.
    """
    if not parts:
        raise ValueError("object_name needs at least one part")
    digest = hashlib.sha256(json.dumps(list(parts), ensure_ascii=True).encode()).hexdigest()
    suffix = digest[:HASH_LENGTH]
    body = unicodedata.normalize("NFKC", "-".join(parts)).lower()
    body = _DASHES.sub("-", _NOT_ALLOWED.sub("-", body))
    body = body[: MAX_NAME_LENGTH - HASH_LENGTH - 1].strip("-")
    return f"{body}-{suffix}" if body else suffix


def namespace_name(project_code: str) -> str:
    """`kluis-p-<code>` for a plain code (project codes are digits); any other code goes through
    `object_name`, whose names always contain a further dash and so never equal a plain one."""
    if _PLAIN_CODE.fullmatch(project_code):
        return f"{_PROJECT_PREFIX}-{project_code}"
    return object_name(_PROJECT_PREFIX, project_code)


# --- claims (namespaced: unique within the project's namespace) ---------------------------------


def dataset_claim_name(dataset_code: str, label: str, version_id: int) -> str:
    return object_name("ds", dataset_code, label, str(version_id))


def storage_claim_name(area: str) -> str:
    """The claim of a project storage area: `workspace`, `import` or `export`."""
    return object_name("storage", area)


def home_claim_name(username: str) -> str:
    return object_name("home", username)


# --- volumes (cluster-scoped: the project is part of every name) --------------------------------


def dataset_volume_name(project_code: str, dataset_code: str, label: str, version_id: int) -> str:
    return object_name("kluis", project_code, "ds", dataset_code, label, str(version_id))


def storage_volume_name(project_code: str, area: str) -> str:
    return object_name("kluis", project_code, "storage", area)


def home_volume_name(project_code: str, username: str) -> str:
    return object_name("kluis", project_code, "home", username)


# --- labels ---------------------------------------------------------------------------------------


def project_labels(project_code: str, kind: str) -> dict[str, str]:
    """The labels of one of the project's objects; `kind` says its role (`dataset-volume`, …)."""
    return {**MANAGED_LABELS, PROJECT_LABEL: project_code, KIND_LABEL: kind}


def project_selector(project_code: str) -> str:
    """Label selector (for list calls) matching every object Kluis owns for the project."""
    pairs = {**MANAGED_LABELS, PROJECT_LABEL: project_code}
    return ",".join(f"{key}={value}" for key, value in sorted(pairs.items()))


def managed_selector() -> str:
    """Label selector matching every object Kluis owns, of every project."""
    return ",".join(f"{key}={value}" for key, value in sorted(MANAGED_LABELS.items()))
