"""Tables of the airlock (ingress uploads, egress output requests).

Imported by `orchestrator.models`. States are explicit (`UploadState`, `OutputState`); which step
leads from which state is the table in `airlock.py` / `airlock_egress.py`, never an ad-hoc update.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, Boolean, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orchestrator.db import Base

# `models` imports this module at its end, after these names exist.
from orchestrator.models import UTCDateTime, utcnow

if TYPE_CHECKING:
    from orchestrator.models import Project, User


class UploadState(StrEnum):
    """received → pending_review (checks passed) | blocked (a check failed; fail-closed);
    pending_review → approved (placed in `import/`) | rejected; blocked | rejected → purged
    (the quarantined bytes deleted after the retention period; the row stays as the record)."""

    PENDING_REVIEW = "pending_review"
    BLOCKED = "blocked"
    APPROVED = "approved"
    REJECTED = "rejected"
    PURGED = "purged"


class OutputState(StrEnum):
    """draft → submitted (frozen) → checked (automated checks done) → in_review (a first
    approval) → approved → released; returned (comments; resubmitting makes a new version),
    rejected, withdrawn (by the submitter before a decision)."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    CHECKED = "checked"
    IN_REVIEW = "in_review"
    RETURNED = "returned"
    APPROVED = "approved"
    REJECTED = "rejected"
    RELEASED = "released"
    WITHDRAWN = "withdrawn"


class OutputKind(StrEnum):
    TABLE = "table"
    MODEL = "model"
    FIGURE = "figure"
    TEXT = "text"


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    REVIEW = "review"
    FAIL = "fail"


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    RETURN = "return"
    REJECT = "reject"


class Upload(Base):
    """One file brought into a project through the airlock (ingress)."""

    __tablename__ = "airlock_upload"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))  # checked: one safe path component
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(120), default="")  # detected, not claimed
    legal_basis: Mapped[str] = mapped_column(Text)
    lawful_statement: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[UploadState] = mapped_column(
        Enum(UploadState, native_enum=False, length=20), index=True
    )
    # [{"check": "malware", "verdict": "pass"|"fail", "detail": "..."}]
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    quarantine_name: Mapped[str] = mapped_column(String(80))  # file name in the quarantine area
    import_path: Mapped[str] = mapped_column(String(400), default="")  # relative to the project
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_comment: Mapped[str] = mapped_column(Text, default="")
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    project: Mapped[Project] = relationship()
    uploaded_by: Mapped[User] = relationship(foreign_keys=[uploaded_by_id])


class OutputRequest(Base):
    """A request to release files from a project's `export/` folder (egress)."""

    __tablename__ = "airlock_output_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    submitted_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    light: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[OutputState] = mapped_column(
        Enum(OutputState, native_enum=False, length=20), index=True
    )
    # A resubmission after "returned" is a new request pointing at the one it replaces.
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("airlock_output_request.id"))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    policy_version: Mapped[str] = mapped_column(String(40), default="")
    required_approvals: Mapped[int] = mapped_column(Integer, default=2)
    comment: Mapped[str] = mapped_column(Text, default="")  # the last return/reject reason
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # signed at release
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}

    project: Mapped[Project] = relationship()
    submitted_by: Mapped[User] = relationship(foreign_keys=[submitted_by_id])
    files: Mapped[list[OutputFile]] = relationship(
        back_populates="request", order_by="OutputFile.id"
    )
    reviews: Mapped[list[OutputReview]] = relationship(
        back_populates="request", order_by="OutputReview.id"
    )


class OutputFile(Base):
    """One file of an output request, frozen at submission (copied out, sha256 recorded)."""

    __tablename__ = "airlock_output_file"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("airlock_output_request.id"), index=True)
    path: Mapped[str] = mapped_column(String(400))  # relative to the project's export/
    kind: Mapped[OutputKind] = mapped_column(Enum(OutputKind, native_enum=False, length=20))
    description: Mapped[str] = mapped_column(Text)
    controls: Mapped[str] = mapped_column(Text, default="")  # disclosure controls applied
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    frozen_name: Mapped[str] = mapped_column(String(80), default="")
    verdict: Mapped[str] = mapped_column(String(10), default="")  # a Verdict once checked
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    request: Mapped[OutputRequest] = relationship(back_populates="files")


class OutputReview(Base):
    """One output checker's decision on a request, with comments per file."""

    __tablename__ = "airlock_output_review"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("airlock_output_request.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    decision: Mapped[ReviewDecision] = mapped_column(
        Enum(ReviewDecision, native_enum=False, length=20)
    )
    comment: Mapped[str] = mapped_column(Text, default="")
    file_comments: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # file id → text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    request: Mapped[OutputRequest] = relationship(back_populates="reviews")
    reviewer: Mapped[User] = relationship()
