"""keyword intents: room for every intent a tool gives ("informational, commercial, navigational")

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # On SQLite the batch rebuilds `keywords` alone (no table references it, so no row elsewhere is touched).
    with op.batch_alter_table("keywords", schema=None) as batch_op:
        batch_op.alter_column("intent", existing_type=sa.String(length=20), type_=sa.String(length=64))


def downgrade() -> None:
    with op.batch_alter_table("keywords", schema=None) as batch_op:
        batch_op.alter_column("intent", existing_type=sa.String(length=64), type_=sa.String(length=20))
