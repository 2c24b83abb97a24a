"""batches, budgets, idea review: provider batches and their items, monthly budget reservations, idea status

- `ideas.status` (`proposed` / `approved` / `rejected`; existing ideas are `approved`), `reviewed_by`,
  `reviewed_at`, `review_note`.
- `model_calls.batch_id`: the provider batch that answered a call (NULL: real time).
- `model_batches`, `model_batch_items`: batches recorded before they are sent, and their requests.
- `budget_reservations`: money running engines may spend next against a site's monthly budget.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ideas") as batch:
        batch.add_column(sa.Column("status", sa.String(length=20), nullable=False, server_default="approved"))
        batch.add_column(sa.Column("reviewed_by", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("review_note", sa.Text(), nullable=True))
        batch.create_index("ix_ideas_status", ["status"])
    with op.batch_alter_table("model_calls") as batch:
        batch.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        batch.create_index("ix_model_calls_batch_id", ["batch_id"])
    op.create_table(
        "model_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("local_key", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("partition", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        sa.Column("model", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("remote_id", sa.String(length=120), nullable=True),
        sa.Column("remote_status", sa.String(length=40), nullable=True),
        sa.Column("input_file_id", sa.String(length=120), nullable=True),
        sa.Column("output_file_id", sa.String(length=120), nullable=True),
        sa.Column("error_file_id", sa.String(length=120), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("expected_cost_usd", sa.Double(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_batches")),
        sa.UniqueConstraint("local_key", name=op.f("uq_model_batches_local_key")),
        sa.UniqueConstraint("remote_id", name=op.f("uq_model_batches_remote_id")),
    )
    op.create_index("ix_model_batches_status", "model_batches", ["status", "partition", "stage"])
    op.create_table(
        "model_batch_items",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("custom_id", sa.String(length=120), nullable=False),
        sa.Column("item_ref", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["model_batches.id"],
            name=op.f("fk_model_batch_items_batch_id_model_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "custom_id", name=op.f("pk_model_batch_items")),
    )
    op.create_index("ix_model_batch_items_item_ref", "model_batch_items", ["item_ref"])
    op.create_table(
        "budget_reservations",
        sa.Column("holder", sa.String(length=120), nullable=False),
        sa.Column("partition", sa.String(length=200), nullable=False),
        sa.Column("amount_usd", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("holder", "partition", name=op.f("pk_budget_reservations")),
    )
    op.create_index("ix_budget_reservations_partition_expires", "budget_reservations", ["partition", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_reservations_partition_expires", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_index("ix_model_batch_items_item_ref", table_name="model_batch_items")
    op.drop_table("model_batch_items")
    op.drop_index("ix_model_batches_status", table_name="model_batches")
    op.drop_table("model_batches")
    with op.batch_alter_table("model_calls") as batch:
        batch.drop_index("ix_model_calls_batch_id")
        batch.drop_column("batch_id")
    with op.batch_alter_table("ideas") as batch:
        batch.drop_index("ix_ideas_status")
        batch.drop_column("review_note")
        batch.drop_column("reviewed_at")
        batch.drop_column("reviewed_by")
        batch.drop_column("status")
