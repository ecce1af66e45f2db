"""Workspace launch tickets and hub state (issue 6: JupyterHub integration): single-use launch
tickets (hashed) and the spawn spec hash each (user, project) server was started with.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "launch_ticket",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_launch_ticket_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_launch_ticket_user_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_launch_ticket")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_launch_ticket_secret_hash")),
    )
    with op.batch_alter_table("launch_ticket", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_launch_ticket_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_launch_ticket_user_id"), ["user_id"], unique=False)

    op.create_table(
        "workspace_server",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("spec_issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spawns", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_workspace_server_project_id_project")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_workspace_server_user_id_user_account"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_server")),
        sa.UniqueConstraint("user_id", "project_id", name="user_project"),
    )
    with op.batch_alter_table("workspace_server", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workspace_server_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_workspace_server_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("workspace_server", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_server_user_id"))
        batch_op.drop_index(batch_op.f("ix_workspace_server_project_id"))
    op.drop_table("workspace_server")
    with op.batch_alter_table("launch_ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_launch_ticket_user_id"))
        batch_op.drop_index(batch_op.f("ix_launch_ticket_project_id"))
    op.drop_table("launch_ticket")
