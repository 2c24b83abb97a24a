"""trigger scan indexes: incremental evaluation of trigger rules

- `content (site_id, status, published_at, id)`: published articles of a site in publication order, so
  the articles whose rule's minimum age passed since the last tick, and a resumable scan of a site, are
  range queries.
- `trigger_rules (site_id, min_age_hours)`: the distinct minimum ages of a site's rules, by index;
  `(site_id, content_id)`: a site's default rules (no article) without reading its article rules.
- `trigger_firings.changed_at` (when the status last changed) with `(status, changed_at)`: firings that
  failed since the last tick (their rule is armed again) without reading every firing.
- `sensor_states`: what a sensor last recorded (its position and backlog), for `pipeline status`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.create_index(
            "ix_content_site_status_published", ["site_id", "status", "published_at", "id"], unique=False
        )
    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.create_index("ix_trigger_rules_site_ages", ["site_id", "min_age_hours"], unique=False)
        batch_op.create_index("ix_trigger_rules_site_content", ["site_id", "content_id"], unique=False)

    # Added nullable, filled from what is known (consumed, else fired), then required. On SQLite the second
    # batch rebuilds `trigger_firings` alone (no table references it, so no row elsewhere is touched).
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE trigger_firings SET changed_at = COALESCE(consumed_at, fired_at)")
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.alter_column("changed_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index("ix_trigger_firings_status_changed_at", ["status", "changed_at"], unique=False)

    op.create_table(
        "sensor_states",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "state", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sensor_states")),
    )


def downgrade() -> None:
    op.drop_table("sensor_states")
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.drop_index("ix_trigger_firings_status_changed_at")
        batch_op.drop_column("changed_at")
    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.drop_index("ix_trigger_rules_site_content")
        batch_op.drop_index("ix_trigger_rules_site_ages")
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.drop_index("ix_content_site_status_published")
