"""input hardening: rejected input files

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00
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
        "rejected_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_files")),
        sa.UniqueConstraint("folder", "name", "fingerprint", name=op.f("uq_rejected_files_folder")),
    )
    with op.batch_alter_table("rejected_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rejected_files_resolved_at"), ["resolved_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rejected_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_files_resolved_at"))

    op.drop_table("rejected_files")
