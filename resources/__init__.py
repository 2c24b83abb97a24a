"""Dagster resources: the clients assets receive by parameter name (store, llm, media)."""

from resources.llm import LLMResource
from resources.media import MediaResource
from resources.store import StoreResource

__all__ = ["LLMResource", "MediaResource", "StoreResource"]
