"""Workspaces: the reconciler's observed state of each project's workspace (phase, reason,
hash of the desired objects last converged, objects applied, backoff).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspace_status",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column(
            "phase",
            sa.Enum(
                "PENDING",
                "READY",
                "PROGRESSING",
                "BLOCKED",
                "TORN_DOWN",
                name="workspacephase",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("desired_hash", sa.String(length=64), nullable=False),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("last_reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_workspace_status_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_status")),
        sa.UniqueConstraint("project_id", name=op.f("uq_workspace_status_project_id")),
    )
    with op.batch_alter_table("workspace_status", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workspace_status_next_attempt_at"), ["next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("workspace_status", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_status_next_attempt_at"))

    op.drop_table("workspace_status")
