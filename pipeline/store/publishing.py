"""Publishing: articles on targets (`publications`) and the media uploaded to them (`remote_media`)."""

from __future__ import annotations

from pipeline.store.base import StoreBase


class PublishingStore(StoreBase):
    """Where each article is published, what each target shows, and which files a target already has."""
