"""ORM models and the column types they share (timezone-aware UTC timestamps on every backend)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from orchestrator.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns aware UTC datetimes, also on SQLite (which drops tzinfo).

    Naive datetimes are refused on the way in: their meaning would depend on the host clock.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: use an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class InstanceInfo(Base):
    """The one row describing this installation; written by the first migration."""

    __tablename__ = "instance_info"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    install_id: Mapped[str] = mapped_column(String(36), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str] = mapped_column(Text, default="")


# --- identity and access -------------------------------------------------------------------------


class Role(StrEnum):
    """Platform roles. "Project lead" is a role inside a project, not here."""

    RESEARCHER = "researcher"
    DATA_STEWARD = "data_steward"
    OUTPUT_CHECKER = "output_checker"
    OPS = "ops"


STAFF_ROLES = frozenset({Role.DATA_STEWARD, Role.OUTPUT_CHECKER, Role.OPS})


class UserStatus(StrEnum):
    PENDING = "pending"  # created, activation link not used yet
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class TokenState(StrEnum):
    IN_STOCK = "in_stock"
    ON_LOAN = "on_loan"
    RETURNED = "returned"
    LOST = "lost"
    REVOKED = "revoked"


class TokenKind(StrEnum):
    HARDWARE = "hardware"
    SOFTWARE = "software"


class Institution(Base):
    """An organisation whose researchers may be authorised (at most 3 years at a time)."""

    __tablename__ = "institution"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    country: Mapped[str] = mapped_column(String(2))  # ISO 3166-1 alpha-2, upper case
    authorised_from: Mapped[date] = mapped_column(Date)
    authorised_until: Mapped[date] = mapped_column(Date)
    # CIDRs from which its researchers may log in; empty means anywhere.
    allowed_networks: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    users: Mapped[list[User]] = relationship(back_populates="institution")


class User(Base):
    """An account: a researcher of an institution, or staff of the data holder."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # normalised: NFKC, lower
    email: Mapped[str] = mapped_column(String(254))
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20))
    status: Mapped[UserStatus] = mapped_column(
        Enum(UserStatus, native_enum=False, length=20), default=UserStatus.PENDING
    )
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institution.id"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    statement_signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    statement_valid_until: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    institution: Mapped[Institution | None] = relationship(back_populates="users")
    tokens: Mapped[list[TotpToken]] = relationship(back_populates="user")

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES


class TotpToken(Base):
    """A TOTP token (hardware on loan, or software when enabled); the seed is encrypted at rest."""

    __tablename__ = "totp_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[TokenKind] = mapped_column(Enum(TokenKind, native_enum=False, length=20))
    algorithm: Mapped[str] = mapped_column(String(10), default="SHA1")  # SHA1 | SHA256 | SHA512
    digits: Mapped[int] = mapped_column(Integer, default=6)
    period: Mapped[int] = mapped_column(Integer, default=30)
    seed_encrypted: Mapped[str] = mapped_column(Text)  # Fernet token of the raw seed bytes
    state: Mapped[TokenState] = mapped_column(
        Enum(TokenState, native_enum=False, length=20), default=TokenState.IN_STOCK
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"), index=True)
    # The last accepted time step: a code for this step or an earlier one is never accepted again.
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(255), default="")  # e.g. the PSKC file it came from
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    loaned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User | None] = relationship(back_populates="tokens")


class UserSession(Base):
    """A server-side login session; the cookie carries a secret whose SHA-256 is stored here."""

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the absolute timeout
    stepped_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(45), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")

    user: Mapped[User] = relationship()


class ApiToken(Base):
    """A scoped, expiring token for automation; shown once, stored hashed, found by prefix."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class ActivationLink(Base):
    """A one-time link to set a password (new account, or a reset by staff)."""

    __tablename__ = "activation_link"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginAttempt(Base):
    """Each login attempt, for throttling per account and per source address."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_username_at", "username", "at"),
        Index("ix_login_attempt_source_at", "source", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))  # normalised, as submitted
    source: Mapped[str] = mapped_column(String(45))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    success: Mapped[bool] = mapped_column(Boolean)


class AuditHead(Base):
    """The single row holding the chain's tip; updating it first serialises appends."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditEvent(Base):
    """Append-only, hash-chained record of security-relevant events (database triggers refuse
    UPDATE and DELETE)."""

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None] = mapped_column(Integer)  # no FK: rows outlive accounts
    actor: Mapped[str] = mapped_column(String(64))  # username at the time, or "system"
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(40), default="")
    object_id: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(45), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


# --- research projects, catalogue, costs, notifications ----------------------------------------

Money = Numeric(12, 2)  # amounts in the tariff's currency; Decimal in Python, never float


class ProjectState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    REJECTED = "rejected"
    QUOTED = "quoted"
    ACCEPTED = "accepted"  # the lead accepted the quote
    APPROVED = "approved"  # a data steward approved; becomes active on its start date
    ACTIVE = "active"
    FROZEN = "frozen"
    EXPIRED = "expired"
    ARCHIVED = "archived"
    DELETED = "deleted"


class MemberRole(StrEnum):
    LEAD = "lead"
    RESEARCHER = "researcher"


class RequestKind(StrEnum):
    ADD_MEMBER = "add_member"
    REMOVE_MEMBER = "remove_member"
    ADD_DATASET = "add_dataset"
    EXTENSION = "extension"


class RequestState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class ChargeKind(StrEnum):
    ADD_RESEARCHER = "add_researcher"
    ADD_DATASET = "add_dataset"
    EXTENSION = "extension"


class Dataset(Base):
    """A catalogue entry; its topic is the unit of pricing. Metadata only, never data."""

    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)  # upper case, e.g. GBAPERSOONTAB
    title: Mapped[str] = mapped_column(String(200))
    topic: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.id"
    )


class DatasetVersion(Base):
    """One release of a dataset under the microdata root; its files are what a grant mounts."""

    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("dataset_id", "label", name="dataset_label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id"), index=True)
    label: Mapped[str] = mapped_column(String(40))  # e.g. "2024V1"
    location: Mapped[str] = mapped_column(String(400))  # relative to the microdata root
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # [{"path": "a/b.csv", "size": 123, "sha256": "..."}] as captured by `kluis catalogue scan`
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    available_from: Mapped[date] = mapped_column(Date)
    available_until: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class Tariff(Base):
    """A versioned price list; a project is quoted and invoiced with the tariff valid at
    application time."""

    __tablename__ = "tariff"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40), unique=True)  # e.g. "2026"
    valid_from: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    base_fee: Mapped[Decimal] = mapped_column(Money)  # once per project
    per_researcher_month: Mapped[Decimal] = mapped_column(Money)
    per_topic_month: Mapped[Decimal] = mapped_column(Money)
    fee_add_researcher: Mapped[Decimal] = mapped_column(Money)
    fee_add_dataset: Mapped[Decimal] = mapped_column(Money)
    fee_extension: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Project(Base):
    """A research project: the unit of contract, data access, cost, workspace and end date."""

    __tablename__ = "project"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(5), unique=True)  # 4-5 digits
    title: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(Text)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institution.id"), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    compute_size: Mapped[str] = mapped_column(String(20))  # a key of Settings.compute_sizes
    legal_basis: Mapped[str] = mapped_column(Text, default="")
    expected_publications: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[ProjectState] = mapped_column(
        Enum(ProjectState, native_enum=False, length=20), default=ProjectState.DRAFT, index=True
    )
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    review_comments: Mapped[str] = mapped_column(Text, default="")
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariff.id"))
    quote_total: Mapped[Decimal | None] = mapped_column(Money)
    quote_lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    quoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quote_accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Independent approvals an airlock output request needs (set by a data steward; issue 7).
    airlock_approvals: Mapped[int] = mapped_column(Integer, default=2, server_default="2")
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    institution: Mapped[Institution] = relationship()
    lead: Mapped[User] = relationship(foreign_keys=[lead_id])
    tariff: Mapped[Tariff | None] = relationship()
    members: Mapped[list[ProjectMember]] = relationship(back_populates="project")
    requested_datasets: Mapped[list[RequestedDataset]] = relationship(back_populates="project")
    grants: Mapped[list[Grant]] = relationship(back_populates="project")


class ProjectMember(Base):
    """Membership with its history: a row per period (added_at .. removed_at)."""

    __tablename__ = "project_member"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    role: Mapped[MemberRole] = mapped_column(Enum(MemberRole, native_enum=False, length=20))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    project: Mapped[Project] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class RequestedDataset(Base):
    """A dataset version asked for in the application; approval turns it into a grant."""

    __tablename__ = "requested_dataset"
    __table_args__ = (UniqueConstraint("project_id", "dataset_version_id", name="project_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_version.id"))

    project: Mapped[Project] = relationship(back_populates="requested_datasets")
    dataset_version: Mapped[DatasetVersion] = relationship()


class Grant(Base):
    """Access of a project to one dataset version; only unrevoked grants are mounted."""

    __tablename__ = "dataset_grant"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_version.id"), index=True)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    project: Mapped[Project] = relationship(back_populates="grants")
    dataset_version: Mapped[DatasetVersion] = relationship()


class ChangeRequest(Base):
    """A lead's request (member in/out, extra dataset, extension) that a data steward decides."""

    __tablename__ = "change_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    kind: Mapped[RequestKind] = mapped_column(Enum(RequestKind, native_enum=False, length=20))
    state: Mapped[RequestState] = mapped_column(
        Enum(RequestState, native_enum=False, length=20), default=RequestState.PENDING, index=True
    )
    # kind-specific: {"user_id": 7} | {"dataset_version_id": 3} | {"new_end_date": "2027-06-30"}
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(Text, default="")
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_comment: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    project: Mapped[Project] = relationship()


class Charge(Base):
    """A one-off fee (extra researcher, extra dataset, extension), invoiced in its quarter."""

    __tablename__ = "charge"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    kind: Mapped[ChargeKind] = mapped_column(Enum(ChargeKind, native_enum=False, length=20))
    amount: Mapped[Decimal] = mapped_column(Money)
    incurred_on: Mapped[date] = mapped_column(Date)
    change_request_id: Mapped[int | None] = mapped_column(ForeignKey("change_request.id"))
    description: Mapped[str] = mapped_column(String(200), default="")


class DeletionRecord(Base):
    """What remains of a deleted project: proof of what was deleted, when and by whom."""

    __tablename__ = "deletion_record"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(Integer, index=True)  # no FK: the record outlives it
    project_code: Mapped[str] = mapped_column(String(5))
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_by: Mapped[str] = mapped_column(String(64))  # username or "system"
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the maximum number of attempts; kept for staff to see


class OutboxMessage(Base):
    """An e-mail written in the transaction of the change it reports; sent after commit,
    retried with backoff, never lost. `dedupe_key` makes reminders idempotent."""

    __tablename__ = "outbox_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[OutboxStatus] = mapped_column(
        Enum(OutboxStatus, native_enum=False, length=20), default=OutboxStatus.PENDING, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(String(500), default="")


# --- workspaces (observed state) -----------------------------------------------------------------


class WorkspacePhase(StrEnum):
    PENDING = "pending"  # not reconciled yet
    READY = "ready"  # the cluster holds exactly the desired objects
    PROGRESSING = "progressing"  # converging (or tearing down); looked at again soon
    BLOCKED = "blocked"  # cannot converge without help; `reason` says why
    TORN_DOWN = "torn_down"  # the namespace is gone (GET answered 404)


class WorkspaceStatus(Base):
    """What the reconciler last saw of a project's workspace; written only by the reconciler.

    `desired_hash` is the SHA-256 of the canonical desired object set last converged: an equal hash
    and no resync due means there is nothing to do (zero API calls)."""

    __tablename__ = "workspace_status"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), unique=True)
    phase: Mapped[WorkspacePhase] = mapped_column(
        Enum(WorkspacePhase, native_enum=False, length=20), default=WorkspacePhase.PENDING
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    desired_hash: Mapped[str] = mapped_column(String(64), default="")
    # [{"kind": "NetworkPolicy", "namespace": "p-1234", "name": "deny-all"}, ...] as applied
    objects: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    last_reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # consecutive retryable failures
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship()


# --- lifecycle: archives and deletion certificates -----------------------------------------------

# The reconciler's wake-up query (`reconciler.changed_project_ids`) asks for projects changed since
# its last look, every second.
Index("ix_project_updated_at", Project.updated_at)


class ProjectArchive(Base):
    """A verified archive of an archived project's storage folder: one tar in the archive area
    with a checksum manifest beside it. Written only by the reconciler (`archive.py`);
    `removed_at` is set when the project is deleted and the archive goes."""

    __tablename__ = "project_archive"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), unique=True)
    project_code: Mapped[str] = mapped_column(String(5))
    path: Mapped[str] = mapped_column(String(1000))  # the tar file
    manifest_path: Mapped[str] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64))  # of the tar file
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)  # of the tar file
    content_bytes: Mapped[int] = mapped_column(BigInteger)  # sum of the archived files' sizes
    file_count: Mapped[int] = mapped_column(Integer)
    source_path: Mapped[str] = mapped_column(String(1000))  # the live folder it was packed from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeletionCertificate(Base):
    """Proof that a deleted project's data is gone: what was removed (paths, the archive's hash,
    file count, sizes), when, under which retention policy and by which process. Outlives
    everything else of the project (no foreign key); `sha256` covers the canonical content."""

    __tablename__ = "deletion_certificate"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(Integer, unique=True)
    project_code: Mapped[str] = mapped_column(String(5), index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_by: Mapped[str] = mapped_column(String(200))  # the process, e.g. "reconciler host:pid"
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    removed: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sha256: Mapped[str] = mapped_column(String(64))


# Tables that live in their own modules register themselves on Base.metadata here, so that importing
# `orchestrator.models` always yields the whole schema (migrations, tests, mapper configuration).
from orchestrator import airlock_models, hub_models  # noqa: E402, F401
