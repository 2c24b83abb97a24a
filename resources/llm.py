"""The LLM resource: the one engine for model calls, injected into every asset that calls a model.

Everything here is per-run configuration (Dagster resource config): provider and endpoint, concurrency,
retries, rate limits, the run's budget, and run-level overrides of models, prices and prompts. The
defaults come from `pipeline/llm/catalog.py`; site settings override them, run config overrides both.
"""

import os
from collections.abc import Callable
from typing import Any

from dagster import Config, ConfigurableResource
from pydantic import Field

from pipeline.llm.batch_api import BatchAPI
from pipeline.llm.batch_mode import BatchCapable
from pipeline.llm.catalog import DEFAULT_CATALOG
from pipeline.llm.endpoints import DEFAULT_KEY_ENV, Endpoint, EndpointError, resolve_endpoints
from pipeline.llm.engine import ModelEngine
from pipeline.llm.limits import DEFAULT_BURST_SECONDS, RateLimiter, limiter_for
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.openai_provider import OpenAIProvider
from pipeline.llm.tasks import DEFAULT_CONCURRENCY, EngineOptions
from pipeline.llm.wire import Provider
from pipeline.prompts import PromptRegistry
from pipeline.sites import SiteSettings, site_settings
from pipeline.stages import RunOptions
from pipeline.store import Store


def _openai(resource: "LLMResource", endpoint: Endpoint) -> Provider:
    # An explicit key (tests, scripts) applies to endpoints that use the text endpoint's key variable.
    explicit = resource.api_key if endpoint.api_key_env == resource.resolved_text_key_env() else None
    return OpenAIProvider(
        api_key=endpoint.api_key(explicit),
        base_url=endpoint.base_url,
        max_retries=resource.max_retries,
        timeout_s=resource.timeout_s,
    )


# Provider name -> factory. The one place providers are chosen.
PROVIDERS: dict[str, Callable[["LLMResource", Endpoint], Provider]] = {
    "offline": lambda _resource, _endpoint: OfflineProvider(),
    "openai": _openai,
}


class EndpointConfig(Config):
    """Where one kind of call (embeddings, images) goes; unset fields inherit the text endpoint."""

    provider: str | None = Field(default=None, description="openai or offline; unset: as the text endpoint.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint of this kind of call.")
    api_key_env: str | None = Field(default=None, description="Name of the environment variable with its key.")


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


class LLMResource(ConfigurableResource):  # type: ignore[type-arg]  # Dagster's documented form
    """Builds the model engine for a run and site partition.

    Every field is optional: what is not set here (run config, or the deployment's code) comes from the
    site's settings, then the environment (`pipeline/llm/endpoints.py`), so a run config that sets only a
    budget never changes the provider. `provider="offline"` (the default with no key and no base URL)
    composes deterministic answers from the real inputs and renders images locally, labelling every row
    `provider=offline`; `provider="openai"` calls OpenAI or any compatible `base_url` through the official
    SDK. Text, embeddings and images may each have their own endpoint.
    """

    provider: str | None = Field(default=None, description="Text endpoint: openai or offline (unset: environment).")
    base_url: str | None = Field(
        default=None, description="Text endpoint URL, e.g. http://127.0.0.1:8000/v1 (unset: OPENAI_BASE_URL)."
    )
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the key (default OPENAI_API_KEY)."
    )
    api_key: str | None = Field(default=None, description="A key given directly (tests); prefer api_key_env.")
    embeddings: EndpointConfig = Field(default_factory=EndpointConfig, description="Embeddings endpoint.")
    images: EndpointConfig = Field(default_factory=EndpointConfig, description="Images endpoint (offline allowed).")
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=f"Calls in flight at once inside one asset (unset: {DEFAULT_CONCURRENCY}, or env).",
    )
    max_retries: int = Field(default=2, ge=0, le=10, description="SDK retries for 429, 5xx, timeouts.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per-request timeout of one HTTP attempt.")
    item_timeout_s: float = Field(
        default=90.0, gt=0, description="Bound on one item: all its HTTP attempts and repairs."
    )
    repair_attempts: int = Field(
        default=1, ge=0, le=3, description="Extra calls for malformed/invalid/truncated or rejected answers."
    )
    requests_per_minute: int | None = Field(
        default=None, description="RPM limit per model, shared by every process using the store."
    )
    tokens_per_minute: int | None = Field(
        default=None, description="TPM limit per model, shared by every process using the store."
    )
    rate_limit_burst_s: float = Field(
        default=DEFAULT_BURST_SECONDS, gt=0, description="Seconds of the per-minute allowance one burst may use."
    )
    max_run_cost_usd: float | None = Field(default=None, description="Stop issuing calls before a run spends more.")
    image_size: str | None = Field(default=None, description="Image size such as 1024x1024.")
    models: dict[str, ModelOverride] = Field(default_factory=dict, description="Per-stage model overrides.")
    prices: dict[str, PriceOverride] = Field(default_factory=dict, description="Per-model price overrides.")
    prompts: dict[str, PromptOverride] = Field(default_factory=dict, description="Run-level prompt overrides.")

    def resolved_text_key_env(self) -> str:
        """The name of the text endpoint's key variable as this resource sets it (or the default)."""
        return self.api_key_env or os.environ.get("PIPELINE_LLM_API_KEY_ENV") or DEFAULT_KEY_ENV

    def endpoints(self, site: SiteSettings | None = None) -> dict[str, Endpoint]:
        """Where text, embeddings and images calls go for a site (run values, site settings, environment)."""
        run: dict[str, dict[str, Any]] = {
            "text": {"provider": self.provider, "base_url": self.base_url, "api_key_env": self.api_key_env},
            "embeddings": self.embeddings.model_dump(),
            "images": self.images.model_dump(),
        }
        if self.api_key and self.provider is None and self.base_url is None:
            run["text"]["provider"] = "openai"  # a key given directly means a real provider
        site_values: dict[str, dict[str, Any]] = (
            {kind: e.model_dump() for kind, e in site.endpoints.items()} if site else {}
        )
        return resolve_endpoints(run, site_values)

    def engine(
        self,
        store: Store,
        *,
        run_id: str | None,
        partition: str | None,
        options: RunOptions = RunOptions(),
        settings: SiteSettings | None = None,
    ) -> ModelEngine:
        """An engine recording its calls in `store` under this run and partition; use it as a context manager.

        `options` are the run options the stage gets too (`force` bypasses the response cache; `dry_run`
        builds an engine that refuses every call, for estimates). `settings` are the partition's site
        settings when the caller has them already; otherwise they are read from the store."""
        if settings is None and partition:
            settings = site_settings(store.site(partition).settings)
        catalog = DEFAULT_CATALOG
        if settings:
            catalog = catalog.merged(settings.models, settings.prices)
        catalog = catalog.merged(
            {stage: o.model_dump() for stage, o in self.models.items()},
            {model: p.model_dump() for model, p in self.prices.items()},
            image_size=self.image_size or os.environ.get("PIPELINE_IMAGE_SIZE") or None,
        )
        budgets = [b for b in (self.max_run_cost_usd, settings.max_run_cost_usd if settings else None) if b is not None]
        providers = self._providers(self.endpoints(settings))
        provider = providers["text"]
        limiter = None
        if self.requests_per_minute or self.tokens_per_minute:

            def limiter(model: str) -> RateLimiter:
                return limiter_for(
                    store,
                    provider.identity,
                    model,
                    self.requests_per_minute,
                    self.tokens_per_minute,
                    self.rate_limit_burst_s,
                )

        concurrency = self.concurrency or int(os.environ.get("PIPELINE_LLM_CONCURRENCY") or DEFAULT_CONCURRENCY)
        return ModelEngine(
            provider,
            catalog=catalog,
            prompts=PromptRegistry(),
            store=store,
            run_id=run_id,
            partition=partition,
            options=EngineOptions(
                concurrency=concurrency if provider.cacheable else 1,
                repair_attempts=self.repair_attempts,
                force=options.force,
                max_run_cost_usd=min(budgets) if budgets else None,
                dry_run=options.dry_run,
                item_timeout_s=self.item_timeout_s,
                batch=options.batch,
                batch_failed_lines=settings.batch.failed_lines if settings else "next_batch",
            ),
            run_prompt_overrides={name: p.model_dump() for name, p in self.prompts.items()},
            site_prompt_overrides=settings.prompts if settings else None,
            limiter=limiter,
            image_provider=providers["images"],
            embedding_provider=providers["embeddings"],
            monthly_budget_usd=settings.monthly_budget_usd if settings else None,
        )

    def batch_api(self, settings: SiteSettings | None = None) -> BatchAPI | None:
        """The Batch API of a site's text endpoint, or None when its provider has none (offline)."""
        provider = self._providers(self.endpoints(settings))["text"]
        return provider.batch_api() if isinstance(provider, BatchCapable) else None

    def _providers(self, endpoints: dict[str, Endpoint]) -> dict[str, Provider]:
        """One provider per distinct endpoint (kinds sharing an endpoint share its connections)."""
        built: dict[tuple[str, str | None, str], Provider] = {}
        providers = {}
        for kind, endpoint in endpoints.items():
            if endpoint.provider not in PROVIDERS:
                raise EndpointError(
                    f"unknown provider {endpoint.provider!r} for the {kind} endpoint ({endpoint.source}); "
                    f"available: {', '.join(PROVIDERS)}"
                )
            key = (endpoint.provider, endpoint.base_url, endpoint.api_key_env)
            if key not in built:
                built[key] = PROVIDERS[endpoint.provider](self, endpoint)
            providers[kind] = built[key]
        return providers


def llm_from_environment() -> LLMResource:
    """The LLM resource of the code location: nothing set, so every value is resolved when a run builds
    its engine (run config, then site settings, then the environment). Keys never enter config."""
    return LLMResource()
