"""The LLM resource: the one engine for model calls, injected into every asset that calls a model."""


from dagster import ConfigurableResource
from pydantic import Field

from pipeline.llm.catalog import DEFAULT_CATALOG
from pipeline.llm.engine import ModelEngine, Provider
from pipeline.llm.offline import OfflineProvider
from pipeline.prompts import PromptRegistry
from pipeline.sites import site_settings
from pipeline.store import Store

PROVIDERS: dict[str, type[Provider]] = {"offline": OfflineProvider}


class LLMResource(ConfigurableResource):
    """Model engine factory: provider choice and image size; models and prices come from the catalog.

    `provider="offline"` (the default) composes deterministic answers from the real inputs and renders
    images locally; every row it writes is labelled `provider=offline`.
    """

    provider: str = Field(default="offline", description="Model provider: " + ", ".join(PROVIDERS))
    image_size: str | None = Field(default=None, description="Image size such as 1024x1024; default from catalog.")

    def engine(self, store: Store, *, run_id: str | None, partition: str | None) -> ModelEngine:
        """An engine that records its calls in `store`'s ledger under this run and partition."""
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown LLM provider {self.provider!r}; available: {', '.join(sorted(PROVIDERS))}")
        catalog = DEFAULT_CATALOG
        if self.image_size:
            catalog = catalog.model_copy(update={"image_size": self.image_size})
        site_prompts = {}
        if partition is not None:
            site_prompts = site_settings(store.site(partition).settings).prompts
        return ModelEngine(
            PROVIDERS[self.provider](),
            catalog=catalog,
            prompts=PromptRegistry(),
            ledger=store,
            run_id=run_id,
            partition=partition,
            site_prompt_overrides=site_prompts,
        )
