"""rate limits: the token buckets of the provider rate limits, shared by every process using the store

- `rate_limit_buckets`: one row per bucket (key = endpoint identity, model and kind, `requests` or
  `tokens`): its `level` when last written at `updated_at` (epoch seconds of the database's clock on
  PostgreSQL, of the machine's on SQLite) and the `per_minute` limit it was last taken under.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_buckets",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("level", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("per_minute", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_buckets")),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")
