"""Alembic environment: runs on the connection `Store.migrate` passes in, or on `DATABASE_URL`."""

from alembic import context
from sqlalchemy import create_engine

from pipeline.models import Base
from pipeline.settings import database_url

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations online; batch mode lets SQLite alter tables."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or database_url())
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
