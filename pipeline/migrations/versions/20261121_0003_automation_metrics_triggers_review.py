"""automation: metrics, triggers, review

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 04:01:33.349820
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "post_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=1), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_id"], ["content.id"], name=op.f("fk_post_metrics_content_id_content"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_post_metrics")),
        sa.UniqueConstraint(
            "content_id",
            "variant",
            "version",
            "metric",
            "observed_at",
            "source",
            name=op.f("uq_post_metrics_content_id"),
        ),
    )
    with op.batch_alter_table("post_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_post_metrics_content_id"), ["content_id"], unique=False)

    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=False),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(length=1), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_id"], ["content.id"], name=op.f("fk_review_events_content_id_content"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_events")),
    )
    with op.batch_alter_table("review_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_events_content_id"), ["content_id"], unique=False)

    op.create_table(
        "trigger_firings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=False),
        sa.Column("rule_key", sa.String(length=80), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("comparison", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column(
            "triggered_variants",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "observed", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["content_id"], ["content.id"], name=op.f("fk_trigger_firings_content_id_content"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_trigger_firings_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_firings")),
        sa.UniqueConstraint("content_id", "rule_key", "published_version", name=op.f("uq_trigger_firings_content_id")),
    )
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trigger_firings_content_id"), ["content_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_trigger_firings_site_id"), ["site_id"], unique=False)

    op.create_table(
        "trigger_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=True),
        sa.Column("metric", sa.String(length=60), nullable=False),
        sa.Column("comparison", sa.String(length=2), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("min_age_hours", sa.Double(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_id"], ["content.id"], name=op.f("fk_trigger_rules_content_id_content"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_trigger_rules_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_rules")),
    )
    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trigger_rules_content_id"), ["content_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_trigger_rules_site_id"), ["site_id"], unique=False)

    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("regeneration_run_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.drop_column("regeneration_run_id")
        batch_op.drop_column("review_note")

    with op.batch_alter_table("trigger_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trigger_rules_site_id"))
        batch_op.drop_index(batch_op.f("ix_trigger_rules_content_id"))

    op.drop_table("trigger_rules")
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trigger_firings_site_id"))
        batch_op.drop_index(batch_op.f("ix_trigger_firings_content_id"))

    op.drop_table("trigger_firings")
    with op.batch_alter_table("review_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_events_content_id"))

    op.drop_table("review_events")
    with op.batch_alter_table("post_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_post_metrics_content_id"))

    op.drop_table("post_metrics")
