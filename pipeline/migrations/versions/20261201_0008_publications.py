"""publications: the publishing calendar, articles on targets, media uploaded once

- `content.approved_at` and `content.publish_slot`: when the current approval happened and the calendar
  slot it was given; `(site_id, status, publish_slot)` finds a site's due articles by index.
- `publications`: one row per article and target (folder, WordPress) with the target's own id, what it
  shows and the state of the last push.
- `remote_media`: images uploaded to a target, by checksum, so each file is uploaded once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("publish_slot", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_content_site_status_slot", ["site_id", "status", "publish_slot"], unique=False)

    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=40), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("remote_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("remote_status", sa.String(length=20), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("variant", sa.String(length=1), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["content_id"], ["content.id"], name=op.f("fk_publications_content_id_content"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_publications_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
        sa.UniqueConstraint("content_id", "target", name=op.f("uq_publications_content_id")),
    )
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_publications_content_id"), ["content_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_publications_site_id"), ["site_id"], unique=False)

    op.create_table(
        "remote_media",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=40), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("remote_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("alt_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_remote_media_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_media")),
        sa.UniqueConstraint("site_id", "target", "destination", "checksum", name=op.f("uq_remote_media_site_id")),
    )
    with op.batch_alter_table("remote_media", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_remote_media_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    op.drop_table("remote_media")
    op.drop_table("publications")
    with op.batch_alter_table("content", schema=None) as batch_op:
        batch_op.drop_index("ix_content_site_status_slot")
        batch_op.drop_column("publish_slot")
        batch_op.drop_column("approved_at")
