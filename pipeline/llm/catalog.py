"""The one table of models per stage and prices per model.

Prices are USD, per million tokens for text and per image for images. They are list prices used for
the ledger and for estimates; teams override any entry per site or per run rather than editing copies.
The offline provider's model costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

OFFLINE_MODEL = "offline"


class StageModel(BaseModel):
    """Which model a stage calls and with which generation settings."""

    model: str
    max_output_tokens: int = Field(gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    # Typical answer size, used only for estimates and budget reservations before a call.
    expected_output_tokens: int = Field(default=1_000, gt=0)


class Price(BaseModel):
    """Price of one model: per million input, cached input and output tokens, and per image."""

    input_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_image: float = 0.0
    # The Batch API's price as a share of the real-time one (OpenAI: half, for tokens and images alike).
    batch_share: float = Field(default=0.5, gt=0, le=1)


class Usage(BaseModel):
    """Tokens (and images) one call consumed, as the provider reported them."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0


class Catalog(BaseModel):
    """Models per stage and prices per model."""

    stages: dict[str, StageModel]
    prices: dict[str, Price]
    image_size: str = "1024x1024"

    def stage(self, name: str) -> StageModel:
        """The model settings of a stage; an unknown stage is a programming error."""
        try:
            return self.stages[name]
        except KeyError as exc:
            raise KeyError(f"no model configured for stage '{name}' (known: {', '.join(sorted(self.stages))})") from exc

    def merged(
        self,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        prices: Mapping[str, Mapping[str, Any]] | None = None,
        image_size: str | None = None,
    ) -> Catalog:
        """A copy with partial overrides applied: `models` per stage, `prices` per model (fields not given keep
        their value). Site settings and run config both override through here, in that order."""
        stages = dict(self.stages)
        for stage, fields in (models or {}).items():
            given = {k: v for k, v in fields.items() if v is not None}
            if stage not in stages:
                raise KeyError(f"model override for unknown stage '{stage}' (known: {', '.join(sorted(stages))})")
            stages[stage] = stages[stage].model_copy(update=given)
            StageModel.model_validate(stages[stage].model_dump())
        table = dict(self.prices)
        for model, fields in (prices or {}).items():
            given = {k: v for k, v in fields.items() if v is not None}
            table[model] = Price.model_validate((table[model].model_dump() if model in table else {}) | given)
        return Catalog(stages=stages, prices=table, image_size=image_size or self.image_size)

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> float:
        """USD cost of `usage` on `model`, at the real-time or (`batch`) the Batch API price; models missing
        from the price table cost 0 and are flagged by tests."""
        price = self.prices.get(model, Price())
        uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
        real_time = round(
            uncached * price.input_per_mtok / 1e6
            + usage.cached_input_tokens * price.cached_input_per_mtok / 1e6
            + usage.output_tokens * price.output_per_mtok / 1e6
            + usage.images * price.per_image,
            8,
        )
        return round(real_time * price.batch_share, 8) if batch else real_time


DEFAULT_CATALOG = Catalog(
    stages={
        "clusters": StageModel(model="gpt-5-mini", max_output_tokens=4_000, expected_output_tokens=1_200),
        "ideas": StageModel(model="gpt-5-mini", max_output_tokens=6_000, expected_output_tokens=1_500),
        "content": StageModel(model="gpt-5", max_output_tokens=16_000, expected_output_tokens=3_500),
        "regeneration": StageModel(model="gpt-5", max_output_tokens=16_000, expected_output_tokens=3_500),
        "image_prompts": StageModel(model="gpt-5-mini", max_output_tokens=3_000, expected_output_tokens=400),
        "images": StageModel(model="gpt-image-2", max_output_tokens=1, expected_output_tokens=1),
        "embeddings": StageModel(model="text-embedding-3-small", max_output_tokens=1, expected_output_tokens=1),
    },
    prices={
        "gpt-5": Price(input_per_mtok=1.25, cached_input_per_mtok=0.125, output_per_mtok=10.0),
        "gpt-5-mini": Price(input_per_mtok=0.25, cached_input_per_mtok=0.025, output_per_mtok=2.0),
        "gpt-image-2": Price(per_image=0.04),
        "text-embedding-3-small": Price(input_per_mtok=0.02),
        OFFLINE_MODEL: Price(),
    },
)
