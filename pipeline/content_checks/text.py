"""Content checks: SEO and quality rules every current article of a site is held to.

One function per check, each taking the site's current variants (every variant of each article's newest
version: the version under review, or the published one until it is regenerated) and the site's settings,
and returning a `CheckOutcome`: passed or not, and every failing variant with the number measured and the
limit it broke ("meta title 72 > 60 chars"). `run_checks` reads a site from the store (one query for the
variants, one for their images) and runs them all. Dagster shows them as asset checks on `content`
(`assets/content_checks.py`); nothing here knows Dagster.
"""

from __future__ import annotations

import hashlib
import re
import threading
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.article_html import plain_text
from pipeline.keywords.validation import normalize_keyword
from pipeline.sites import SiteSettings, slugify
from pipeline.store import Store
from pipeline.store.checks import CheckedImage, CheckedVariant
from pipeline.urls import article_url


@dataclass(frozen=True)
class CheckedArticle:
    """One variant as the checks see it: its text, its article's slug and idea estimate, and its images."""

    content_id: int
    variant: str
    version: int
    slug: str
    title: str
    body_html: str
    meta_title: str
    meta_description: str
    primary_keyword: str
    word_count: int
    estimated_word_count: int
    images: tuple[CheckedImage, ...] = ()

    @property
    def label(self) -> str:
        """`#12 A`: the article number and variant letter, as every listing names it."""
        return f"#{self.content_id} {self.variant}"


@dataclass(frozen=True)
class CheckFailure:
    """One variant that failed a check: what was measured, against which limit."""

    content_id: int
    variant: str
    title: str
    detail: str  # e.g. "meta title 72 > 60 chars"
    measured: float | None = None
    limit: str | None = None

    def line(self) -> str:
        """`#12 A "Cold brew guide": meta title 72 > 60 chars` (plain text: escape it before rendering)."""
        return f'#{self.content_id} {self.variant} "{self.title}": {self.detail}'


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check over a site's current variants."""

    name: str
    description: str
    failures: list[CheckFailure]
    total: int  # variants checked
    notes: dict[str, Any] = field(default_factory=dict)  # what the check measured overall (mean score, ...)
    error: str | None = None  # the check itself could not run (it fails, naming why)

    @property
    def passed(self) -> bool:
        """The check ran and no variant failed."""
        return not self.failures and self.error is None

    @property
    def failing_articles(self) -> int:
        """Distinct variants with at least one failure."""
        return len({(f.content_id, f.variant) for f in self.failures})

    @property
    def pass_count(self) -> int:
        """Variants that passed."""
        return self.total - self.failing_articles

    def summary(self) -> str:
        """`meta_lengths: 18/20 passed` (or why the check could not run)."""
        if self.error is not None:
            return f"{self.name}: could not run ({self.error})"
        return f"{self.name}: {self.pass_count}/{self.total} passed"


CheckFunction = Callable[[Sequence[CheckedArticle], SiteSettings], CheckOutcome]


@dataclass(frozen=True)
class ContentCheck:
    """A registered check: its name (the asset check's name), what it proves, and its function."""

    name: str
    description: str
    run: CheckFunction


CHECKS: dict[str, ContentCheck] = {}


def _check(name: str, description: str) -> Callable[[CheckFunction], CheckFunction]:
    def register(function: CheckFunction) -> CheckFunction:
        CHECKS[name] = ContentCheck(name, description, function)
        return function

    return register


def _outcome(name: str, articles: Sequence[CheckedArticle], failures: list[CheckFailure], **notes: Any) -> CheckOutcome:
    return CheckOutcome(name, CHECKS[name].description, failures, len(articles), dict(notes))


def _failure(
    article: CheckedArticle, detail: str, measured: float | None = None, limit: str | None = None
) -> CheckFailure:
    return CheckFailure(article.content_id, article.variant, article.title, detail, measured, limit)


# --- keyword placement ------------------------------------------------------------------------------------

_FIRST_PARAGRAPH = re.compile(r"<p[^>]*>(.*?)</p>", re.IGNORECASE | re.DOTALL)


def first_paragraph(body_html: str) -> str:
    """The plain text of the body's first `<p>` (or of the whole intro before the first `<h2>`)."""
    found = _FIRST_PARAGRAPH.search(body_html)
    return plain_text(found.group(1) if found else body_html.split("<h2", 1)[0])


def _contains_phrase(text: str, phrase: str) -> bool:
    """Whether normalised `phrase` occurs in normalised `text` as whole words."""
    return _phrase_pattern(normalize_keyword(phrase)).search(normalize_keyword(text)) is not None


@lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(word) for word in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


@_check(
    "keyword_placement",
    "The primary keyword (normalised: case, Unicode form, spacing) appears in the title, the first paragraph "
    "and the meta title of every current variant.",
)
def keyword_placement(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Primary keyword in title, first paragraph and meta title."""
    failures = []
    for article in articles:
        keyword = normalize_keyword(article.primary_keyword)
        places = {
            "title": article.title,
            "first paragraph": first_paragraph(article.body_html),
            "meta title": article.meta_title,
        }
        missing = [place for place, text in places.items() if not keyword or not _contains_phrase(text, keyword)]
        if missing:
            detail = f"primary keyword '{article.primary_keyword}' missing from {', '.join(missing)}"
            failures.append(_failure(article, detail, len(places) - len(missing), f"{len(places)} of {len(places)}"))
    return _outcome("keyword_placement", articles, failures)


# --- meta lengths -----------------------------------------------------------------------------------------


@_check(
    "meta_lengths",
    "Meta title at most `checks.meta_title_max` characters (60) and meta description between "
    "`checks.meta_description_min` and `checks.meta_description_max` (120-155).",
)
def meta_lengths(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Meta title and description lengths against the site's limits."""
    limits = settings.checks
    failures = []
    for article in articles:
        title, description = len(article.meta_title), len(article.meta_description)
        if title > limits.meta_title_max:
            detail = f"meta title {title} > {limits.meta_title_max} chars"
            failures.append(_failure(article, detail, title, f"<= {limits.meta_title_max}"))
        if not limits.meta_description_min <= description <= limits.meta_description_max:
            sign, bound = (
                ("<", limits.meta_description_min)
                if description < limits.meta_description_min
                else (">", limits.meta_description_max)
            )
            band = f"{limits.meta_description_min}-{limits.meta_description_max}"
            failures.append(
                _failure(article, f"meta description {description} {sign} {bound} chars", description, band)
            )
    return _outcome("meta_lengths", articles, failures)


# --- word count -------------------------------------------------------------------------------------------


@_check(
    "word_count_band",
    "Word count within the idea's estimated word count ± `checks.word_count_tolerance` (a share, 0.5 = 50%).",
)
def word_count_band(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Each variant's word count against its idea's estimate ± tolerance."""
    tolerance = settings.checks.word_count_tolerance
    failures = []
    for article in articles:
        estimate = article.estimated_word_count
        if estimate <= 0:
            continue
        low, high = round(estimate * max(1 - tolerance, 0)), round(estimate * (1 + tolerance))
        words = article.word_count
        if not low <= words <= high:
            sign, bound = ("<", low) if words < low else (">", high)
            detail = f"{words} words {sign} {bound} (estimate {estimate} ± {tolerance:.0%})"
            failures.append(_failure(article, detail, words, f"{low}-{high}"))
    return _outcome("word_count_band", articles, failures, tolerance=tolerance)


# --- readability ------------------------------------------------------------------------------------------

# Languages whose Flesch reading ease has its own constants in textstat (Amstad for German, Fernández
# Huerta for Spanish, Kandel-Moles for French, Flesch-Vacca for Italian, Douma for Dutch, Oborneva for
# Russian); other languages are not scored rather than scored with the English formula.
READABILITY_LANGUAGES = {"en", "de", "es", "fr", "it", "nl", "ru"}
_textstat_lock = threading.Lock()


@lru_cache(maxsize=16)
def _scorer(language: str) -> Any:
    with warnings.catch_warnings():
        # textstat 0.7.4 imports `pkg_resources`, which setuptools 80 marks deprecated (pinned <81 for it).
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from textstat.textstat import textstatistics
    scorer = textstatistics()
    scorer.set_lang(language)  # a scorer per language: textstat's module-level one is global state
    return scorer


def readability_language(language: str) -> str | None:
    """The textstat language for a site's BCP 47 tag (`de-AT` -> `de`), or None if it has no formula."""
    root = language.split("-")[0].lower()
    return root if root in READABILITY_LANGUAGES else None


def readability_score(text: str, language: str) -> float | None:
    """Flesch reading ease of plain `text` with the formula of `language` (None: no formula for it)."""
    lang = readability_language(language)
    if lang is None or not text.strip():
        return None
    with _textstat_lock:  # textstat caches per instance, not thread-safe
        return float(_scorer(lang).flesch_reading_ease(text))


@_check(
    "readability",
    "Flesch reading ease of the body, with the formula of the site's language (textstat), at least "
    "`checks.min_readability`; without a minimum the scores are reported and the check passes.",
)
def readability(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Readability per variant with the site language's formula, against `min_readability` when set."""
    minimum = settings.checks.min_readability
    language = readability_language(settings.language)
    failures, scores = [], []
    for article in articles:
        score = readability_score(plain_text(article.body_html), settings.language)
        if score is None:
            continue
        scores.append(score)
        if minimum is not None and score < minimum:
            failures.append(_failure(article, f"readability {score:.1f} < {minimum:g}", score, f">= {minimum:g}"))
    notes: dict[str, Any] = {
        "formula": f"flesch_reading_ease ({language})" if language else "none",
        "scored": len(scores),
    }
    if scores:
        notes |= {"mean_score": round(sum(scores) / len(scores), 1), "lowest_score": round(min(scores), 1)}
    if language is None:
        notes["not_scored"] = f"no readability formula for language {settings.language!r}"
    return _outcome("readability", articles, failures, **notes)


# --- internal links ---------------------------------------------------------------------------------------

_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


def internal_hrefs(body_html: str, base_url: str | None) -> list[str]:
    """Hrefs of the body that point into the site: starting with `base_url`, or root-relative (`/slug/`)."""
    base = base_url.rstrip("/") if base_url else None
    found = []
    for href in _HREF.findall(body_html):
        href = href.strip()
        root_relative = href.startswith("/") and not href.startswith("//")
        if root_relative or (base and (href == base or href.startswith(base + "/"))):
            found.append(href)
    return found


def _article_urls(slug: str, base_url: str | None) -> set[str]:
    return {f"/{slug}/", *([article_url(base_url, slug)] if base_url else [])}


def _without_fragment(href: str) -> str:
    return href.split("#", 1)[0].split("?", 1)[0]


@_check(
    "internal_links",
    "At least `links.min_siblings` internal links (to the site's base_url or root-relative) per variant "
    "(fewer when the site has fewer other articles), and none broken: every internal link is the URL of an "
    "article of the site (or the site's home page).",
)
def internal_links(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Internal link count against the link plan's minimum, and no link to a URL that is no article."""
    known = {"/", *([settings.base_url.rstrip("/"), settings.base_url.rstrip("/") + "/"] if settings.base_url else [])}
    for article in articles:
        known |= _article_urls(article.slug, settings.base_url)
    others = len({a.content_id for a in articles}) - 1
    required = min(settings.links.min_siblings, max(others, 0))
    failures, links_total = [], 0
    for article in articles:
        hrefs = internal_hrefs(article.body_html, settings.base_url)
        links_total += len(hrefs)
        broken = sorted({href for href in hrefs if _without_fragment(href) not in known})
        if len(hrefs) < required:
            failures.append(
                _failure(article, f"{len(hrefs)} internal links < {required}", len(hrefs), f">= {required}")
            )
        if broken:
            shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
            failures.append(_failure(article, f"{len(broken)} broken internal links: {shown}", len(broken), "0"))
    return _outcome("internal_links", articles, failures, required_links=required, internal_links=links_total)


# --- image alt text ---------------------------------------------------------------------------------------


@_check(
    "image_alt_text",
    "Every image prompt of a variant has non-empty alt text and its image file exists; variants whose image "
    "prompts are not written yet are counted as not illustrated, not as failures.",
)
def image_alt_text(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Alt text on every image, and every image rendered."""
    failures, not_illustrated, images = [], 0, 0
    for article in articles:
        if not article.images:
            not_illustrated += 1
            continue
        images += len(article.images)
        no_alt = [i for i in article.images if not i.alt_text.strip()]
        missing = [i for i in article.images if i.path is None or not Path(i.path).is_file()]
        if no_alt:
            detail = f"{len(no_alt)} of {len(article.images)} images without alt text"
            failures.append(_failure(article, detail, len(no_alt), "0"))
        if missing:
            detail = f"{len(missing)} of {len(article.images)} images missing"
            failures.append(_failure(article, detail, len(missing), "0"))
    return _outcome("image_alt_text", articles, failures, images=images, not_illustrated=not_illustrated)


# --- banned phrases ---------------------------------------------------------------------------------------


@_check(
    "banned_phrases",
    "None of the site's `banned_phrases` (case-insensitive, as whole words) in the title, meta title, meta "
    "description or body text.",
)
def banned_phrases(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Banned phrases in title, meta and body text."""
    phrases = [p for p in dict.fromkeys(normalize_keyword(p) for p in settings.banned_phrases) if p]
    failures = []
    for article in articles if phrases else ():
        text = normalize_keyword(
            " ".join([article.title, article.meta_title, article.meta_description, plain_text(article.body_html)])
        )
        hits = {p: len(_phrase_pattern(p).findall(text)) for p in phrases}
        hits = {p: n for p, n in hits.items() if n}
        if hits:
            shown = ", ".join(f"'{p}' ×{n}" for p, n in hits.items())
            failures.append(_failure(article, f"banned phrases: {shown}", sum(hits.values()), "0"))
    return _outcome("banned_phrases", articles, failures, phrases=len(phrases))


# --- near duplicates --------------------------------------------------------------------------------------

SHINGLE_WORDS = 5
MINHASH_PERMUTATIONS = 128
_WORD = re.compile(r"\w+")
_SHINGLE_BASE = np.uint64(1099511628211)  # FNV prime: 5 word hashes folded into one shingle hash


@lru_cache(maxsize=1 << 17)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> np.ndarray:
    """The sorted, distinct 64-bit hashes of the `size`-word shingles of `text` (lowercased words); a text
    of `size` words or fewer is one shingle. Folded from word hashes with numpy: no string per shingle."""
    found = _WORD.findall(text.lower())
    if not found:
        return np.empty(0, dtype=np.uint64)
    ids = np.fromiter((_word_hash(w) for w in found), dtype=np.uint64, count=len(found))
    count = max(len(ids) - size + 1, 1)
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(min(size, len(ids))):
        hashes = hashes * _SHINGLE_BASE + ids[offset : offset + count]  # wraps modulo 2^64, as intended
    return np.unique(hashes)


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two sorted distinct hash arrays (0 for two empty ones)."""
    common = np.intersect1d(first, second, assume_unique=True).size
    union = first.size + second.size - common
    return common / union if union else 0.0


_rng = np.random.default_rng(20261201)  # fixed: signatures are comparable across runs
_A = _rng.integers(1, 1 << 63, size=MINHASH_PERMUTATIONS, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 1 << 63, size=MINHASH_PERMUTATIONS, dtype=np.uint64)


def minhash(hashes: np.ndarray) -> np.ndarray:
    """The MinHash signature (`MINHASH_PERMUTATIONS` values) of a set of 64-bit shingle hashes."""
    if hashes.size == 0:
        return np.full(MINHASH_PERMUTATIONS, np.iinfo(np.uint64).max, dtype=np.uint64)
    # Multiply-shift hashing, one odd multiplier per permutation (uint64 arithmetic wraps modulo 2^64).
    values = (_A[:, None] * hashes[None, :] + _B[:, None]) >> np.uint64(32)
    return values.min(axis=1)  # type: ignore[no-any-return]


def lsh_rows(threshold: float) -> int:
    """Signature rows per LSH band: 4 (32 bands: a pair with a Jaccard of 0.6 is a candidate with
    probability 0.98, 0.8: >0.999) for thresholds from 0.5, else 2 (64 bands) so low thresholds keep recall."""
    return 4 if threshold >= 0.5 else 2


def near_duplicate_pairs(texts: Mapping[int, str], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs of keys whose texts have a 5-word-shingle Jaccard similarity of at least `threshold`.

    MinHash signatures banded into buckets (LSH) find the candidate pairs in about linear time, so a site of
    a few thousand articles is compared without measuring every pair; each candidate's exact Jaccard decides.
    """
    sets = {key: shingle_hashes(text) for key, text in texts.items()}
    keys = [key for key, found in sets.items() if found.size]
    signatures = {key: minhash(sets[key]) for key in keys}
    rows = lsh_rows(threshold)
    candidates: set[tuple[int, int]] = set()
    for band in range(MINHASH_PERMUTATIONS // rows):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for key in keys:
            buckets[signatures[key][band * rows : (band + 1) * rows].tobytes()].append(key)
        for members in buckets.values():
            candidates.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    pairs = [(a, b, jaccard(sets[a], sets[b])) for a, b in candidates]
    return sorted((p for p in pairs if p[2] >= threshold), key=lambda p: (-p[2], p[0], p[1]))


@_check(
    "near_duplicates",
    "No two articles of the site are near-duplicates: Jaccard similarity of their 5-word shingles (MinHash "
    "with LSH to find candidates) below `checks.near_duplicate_threshold` (0.8). A and B of one article are "
    "not compared with each other.",
)
def near_duplicates(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Pairs of different articles whose text is nearly the same."""
    threshold = settings.checks.near_duplicate_threshold
    by_index = dict(enumerate(articles))
    texts = {i: f"{a.title} {plain_text(a.body_html)}" for i, a in by_index.items()}
    failures, pairs = [], 0
    for first, second, similarity in near_duplicate_pairs(texts, threshold):
        one, other = by_index[first], by_index[second]
        if one.content_id == other.content_id:
            continue
        pairs += 1
        for article, twin in ((one, other), (other, one)):
            detail = f'similarity {similarity:.2f} >= {threshold:g} with {twin.label} "{twin.title}"'
            failures.append(_failure(article, detail, round(similarity, 4), f"< {threshold:g}"))
    return _outcome("near_duplicates", articles, failures, pairs=pairs, threshold=threshold)


# --- running them -----------------------------------------------------------------------------------------


def article_slugs(rows: Sequence[CheckedVariant]) -> dict[int, str]:
    """content id -> slug, by the rule of `pipeline.review.load_article`: the idea key, with the article id
    appended when an older article of the site has the same key."""
    first_with_key: dict[str, int] = {}
    for content_id, key in sorted({(row.variant.content_id, row.idea_key) for row in rows}):
        first_with_key.setdefault(key, content_id)
    slugs = {}
    for content_id, key in {(row.variant.content_id, row.idea_key) for row in rows}:
        slug = slugify(key, max_length=120) or f"article-{content_id}"
        slugs[content_id] = slug if first_with_key[key] == content_id else f"{slug}-{content_id}"
    return slugs


def checked_articles(rows: Sequence[CheckedVariant], images: Sequence[CheckedImage]) -> list[CheckedArticle]:
    """The checks' view of a site's current variants and their images."""
    slugs = article_slugs(rows)
    by_variant: dict[int, list[CheckedImage]] = defaultdict(list)
    for image in images:
        by_variant[image.variant_id].append(image)
    return [
        CheckedArticle(
            content_id=v.content_id,
            variant=v.variant,
            version=v.version,
            slug=slugs[v.content_id],
            title=v.title,
            body_html=v.body_html,
            meta_title=v.meta_title,
            meta_description=v.meta_description,
            primary_keyword=v.primary_keyword,
            word_count=v.word_count,
            estimated_word_count=row.estimated_word_count,
            images=tuple(by_variant.get(v.id, ())),
        )
        for row in rows
        for v in [row.variant]
    ]


def check_articles(articles: Sequence[CheckedArticle], settings: SiteSettings) -> list[CheckOutcome]:
    """Every registered check over `articles`, in registry order.

    A check that raises is reported as failed with its error: the articles are saved by then, and one
    broken check (or library) must not hide the others' results or fail the step."""
    outcomes = []
    for check in CHECKS.values():
        try:
            outcomes.append(check.run(articles, settings))
        except Exception as error:
            message = f"{type(error).__name__}: {error}"[:500]
            outcomes.append(CheckOutcome(check.name, check.description, [], len(articles), error=message))
    return outcomes


def run_checks(store: Store, site_id: int, settings: SiteSettings) -> list[CheckOutcome]:
    """Every content check over the current variants of site `site_id`; two queries whatever the number
    of articles (variants with their idea, then every image prompt with its file)."""
    articles = checked_articles(store.variants_for_checks(site_id), store.images_for_checks(site_id))
    return check_articles(articles, settings)
