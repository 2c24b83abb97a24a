"""response cache

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 03:45:49.999308
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_cache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=120), nullable=False),
        sa.Column("prompt_version", sa.String(length=80), nullable=False),
        sa.Column(
            "answer", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_response_cache")),
        sa.UniqueConstraint("key", name=op.f("uq_response_cache_key")),
    )
    with op.batch_alter_table("response_cache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_response_cache_last_used_at"), ["last_used_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("response_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_response_cache_last_used_at"))

    op.drop_table("response_cache")
