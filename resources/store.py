"""The store as a Dagster resource."""

from dagster import ConfigurableResource
from pydantic import Field

from pipeline import settings
from pipeline.store import Store


class StoreResource(ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented form
    """The pipeline's SQL database (SQLAlchemy; migrated to the newest schema on first use)."""

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: DATABASE_URL, else the local SQLite file."
    )

    def open(self) -> Store:
        """A `Store` on the configured database."""
        return Store(self.database_url or settings.database_url())
