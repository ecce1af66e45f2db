"""Tables of the JupyterHub integration: single-use launch tickets, and the spawn spec each
running server was started with (so the hub sync can stop servers whose access or grants changed).
Imported by `orchestrator.models`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orchestrator.db import Base
from orchestrator.models import Project, User, UTCDateTime, utcnow


class LaunchTicket(Base):
    """A short-lived, single-use ticket that logs one user into the hub for one project.

    Only the SHA-256 of the secret is stored; `used_at` is set by one conditional UPDATE, so of
    two redemptions at once exactly one wins."""

    __tablename__ = "launch_ticket"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()
    project: Mapped[Project] = relationship()


class WorkspaceServer(Base):
    """The spawn spec last handed to the hub for (user, project): its hash says which grants and
    settings a running server has, so a changed spec (a revoked grant) stops the server."""

    __tablename__ = "workspace_server"
    __table_args__ = (UniqueConstraint("user_id", "project_id", name="user_project"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    spec_hash: Mapped[str] = mapped_column(String(64))
    spec_issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    spawns: Mapped[int] = mapped_column(Integer, default=0)

    user: Mapped[User] = relationship()
    project: Mapped[Project] = relationship()
