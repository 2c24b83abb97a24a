"""The LLM resource: the one engine for model calls, injected into every asset that calls a model.

Everything here is per-run configuration (Dagster resource config): provider and endpoint, concurrency,
retries, rate limits, the run's budget, and run-level overrides of models, prices and prompts. The
defaults come from `pipeline/llm/catalog.py`; site settings override them, run config overrides both.
"""

import os
from collections.abc import Callable

from dagster import Config, ConfigurableResource, EnvVar
from pydantic import Field

from pipeline.llm.catalog import DEFAULT_CATALOG
from pipeline.llm.engine import EngineOptions, ModelEngine, Provider
from pipeline.llm.limits import limiter_for
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.openai_provider import OpenAIProvider
from pipeline.prompts import PromptRegistry
from pipeline.sites import site_settings
from pipeline.store import Store


def _openai(resource: "LLMResource") -> Provider:
    return OpenAIProvider(
        api_key=resource.api_key or "",
        base_url=resource.base_url,
        max_retries=resource.max_retries,
        timeout_s=resource.timeout_s,
    )


# Provider name -> factory. The one place providers are chosen.
PROVIDERS: dict[str, Callable[["LLMResource"], Provider]] = {
    "offline": lambda _resource: OfflineProvider(),
    "openai": _openai,
}


class ModelOverride(Config):
    """Override of one stage's model settings (unset fields keep the catalog's value)."""

    model: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None


class PriceOverride(Config):
    """Override of one model's prices, USD per million tokens / per image."""

    input_per_mtok: float | None = None
    cached_input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    per_image: float | None = None


class PromptOverride(Config):
    """A run-level replacement of one prompt template."""

    version: str
    instructions: str


class LLMResource(ConfigurableResource):
    """Builds the model engine for a run and site partition.

    `provider="offline"` (the default without a key) composes deterministic answers from the real inputs
    and renders images locally, labelling every row `provider=offline`. `provider="openai"` calls OpenAI
    or any compatible `base_url` through the official SDK.
    """

    provider: str = Field(default="offline", description="offline or openai")
    api_key: str | None = Field(default=None, description="OpenAI API key; pass EnvVar('OPENAI_API_KEY').")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    concurrency: int = Field(default=8, ge=1, le=256, description="Calls in flight at once inside one asset.")
    max_retries: int = Field(default=3, ge=0, le=10, description="SDK retries for 429, 5xx, timeouts.")
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")
    repair_attempts: int = Field(
        default=1, ge=0, le=3, description="Extra calls for malformed/invalid/truncated answers."
    )
    requests_per_minute: int | None = Field(default=None, description="Process-wide RPM limit per model.")
    tokens_per_minute: int | None = Field(default=None, description="Process-wide TPM limit per model.")
    max_run_cost_usd: float | None = Field(default=None, description="Stop issuing calls before a run spends more.")
    image_size: str | None = Field(default=None, description="Image size such as 1024x1024.")
    models: dict[str, ModelOverride] = Field(default_factory=dict, description="Per-stage model overrides.")
    prices: dict[str, PriceOverride] = Field(default_factory=dict, description="Per-model price overrides.")
    prompts: dict[str, PromptOverride] = Field(default_factory=dict, description="Run-level prompt overrides.")

    def engine(self, store: Store, *, run_id: str | None, partition: str | None, force: bool = False) -> ModelEngine:
        """An engine recording its calls in `store` under this run and partition; use it as a context manager."""
        settings = site_settings(store.site(partition).settings) if partition else None
        catalog = DEFAULT_CATALOG
        if settings:
            catalog = catalog.merged(settings.models, settings.prices)
        catalog = catalog.merged(
            {stage: o.model_dump() for stage, o in self.models.items()},
            {model: p.model_dump() for model, p in self.prices.items()},
            image_size=self.image_size,
        )
        budgets = [b for b in (self.max_run_cost_usd, settings.max_run_cost_usd if settings else None) if b is not None]
        provider = self._provider()
        limiter = None
        if self.requests_per_minute or self.tokens_per_minute:

            def limiter(model: str):
                return limiter_for(provider.identity, model, self.requests_per_minute, self.tokens_per_minute)

        return ModelEngine(
            provider,
            catalog=catalog,
            prompts=PromptRegistry(),
            store=store,
            run_id=run_id,
            partition=partition,
            options=EngineOptions(
                concurrency=self.concurrency if provider.cacheable else 1,
                repair_attempts=self.repair_attempts,
                force=force,
                max_run_cost_usd=min(budgets) if budgets else None,
            ),
            run_prompt_overrides={name: p.model_dump() for name, p in self.prompts.items()},
            site_prompt_overrides=settings.prompts if settings else None,
            limiter=limiter,
        )

    def _provider(self) -> Provider:
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown LLM provider {self.provider!r}; available: {', '.join(PROVIDERS)}")
        return PROVIDERS[self.provider](self)


def llm_from_environment() -> LLMResource:
    """The LLM resource for this environment: OpenAI when `OPENAI_API_KEY` or `OPENAI_BASE_URL` is set
    (or `PIPELINE_LLM_PROVIDER=openai`), else offline. The key is passed as an `EnvVar`, so its value never
    appears in run config, the UI or logs."""
    has_key = bool(os.environ.get("OPENAI_API_KEY"))
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    provider = os.environ.get("PIPELINE_LLM_PROVIDER") or ("openai" if has_key or base_url else "offline")
    image_size = os.environ.get("PIPELINE_IMAGE_SIZE") or None
    if provider != "openai":
        return LLMResource(provider=provider, image_size=image_size)
    # An unset EnvVar fails the run even for optional fields, so only pass it when the variable exists;
    # a local compatible server needs some key string but not a secret one.
    return LLMResource(
        provider="openai",
        api_key=EnvVar("OPENAI_API_KEY") if has_key else "local-server-no-key",
        base_url=base_url,
        concurrency=int(os.environ.get("PIPELINE_LLM_CONCURRENCY", "16")),
        image_size=image_size,
    )
