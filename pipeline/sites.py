"""Sites: slug rules and the typed per-site settings stored as JSON on the site row."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Slugs are Dagster partition keys: `,` `|` `...` and newlines break partition handling, so stay strict.
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


class InvalidSlug(ValueError):
    """A site slug that cannot be used as a partition key."""


def validate_slug(slug: str) -> str:
    """Return `slug` if it is 1-64 lowercase letters, digits and inner hyphens, else raise `InvalidSlug`."""
    if not SLUG_PATTERN.match(slug):
        raise InvalidSlug(
            f"invalid site slug {slug!r}: use 1-64 lowercase letters, digits and hyphens "
            f"(not at the ends), e.g. {slugify(slug) or 'my-site'!r}"
        )
    return slug


def slugify(text: str, max_length: int = 64) -> str:
    """Lowercase ASCII words joined by hyphens, e.g. `Cold Brew: Guide` -> `cold-brew-guide`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


class Taxonomy(BaseModel):
    """The site's allowed categories and tags; generated ones are filtered against it when set."""

    categories: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class TriggerRuleSettings(BaseModel):
    """A default trigger rule for every published article of a site (set in site settings)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")
    comparison: Literal["<", "<=", ">", ">=", "=="]
    threshold: float
    min_age_hours: float = Field(default=0.0, ge=0)
    instruction: str = ""


class SiteSettings(BaseModel):
    """Per-site knobs, stored in `sites.settings`; unknown keys are rejected so typos surface."""

    model_config = ConfigDict(extra="forbid")

    ideas_per_cluster: int = Field(default=3, ge=1, le=20)
    in_article_images: int = Field(default=2, ge=0, le=10)
    target_cluster_size: int = Field(default=12, ge=2, le=500)
    clustering_backend: Literal["auto", "lexical", "semantic", "local"] = Field(
        default="auto",
        description="auto: semantic when the provider has embeddings, else lexical; local: bundled MiniLM model.",
    )
    taxonomy: Taxonomy | None = None
    prompts: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Prompt overrides: name -> {version, instructions}."
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-stage model overrides: stage -> {model, max_output_tokens, temperature}."
    )
    prices: dict[str, dict[str, float]] = Field(default_factory=dict, description="Per-model price overrides.")
    max_run_cost_usd: float | None = Field(default=None, ge=0, description="Budget cap for any run of this site.")
    triggers: list[TriggerRuleSettings] = Field(default_factory=list, description="Default regeneration rules.")


def site_settings(raw: Mapping[str, Any] | None) -> SiteSettings:
    """Validated settings of a site, defaults filled in."""
    return SiteSettings.model_validate(dict(raw or {}))
