"""Archives and deletion certificates (issue 5: lifecycle): the verified archive of an archived
project's storage, the certificate left when a deleted project's data is removed, and an index
on `project.updated_at` for the reconciler's wake-up query.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "project_archive",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("project_code", sa.String(length=5), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("manifest_path", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_bytes", sa.BigInteger(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("source_path", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_project_archive_project_id_project")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project_archive")),
        sa.UniqueConstraint("project_id", name=op.f("uq_project_archive_project_id")),
    )
    op.create_table(
        "deletion_certificate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("project_code", sa.String(length=5), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(length=200), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("removed", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deletion_certificate")),
        sa.UniqueConstraint("project_id", name=op.f("uq_deletion_certificate_project_id")),
    )
    with op.batch_alter_table("deletion_certificate", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deletion_certificate_project_code"), ["project_code"], unique=False
        )
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.create_index("ix_project_updated_at", ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_index("ix_project_updated_at")
    with op.batch_alter_table("deletion_certificate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deletion_certificate_project_code"))
    op.drop_table("deletion_certificate")
    op.drop_table("project_archive")
