"""item leases: items a run is paying a model call for

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:40:00
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
        "item_leases",
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("partition", sa.String(length=200), nullable=False),
        sa.Column("item_ref", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stage", "partition", "item_ref", name=op.f("pk_item_leases")),
    )
    with op.batch_alter_table("item_leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_item_leases_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("item_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_item_leases_expires_at"))
    op.drop_table("item_leases")
