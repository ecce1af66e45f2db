"""Settings: one pydantic-settings class read from `KLUIS_*` variables and a secrets directory.

Nothing here runs at import; the entry point calls `load_settings()` and passes the result down.
"""

from __future__ import annotations

import ipaddress
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_KEY_LENGTH = 32
# Used only in development/test when no key is set: never valid in production.
DEVELOPMENT_SECRET_KEY = "kluis-development-only-insecure-key-do-not-use"  # noqa: S105

# EU/EEA members plus countries with an EU adequacy decision (GDPR art. 45), ISO 3166-1 alpha-2.
ADEQUATE_COUNTRIES = [
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
    "IS",
    "LI",
    "NO",
    "AD",
    "AR",
    "CA",
    "CH",
    "FO",
    "GB",
    "GG",
    "IL",
    "IM",
    "JE",
    "JP",
    "KR",
    "NZ",
    "UY",
]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class ComputeSize(BaseModel):
    """What a named compute size gives a project's workspace namespace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: str
    memory: str
    storage: str


class StorageBackend(StrEnum):
    HOST_PATH = "hostPath"  # development only: refused in production
    NFS = "nfs"
    CSI = "csi"


class Settings(BaseSettings):
    """Everything Kluis can be configured with. Unsafe production settings fail validation."""

    # Errors never echo input: a rejected value may be a secret.
    model_config = SettingsConfigDict(
        env_prefix="KLUIS_", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".kluis")
    database_url: str | None = None
    secret_key: SecretStr = SecretStr("")
    log_format: LogFormat = LogFormat.AUTO
    log_level: LogLevel = LogLevel.INFO
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    cluster_dir: Path | None = None
    public_url: str | None = None
    allow_sqlite_in_production: bool = False

    # --- identity and access (defaults follow SPEC.md and OWASP ASVS level 2) ---
    adequate_countries: list[str] = Field(default_factory=lambda: list(ADEQUATE_COUNTRIES))
    max_authorisation_years: Annotated[int, Field(ge=1, le=10)] = 3
    trusted_proxies: list[str] = Field(default_factory=list)  # CIDRs whose X-Forwarded-For counts
    seed_encryption_key: SecretStr | None = None  # default: derived from secret_key
    totp_drift_steps: Annotated[int, Field(ge=0, le=2)] = 1  # also accept this many steps back
    software_tokens_enabled: bool = False
    session_idle_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    session_absolute_hours: Annotated[int, Field(ge=1, le=24 * 7)] = 12
    stepup_max_age_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    cookie_secure: bool = True  # off only for local http development
    login_failures_per_account_hour: Annotated[int, Field(ge=5, le=100)] = 100
    login_failures_per_source_hour: Annotated[int, Field(ge=5, le=10000)] = 300
    activation_link_hours: Annotated[int, Field(ge=1, le=24 * 14)] = 72
    api_token_max_days: Annotated[int, Field(ge=1, le=3650)] = 365

    # --- projects, costs, expiry, notifications ---
    # Named compute sizes -> the workspace namespace's quota (Kubernetes quantities).
    compute_sizes: dict[str, ComputeSize] = Field(
        default_factory=lambda: {
            "small": ComputeSize(cpu="2", memory="8Gi", storage="50Gi"),
            "medium": ComputeSize(cpu="4", memory="32Gi", storage="200Gi"),
            "large": ComputeSize(cpu="16", memory="128Gi", storage="1Ti"),
        }
    )
    # Where dataset versions live (read-only) and where project folders are made; the control
    # plane has both mounted. Defaults under the data folder for development.
    microdata_root: Path | None = None
    project_storage_root: Path | None = None
    project_grace_days: Annotated[int, Field(ge=0, le=365)] = 30  # expired -> archived
    project_retention_years: Annotated[int, Field(ge=1, le=30)] = 5  # archived -> deleted
    # Where the reconciler packs an archived project's storage (a tar and its checksum manifest);
    # the control plane has it mounted. Default under the data folder for development.
    archive_root: Path | None = None
    reminder_days: list[int] = Field(default_factory=lambda: [30, 14, 7])
    max_project_years: Annotated[int, Field(ge=1, le=10)] = 5
    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    mail_from: str = "kluis@localhost"
    outbox_max_attempts: Annotated[int, Field(ge=1, le=100)] = 12

    # --- workspaces ---
    # How workspaces reach the microdata root and the project storage root. hostPath uses the two
    # roots above as node paths; nfs and csi use the paths below as the roots on the server.
    storage_backend: StorageBackend = StorageBackend.HOST_PATH
    storage_nfs_server: str | None = None
    storage_microdata_path: str = "/microdata"
    storage_projects_path: str = "/projects"
    storage_csi_driver: str | None = None
    # `{path}` is the folder under one of the roots, e.g. "/projects/12345/workspace".
    storage_csi_volume_handle: str = "{path}"
    hub_namespace: str = "kluis"
    hub_service_account: str = "hub"
    hub_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "kluis",
            "app.kubernetes.io/component": "hub",
        }
    )
    proxy_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "kluis",
            "app.kubernetes.io/component": "proxy",
        }
    )
    workspace_server_port: Annotated[int, Field(ge=1, le=65535)] = 8888
    hub_api_port: Annotated[int, Field(ge=1, le=65535)] = 8081
    pod_security_version: str = "v1.36"

    # --- JupyterHub integration (docs/hub.md) ---
    # Where browsers reach the hub (the proxy's public URL) and where the control plane reaches
    # the hub's REST API (admin token below) to stop servers.
    hub_public_url: str = "http://127.0.0.1:8001"
    hub_api_url: str = "http://127.0.0.1:8001/hub/api"
    # The hub authenticates to the control plane with this token (redeem tickets, spawn specs).
    hub_service_token: SecretStr = SecretStr("")
    # The control plane's admin token for the hub's REST API (stop servers, list servers).
    hub_api_token: SecretStr = SecretStr("")
    launch_ticket_seconds: Annotated[int, Field(ge=5, le=600)] = 60
    # Images a server may run; the first is the default, a user may choose among them only.
    workspace_images: list[str] = Field(
        default_factory=lambda: ["quay.io/jupyter/scipy-notebook:2026-11-24"]
    )
    workspace_uid: Annotated[int, Field(ge=1, le=2**31 - 1)] = 1000
    workspace_gid: Annotated[int, Field(ge=1, le=2**31 - 1)] = 100
    # How often `kluis hub sync` stops servers whose access lapsed: the revocation bound.
    hub_sync_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0

    # --- reconciler ---
    kubeconfig: Path | None = None  # default: in-cluster config, else the local dev cluster's
    reconcile_interval_seconds: Annotated[float, Field(gt=0, le=24 * 3600)] = 300.0  # full resync
    reconcile_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    # Objects of one workspace applied at once (in dependency waves); 1: one after the other.
    reconcile_apply_parallelism: Annotated[int, Field(ge=1, le=32)] = 4
    field_manager: str = "kluis-reconciler"
    # How often the loop looks for projects changed since its last look (one query, no API calls).
    reconcile_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Leader election: only the holder of this Lease reconciles; the others stand by.
    leader_election: bool = True
    leader_election_namespace: str = "kube-system"  # the release namespace in Helm
    leader_election_lease_name: str = "kluis-reconciler"
    leader_election_lease_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    leader_election_renew_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    leader_election_identity: str | None = None  # default: host name and process id
    # /metrics, /healthz and /readyz of `kluis reconcile`; port 0 picks a free one, None: off.
    reconcile_metrics_host: str = "127.0.0.1"
    reconcile_metrics_port: Annotated[int | None, Field(ge=0, le=65535)] = 9464

    # --- airlock (ingress uploads, egress output requests) ---
    airlock_dir: Path | None = None  # quarantine and frozen outputs; default <data_dir>/airlock
    clamd_socket: Path = Path("/run/clamav/clamd.ctl")  # clamd's unix socket (LocalSocket)
    # An existing clamd over TCP, "host:port" ("[v6]:port"); when set, used instead of the socket.
    clamd_address: str | None = None
    clamd_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    airlock_max_upload_bytes: Annotated[int, Field(ge=1)] = 2 * 1024**3
    airlock_max_open_uploads: Annotated[int, Field(ge=1, le=10000)] = 20  # per project, in review
    airlock_max_expanded_bytes: Annotated[int, Field(ge=1)] = 8 * 1024**3  # archives, in total
    airlock_max_expansion_ratio: Annotated[int, Field(ge=1, le=100000)] = 100
    airlock_max_archive_entries: Annotated[int, Field(ge=1, le=1000000)] = 10000
    airlock_retention_days: Annotated[int, Field(ge=0, le=3650)] = 30  # rejected/blocked bytes
    airlock_policy_file: Path | None = None  # disclosure policy (YAML); default: built in
    airlock_max_output_files: Annotated[int, Field(ge=1, le=1000)] = 50
    airlock_max_output_bytes: Annotated[int, Field(ge=1)] = 512 * 1024**2  # per request
    # Ed25519 private key (raw 32 bytes, base64) signing release manifests; default: a key made
    # once in <airlock_dir>/signing-key.
    airlock_signing_key: SecretStr | None = None

    @field_validator(
        "data_dir", "cluster_dir", "microdata_root", "project_storage_root", "archive_root"
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Resolve against the working directory at start-up so a later chdir changes nothing.
        return None if value is None else value.expanduser().resolve()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("public_url", "hub_public_url", "hub_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("clamd_address", mode="before")
    @classmethod
    def _host_port(cls, value: object) -> object:
        if value == "":
            return None  # an empty variable means unset: the unix socket
        if isinstance(value, str):
            split_host_port(value)  # a clear error at start-up, not at the first upload
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Self:
        problems = self.unsafe_reasons()
        if problems:
            raise ValueError("unsafe configuration: " + "; ".join(problems))
        return self

    def unsafe_reasons(self) -> list[str]:
        """Why this configuration must not start; empty when it may."""
        if self.environment is not Environment.PRODUCTION:
            return []
        problems = []
        if len(self.secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            problems.append(
                f"KLUIS_SECRET_KEY must have at least {MIN_SECRET_KEY_LENGTH} characters "
                "in production"
            )
        if not self.cookie_secure:
            problems.append("KLUIS_COOKIE_SECURE=false is refused in production")
        for name in ("hub_service_token", "hub_api_token"):
            value = getattr(self, name).get_secret_value()
            if value and len(value) < MIN_SECRET_KEY_LENGTH:
                problems.append(
                    f"KLUIS_{name.upper()} must have at least {MIN_SECRET_KEY_LENGTH} characters"
                )
        if self.storage_backend is StorageBackend.HOST_PATH:
            problems.append(
                "KLUIS_STORAGE_BACKEND=hostPath is for development only and refused in "
                "production: use nfs or csi"
            )
        if self.is_sqlite and not self.allow_sqlite_in_production:
            problems.append(
                "SQLite is refused in production: set KLUIS_DATABASE_URL to PostgreSQL "
                "(or KLUIS_ALLOW_SQLITE_IN_PRODUCTION=true for a single-node trial)"
            )
        return problems

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file `<data_dir>/kluis.db`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'kluis.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_secret_key(self) -> str:
        """The secret key; outside production a fixed development key when none is set."""
        key = self.secret_key.get_secret_value()
        if key:
            return key
        if self.environment is Environment.PRODUCTION:
            raise ValueError("KLUIS_SECRET_KEY is required in production")
        return DEVELOPMENT_SECRET_KEY

    @property
    def effective_microdata_root(self) -> Path:
        return self.microdata_root or self.data_dir / "microdata"

    @property
    def effective_project_storage_root(self) -> Path:
        return self.project_storage_root or self.data_dir / "projects"

    @property
    def effective_archive_root(self) -> Path:
        return self.archive_root or self.data_dir / "archive"

    @property
    def effective_airlock_dir(self) -> Path:
        return self.airlock_dir or self.data_dir / "airlock"

    @property
    def clamd_endpoint(self) -> Path | tuple[str, int]:
        """Where clamd listens: `(host, port)` when KLUIS_CLAMD_ADDRESS is set, else the socket."""
        if self.clamd_address:
            return split_host_port(self.clamd_address)
        return self.clamd_socket

    @property
    def effective_cluster_dir(self) -> Path:
        return self.cluster_dir or self.data_dir / "cluster"

    @property
    def effective_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def split_host_port(value: str) -> tuple[str, int]:
    """`host:port` (a DNS name or IPv4 address) or `[IPv6]:port` as (host, port).

    Raises ValueError (naming the expected form, never echoing the value) for anything else."""
    form = 'must be "host:port" (e.g. "clamd.antivirus.svc:3310" or "[fd00::5]:3310")'
    host, sep, port = value.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(form + " with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(form + ": the bracketed host is not an IPv6 address") from None
        return host[1:-1], int(port)
    name = host.removesuffix(".")  # a fully qualified name may end in a dot
    if not 1 <= len(name) <= 253 or not all(_DNS_LABEL.match(part) for part in name.split(".")):
        raise ValueError(form + ": the host is not a DNS name or an IPv4 address")
    return host, int(port)


def load_settings() -> Settings:
    """Build settings from the environment and, if `KLUIS_SECRETS_DIR` is set, from its files.

    A file in the secrets directory is named like the variable (`kluis_secret_key`, any case).
    Raises `pydantic.ValidationError` for invalid or unsafe configuration.
    """
    secrets_dir = os.environ.get("KLUIS_SECRETS_DIR")
    if not secrets_dir:
        return Settings()
    path = Path(secrets_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"KLUIS_SECRETS_DIR={secrets_dir} is not a directory")
    return Settings(_secrets_dir=path)
