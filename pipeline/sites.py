"""Sites: slug rules and the typed per-site settings stored as JSON on the site row.

Settings are validated wherever they are read (a settings file, the stored JSON): every number must be
finite (`NaN` and `Infinity` are refused, also inside free-form `models` and `prices`, because SQLite
and PostgreSQL store them differently or not at all), keys must not repeat, and every problem is named by
its path in the settings, e.g. `triggers[0].threshold`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anyascii import anyascii
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The Dagster dynamic partitions of sites (one per slug); Dagster stores partitions under this name.
SITES_PARTITION = "sites"

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


def slugify(text: str, max_length: int = 64, language: str | None = None) -> str:
    """Lowercase ASCII words joined by hyphens, e.g. `Cold Brew: Guide` -> `cold-brew-guide`.

    Letters of every script are transliterated (`Кофе в турке` -> `kofe-v-turke`, `コーヒーの淹れ方` ->
    `kohino-yan-re-fang`, each ideograph a word of its own); with a German `language` (`de`, `de-AT`)
    umlauts become `ae`/`oe`/`ue`, otherwise they lose their dots (`Über` -> `uber`). Characters that
    accent stripping (NFKD) already rendered are slugged exactly as before, so no ASCII or accented-Latin
    slug changes: slugs are partition keys and stored idea keys.
    """
    if language and language.split("-")[0].lower() == "de":
        text = unicodedata.normalize("NFC", text).translate(_GERMAN_LETTERS)
    ascii_text = "".join(_ascii_letters(char) for char in text)
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


_GERMAN_LETTERS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def _ascii_letters(char: str) -> str:
    """`char` as ASCII: its accent-stripped form when that keeps something, else, for a letter or digit,
    its transliteration (anyascii); punctuation and symbols accent stripping drops stay dropped."""
    if char.isascii():
        return char
    stripped = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
    if stripped or not unicodedata.category(char).startswith(("L", "N")):
        return stripped
    latin = anyascii(char)
    # Chinese and Japanese write no spaces: without a break per ideograph the slug is one long word.
    return f" {latin} " if unicodedata.name(char, "").startswith(("CJK UNIFIED", "CJK COMPATIBILITY")) else latin


# The longest wait a trigger rule may ask for after publication (10 years): longer is a typo, not a plan.
MAX_MIN_AGE_HOURS = 10 * 365 * 24
MAX_WINDOW_DAYS = 365  # trend rules compare windows of up to a year
# `value`: the newest value; `trend`: the last window against the one before; `since_publication`: the last
# window against the first after publication (pipeline.triggers).
RULE_KINDS = ("value", "trend", "since_publication")


class SiteSettingsError(ValueError):
    """Site settings that cannot be used; the message names where they came from and every problem."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, problems
        lines = problems if len(problems) == 1 else [f"{len(problems)} problems", *(f"  - {p}" for p in problems)]
        super().__init__(f"{where}: " + "\n".join(lines))


class Taxonomy(BaseModel):
    """The site's allowed categories and tags; generated ones are filtered against it when set."""

    model_config = ConfigDict(allow_inf_nan=False)
    categories: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class TriggerRuleSettings(BaseModel):
    """A default trigger rule for every published article of a site (set in site settings)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")
    comparison: Literal["<", "<=", ">", ">=", "=="]
    threshold: float
    min_age_hours: float = Field(default=0.0, ge=0, le=MAX_MIN_AGE_HOURS)
    instruction: str = ""
    kind: Literal["value", "trend", "since_publication"] = "value"
    window_days: int | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS)
    min_volume: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _window_of_kind(self) -> TriggerRuleSettings:
        if self.kind == "value" and self.window_days is not None:
            raise ValueError("window_days: only trend and since_publication rules have a window")
        if self.kind == "value" and self.min_volume:
            raise ValueError("min_volume: only trend and since_publication rules have a minimum volume")
        if self.kind != "value" and self.window_days is None:
            raise ValueError(f"window_days: a {self.kind} rule needs the number of days of its windows")
        if self.kind == "trend" and self.threshold < 0:
            raise ValueError("threshold: a trend rule's threshold is a share of the previous window (0 or more)")
        return self


ENV_VAR_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class EndpointSettings(BaseModel):
    """A site's endpoint for one kind of call (see `pipeline/llm/endpoints.py`); unset fields inherit."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "offline"] | None = None
    base_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    api_key_env: str | None = Field(default=None, pattern=ENV_VAR_PATTERN)


def known_timezone(name: str) -> str:
    """`name` if it is an IANA timezone this machine knows, else `ValueError` saying so."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}; use an IANA name such as 'Europe/Berlin'") from None
    return name


_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class WordPressSettings(BaseModel):
    """A WordPress site to publish to through its REST API, signed in with an application password.

    The password itself is never in settings: `password_env` names the environment variable that holds it.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://\S+$", description="The site (https://example.com), or its REST root.")
    username: str = Field(min_length=1, max_length=60)
    password_env: str = Field(pattern=ENV_VAR_PATTERN, description="Environment variable with the app password.")
    status: Literal["publish", "draft", "future"] = Field(
        default="publish",
        description="publish: live at its slot; draft: left for the team to publish in WordPress; "
        "future: sent ahead as a scheduled post that WordPress publishes at the slot.",
    )


class PublishingSettings(BaseModel):
    """Where a site's approved articles go: the folder export (on unless turned off) and WordPress."""

    model_config = ConfigDict(extra="forbid")

    folder: bool = True
    wordpress: WordPressSettings | None = None


class ScheduleSettings(BaseModel):
    """A publishing calendar: `per_day` slots a day at `times` (HH:MM) in `timezone`.

    Without `times`, the slots are spread evenly over 09:00-21:00; without `per_day`, every time is a slot.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    per_day: int | None = Field(default=None, ge=1, le=96)
    times: list[str] = Field(default_factory=list, max_length=96)
    timezone: str = "UTC"

    @field_validator("times")
    @classmethod
    def _clock_times(cls, times: list[str]) -> list[str]:
        bad = [t for t in times if not _CLOCK_TIME.match(t)]
        if bad:
            raise ValueError(f"times must be HH:MM on a 24-hour clock, e.g. '09:00' (got {bad[0]!r})")
        if len(set(times)) != len(times):
            raise ValueError("times must not repeat")
        return sorted(times)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        return known_timezone(name)

    @model_validator(mode="after")
    def _slots(self) -> ScheduleSettings:
        if self.per_day is None and not self.times:
            raise ValueError("give per_day, times or both")
        if self.per_day is not None and self.times and self.per_day != len(self.times):
            raise ValueError(f"per_day is {self.per_day} but {len(self.times)} times are given; give one or match")
        return self

    def daily_times(self) -> list[time]:
        """The day's slot times, earliest first."""
        if self.times:
            return [time.fromisoformat(t) for t in self.times]
        count = self.per_day or 1
        minutes = [9 * 60 + i * (12 * 60) // count for i in range(count)]
        return [time(m // 60, m % 60) for m in minutes]


# BCP 47 language tags as sites write them: `en`, `de`, `pt-BR`, `zh-Hant-TW`.
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"


class PersonSettings(BaseModel):
    """An author or publisher as schema.org describes them (`Person` / `Organization`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    logo_url: str | None = Field(default=None, pattern=r"^https?://\S+$", description="Publisher logo.")


class LinkSettings(BaseModel):
    """The site's internal link plan: how many siblings each article links to, and whether articles
    already written get a new version (through review) linking to articles written after them."""

    model_config = ConfigDict(extra="forbid")

    min_siblings: int = Field(default=2, ge=0, le=10)
    max_siblings: int = Field(default=4, ge=0, le=20)
    update_existing: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> LinkSettings:
        if self.max_siblings < self.min_siblings:
            raise ValueError(f"max_siblings ({self.max_siblings}) is below min_siblings ({self.min_siblings})")
        return self


class CheckSettings(BaseModel):
    """Thresholds of the content checks (asset checks on `content`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    meta_title_max: int = Field(default=60, ge=10, le=200)
    meta_description_min: int = Field(default=120, ge=0, le=500)
    meta_description_max: int = Field(default=155, ge=10, le=500)
    word_count_tolerance: float = Field(
        default=0.5, gt=0, le=5, description="Allowed share above or below the idea's estimated word count."
    )
    min_readability: float | None = Field(
        default=None, description="Lowest readability score (Flesch reading ease, per language) accepted."
    )
    near_duplicate_threshold: float = Field(
        default=0.8, gt=0, le=1, description="Similarity above which two articles of the site are near-duplicates."
    )


class ABTestSettings(BaseModel):
    """Time-split A/B tests of regenerated articles (`pipeline.experiments`, `docs/experiments.md`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=False, description="Publishing a regenerated article (A and B) starts a test.")
    period_days: int = Field(default=14, ge=1, le=90, description="Days each variant is live in turn.")
    max_days: int = Field(default=84, ge=2, le=730, description="Longest test; then 'no difference' is declared.")
    min_impressions: int = Field(default=1000, ge=1, description="Impressions each variant needs before a decision.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Confidence a winner needs, over all looks.")
    timezone: str = Field(
        default="America/Los_Angeles",
        description="Where a day starts for the periods: Search Console reports days in Pacific Time.",
    )
    switch_tolerance_minutes: int = Field(
        default=60, ge=0, le=720, description="A switch this late after its period boundary still counts as on time."
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        return known_timezone(name)

    @model_validator(mode="after")
    def _whole_cycles(self) -> ABTestSettings:
        if self.max_days < 2 * self.period_days:
            raise ValueError(
                f"max_days {self.max_days} is shorter than one A and one B period ({2 * self.period_days})"
            )
        return self


class BatchSettings(BaseModel):
    """When this site's model stages use the provider's Batch API (half price, answers within 24 hours)."""

    model_config = ConfigDict(extra="forbid")

    nightly: bool = Field(default=False, description="The nightly fill-in and backfills submit batches.")
    failed_lines: Literal["next_batch", "realtime"] = Field(
        default="next_batch",
        description="Where items whose batch line errored or failed validation go: the next batch, or real time.",
    )


class SiteSettings(BaseModel):
    """Per-site knobs, stored in `sites.settings`; unknown keys are rejected so typos surface."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    monthly_budget_usd: float | None = Field(
        default=None, ge=0, description="Spend cap per calendar month (UTC) across all runs and processes."
    )
    ideas_need_approval: bool = Field(
        default=False, description="New ideas wait as `proposed` until approved; only approved ideas get articles."
    )
    batch: BatchSettings = Field(default_factory=BatchSettings)
    triggers: list[TriggerRuleSettings] = Field(default_factory=list, description="Default regeneration rules.")
    endpoints: dict[Literal["text", "embeddings", "images"], EndpointSettings] = Field(
        default_factory=dict, description="Where this site's text, embeddings and images calls go."
    )
    publishing: PublishingSettings = Field(
        default_factory=PublishingSettings, description="Publishing targets: folder export, WordPress."
    )
    schedule: ScheduleSettings | None = Field(
        default=None, description="Publishing calendar; without one, approved articles are due at once."
    )
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="The site's public address: canonical URLs are base_url + article slug + '/'.",
    )
    language: str = Field(default="en", pattern=LANGUAGE_PATTERN, description="BCP 47 language of the site.")
    audience: str = Field(default="", max_length=500, description="Who the articles are written for.")
    voice: str = Field(default="", max_length=4000, description="A short style guide for the site's articles.")
    author: PersonSettings | None = None
    publisher: PersonSettings | None = None
    banned_phrases: list[str] = Field(default_factory=list, max_length=500)
    links: LinkSettings = Field(default_factory=LinkSettings)
    faq: bool = Field(default=False, description="Add an FAQ section from the cluster's question keywords.")
    table_of_contents: bool = Field(default=False, description="Add a table of contents to exported pages.")
    checks: CheckSettings = Field(default_factory=CheckSettings)
    ab_test: ABTestSettings = Field(default_factory=ABTestSettings)


def site_settings(raw: Mapping[str, Any] | None, where: str = "site settings") -> SiteSettings:
    """Validated settings of a site, defaults filled in; `SiteSettingsError` naming `where` and each problem."""
    return _validated(dict(raw or {}), where)


def parse_site_settings(text: str, where: str) -> SiteSettings:
    """Settings from JSON text (a settings file), validated as a whole; `where` names the source in errors."""

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise SiteSettingsError(where, [f"key {repeated[0]!r} appears twice in one object"])
        return dict(pairs)

    try:
        raw = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        problem = f"line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})"
        raise SiteSettingsError(where, [problem]) from None
    except RecursionError:
        raise SiteSettingsError(where, ["nested too deeply to be settings"]) from None
    if not isinstance(raw, dict):
        raise SiteSettingsError(where, [f"expected a JSON object {{...}}, got {type(raw).__name__}"])
    return _validated(raw, where)


def _validated(raw: dict[str, Any], where: str) -> SiteSettings:
    non_finite = dict(_non_finite(raw))
    problems = [
        f"{path or 'settings'}: {_json_number(value)} is not allowed, numbers must be finite"
        for path, value in non_finite.items()
    ]
    try:
        settings = SiteSettings.model_validate(raw)
    except ValidationError as error:
        problems += [
            text for path, text in (_describe(e) for e in error.errors(include_url=False)) if path not in non_finite
        ]
        raise SiteSettingsError(where, problems) from None
    if problems:
        raise SiteSettingsError(where, problems)
    return settings


def _non_finite(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every NaN or infinite number in a JSON value, with its path (`triggers[0].threshold`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _non_finite(item, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _non_finite(item, f"{path}[{index}]")]
    return []


def _json_number(value: float) -> str:
    """A non-finite number as JSON spells it (`1e999` reads as Infinity)."""
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    """A pydantic error as (path, `path: message (got value)`)."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    shown = repr(error["input"]) if not isinstance(error["input"], dict | list) else ""
    return path, f"{path or 'settings'}: {error['msg']}" + (f" (got {shown})" if shown and len(shown) <= 80 else "")
