"""Where generated media files are written."""

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from pipeline import settings


class MediaResource(ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented form
    """Local media directory for image files (one sub-folder per site)."""

    root: str | None = Field(default=None, description="Folder; default: PIPELINE_MEDIA_DIR or data/local/media.")

    def directory(self) -> Path:
        """The media root folder (created on demand by the images stage)."""
        return Path(self.root) if self.root else settings.media_dir()
