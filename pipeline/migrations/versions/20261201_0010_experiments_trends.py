"""experiments and trend rules: A/B tests over periods, metric values over periods, rules comparing periods

- `experiments`: one time-split A/B test per article version (control variant, period length, maximum
  duration, minimum impressions, confidence, timezone of the periods, status, looks, winner, decision).
- `experiment_periods`: which variant is live when, and when the publishing path switched to it.
- `post_metrics.period_start`: the start of the period a value covers (NULL: an instant, as before).
- `trigger_rules.kind`, `window_days`, `min_volume`: rules that compare periods (existing rules: `value`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("control", sa.String(length=1), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("max_days", sa.Integer(), nullable=False),
        sa.Column("min_impressions", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("looks", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(length=1), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "decision", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_id"], ["content.id"], name=op.f("fk_experiments_content_id_content"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_experiments_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("content_id", "version", name=op.f("uq_experiments_content_id")),
    )
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiments_content_id"), ["content_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_experiments_site_id"), ["site_id"], unique=False)
        batch_op.create_index("ix_experiments_site_status", ["site_id", "status"], unique=False)

    op.create_table(
        "experiment_periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=1), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_experiment_periods_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_periods")),
        sa.UniqueConstraint("experiment_id", "number", name=op.f("uq_experiment_periods_experiment_id")),
    )
    with op.batch_alter_table("experiment_periods", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_experiment_periods_experiment_id"), ["experiment_id"], unique=False)

    with op.batch_alter_table("post_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("period_start", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=20), nullable=False, server_default="value"))
        batch_op.add_column(sa.Column("window_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("min_volume", sa.Double(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.drop_column("min_volume")
        batch_op.drop_column("window_days")
        batch_op.drop_column("kind")
    with op.batch_alter_table("post_metrics", schema=None) as batch_op:
        batch_op.drop_column("period_start")
    op.drop_table("experiment_periods")
    op.drop_table("experiments")
