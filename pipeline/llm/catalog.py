"""The one table of models per stage and prices per model.

Prices are USD, per million tokens for text and per image for images. They are list prices used for
the ledger and for estimates; teams override any entry per site or per run rather than editing copies.
The offline provider's model costs nothing.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

OFFLINE_MODEL = "offline"


class StageModel(BaseModel):
    """Which model a stage calls and with which generation settings."""

    model: str
    max_output_tokens: int = Field(gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)


class Price(BaseModel):
    """Price of one model: per million input, cached input and output tokens, and per image."""

    input_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    per_image: float = 0.0


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

    def cost(self, model: str, usage: Usage) -> float:
        """USD cost of `usage` on `model`; models missing from the price table cost 0 and are flagged by tests."""
        price = self.prices.get(model, Price())
        uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
        return round(
            uncached * price.input_per_mtok / 1e6
            + usage.cached_input_tokens * price.cached_input_per_mtok / 1e6
            + usage.output_tokens * price.output_per_mtok / 1e6
            + usage.images * price.per_image,
            8,
        )


DEFAULT_CATALOG = Catalog(
    stages={
        "clusters": StageModel(model="gpt-5-mini", max_output_tokens=4_000, temperature=None),
        "ideas": StageModel(model="gpt-5-mini", max_output_tokens=6_000, temperature=None),
        "content": StageModel(model="gpt-5", max_output_tokens=16_000, temperature=None),
        "image_prompts": StageModel(model="gpt-5-mini", max_output_tokens=3_000, temperature=None),
        "images": StageModel(model="gpt-image-2", max_output_tokens=1, temperature=None),
    },
    prices={
        "gpt-5": Price(input_per_mtok=1.25, cached_input_per_mtok=0.125, output_per_mtok=10.0),
        "gpt-5-mini": Price(input_per_mtok=0.25, cached_input_per_mtok=0.025, output_per_mtok=2.0),
        "gpt-image-2": Price(per_image=0.04),
        OFFLINE_MODEL: Price(),
    },
)
