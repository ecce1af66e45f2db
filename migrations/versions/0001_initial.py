"""Initial schema: instance_info, holding this installation's id.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    instance_info = op.create_table(
        "instance_info",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("install_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_instance_info_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_info")),
        sa.UniqueConstraint("install_id", name=op.f("uq_instance_info_install_id")),
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # SQLite keeps no offset; the ORM type reads it as UTC
    op.bulk_insert(
        instance_info,
        [{"id": 1, "install_id": str(uuid.uuid4()), "created_at": now, "note": "created by 0001"}],
    )


def downgrade() -> None:
    op.drop_table("instance_info")
