"""The review gate: an article's status machine, and publishing the chosen variant to a folder.

    draft --approve--> approved --publish--> published
    draft | approved --reject (with a note)--> draft
    published --> draft only when the article is regenerated (new versions), never from here

Every transition is a compare-and-set on the stored status together with a `review_events` row, in one
transaction (`Store.transition_content`). Approve and publish act on a variant of the current (highest)
version. Publishing exports that variant to `<publish dir>/<site>/<article>/` (`index.html`, `index.md`
with YAML front matter, `images/`): written into a hidden sibling folder, swapped in, and only then is the
status committed, so a failed export leaves the article `approved` and any earlier export untouched.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import yaml

from pipeline.article_html import plain_text
from pipeline.keywords import normalize_keyword
from pipeline.models import Content, ContentVariant, Idea, Image, ImagePrompt, ReviewEvent, Site, utcnow
from pipeline.output_safety import html_to_markdown
from pipeline.sites import slugify
from pipeline.store import Store

DRAFT, APPROVED, PUBLISHED = "draft", "approved", "published"
STATUSES = (DRAFT, APPROVED, PUBLISHED)
VARIANTS = ("A", "B")
DEFAULT_VARIANT = "A"

# What the review gate may do from each status, and where it leads.
ACTIONS: dict[str, dict[str, str]] = {
    DRAFT: {"approve": APPROVED, "reject": DRAFT},
    APPROVED: {"publish": PUBLISHED, "reject": DRAFT},
    PUBLISHED: {},
}

_H2 = re.compile(r"<h2\b[^>]*>(.*?)</h2>", re.IGNORECASE | re.DOTALL)
_QUOTED_SCALAR = re.compile(r'"(?:[^"\\]|\\.)*"')


class ReviewError(Exception):
    """A review action that cannot be done; the message names the article and says what to do instead."""


class UnknownContent(ReviewError, LookupError):
    """No article with this id."""

    def __init__(self, content_id: int):
        super().__init__(f"content {content_id} does not exist; see: pipeline review list")
        self.content_id = content_id


class InvalidTransition(ReviewError):
    """The action is not allowed from the article's current status (or it changed meanwhile)."""


class PublishError(ReviewError):
    """Publishing cannot export the variant (missing images, unknown variant...); nothing was changed."""


@dataclass(frozen=True)
class ReviewItem:
    """One line of the review queue."""

    id: int
    site: str
    title: str
    status: str
    version: int
    variants: tuple[str, ...]
    updated_at: datetime
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (`updated` as ISO 8601)."""
        return {
            "id": self.id,
            "site": self.site,
            "title": self.title,
            "status": self.status,
            "version": self.version,
            "variants": list(self.variants),
            "updated": self.updated_at.isoformat(),
            "note": self.note,
        }


@dataclass(frozen=True)
class Article:
    """An article as the review gate sees it: its row, site, idea and every variant, newest version first."""

    content: Content
    site: Site
    idea: Idea
    variants: list[ContentVariant]
    slug: str

    @property
    def version(self) -> int:
        """The current (highest) version; 0 if the article has no variant at all."""
        return self.variants[0].version if self.variants else 0

    @property
    def current_variants(self) -> list[ContentVariant]:
        """The variants of the current version, A first."""
        return [v for v in self.variants if v.version == self.version]

    def variant(self, letter: str) -> ContentVariant:
        """The current version's variant `letter`, or `PublishError` naming the variants that exist."""
        for candidate in self.current_variants:
            if candidate.variant == letter:
                return candidate
        have = ", ".join(v.variant for v in self.current_variants) or "none"
        raise PublishError(
            f"content {self.content.id} version {self.version} has no variant {letter} (variants: {have}); "
            "variant B exists only after a regeneration"
        )


@dataclass(frozen=True)
class ArticleImage:
    """An image of the exported variant: its prompt, its stored file and its name in the export."""

    prompt: ImagePrompt
    image: Image
    name: str

    @property
    def src(self) -> str:
        """Path relative to the exported `index.html` / `index.md`."""
        return f"images/{self.name}"


@dataclass(frozen=True)
class Transition:
    """A status change the gate made."""

    content_id: int
    from_status: str
    to_status: str
    version: int
    variant: str | None
    actor: str
    note: str | None = None


@dataclass(frozen=True)
class Publication:
    """Where a published article went and what was written."""

    content_id: int
    site: str
    slug: str
    version: int
    variant: str
    published_at: datetime
    folder: Path
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class ArticleReview:
    """Everything `review show` prints: the article, the variant shown, its images and the history."""

    article: Article
    variant: ContentVariant
    images: list[tuple[ImagePrompt, Image | None]]
    events: list[ReviewEvent]


def default_actor() -> str:
    """Who acts from the command line: `cli:$USER` (else the login name, else `cli:unknown`)."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (OSError, KeyError):  # no USER and no passwd entry, e.g. an arbitrary uid in a container
        user = "unknown"
    return f"cli:{user}"


def review_list(store: Store, *, site: str | None = None, status: str | None = None) -> list[ReviewItem]:
    """The review queue: every article (optionally of one site and/or status) with its current version."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"unknown status {status!r}; use one of: {', '.join(STATUSES)}")
    site_id = store.site(site).id if site else None
    items = []
    for content, slug, variants in store.review_queue(site_id=site_id, status=status):
        items.append(
            ReviewItem(
                id=content.id,
                site=slug,
                title=variants[0].title if variants else "",
                status=content.status,
                version=variants[0].version if variants else 0,
                variants=tuple(v.variant for v in variants),
                updated_at=content.updated_at,
                note=content.review_note,
            )
        )
    return items


def load_article(store: Store, content_id: int) -> Article:
    """The article with this id, or `UnknownContent`."""
    found = store.review_article(content_id)
    if found is None:
        raise UnknownContent(content_id)
    content, site, idea, variants = found
    # The folder is named by the idea's key (stable across regenerations, unlike the title); the rare
    # article whose key an older article of the site already uses gets its id appended.
    slug = slugify(idea.key, max_length=120) or f"article-{content.id}"
    if store.has_earlier_article_with_idea_key(site.id, idea.key, content.id):
        slug = f"{slug}-{content.id}"
    return Article(content=content, site=site, idea=idea, variants=variants, slug=slug)


def show(store: Store, content_id: int, *, variant: str = DEFAULT_VARIANT) -> ArticleReview:
    """An article with one variant of its current version, that variant's images and the review history."""
    article = load_article(store, content_id)
    chosen = article.variant(_variant_letter(variant))
    return ArticleReview(
        article=article,
        variant=chosen,
        images=store.variant_images(chosen.id),
        events=store.review_events(content_id),
    )


def approve(store: Store, content_id: int, *, variant: str | None = None, actor: str | None = None) -> Transition:
    """draft -> approved, for one variant of the current version (default A); clears the last rejection note."""
    article = load_article(store, content_id)
    _check_allowed(article, "approve")
    chosen = article.variant(_variant_letter(variant or DEFAULT_VARIANT))
    return _transition(
        store,
        article,
        "approve",
        version=chosen.version,
        variant=chosen.variant,
        actor=actor,
        changes={"review_note": None},
    )


def reject(store: Store, content_id: int, *, note: str, actor: str | None = None) -> Transition:
    """draft | approved -> draft with a note saying what to change (required; stored on the article)."""
    article = load_article(store, content_id)
    _check_allowed(article, "reject")
    note = (note or "").strip()
    if not note:
        raise InvalidTransition(f"content {content_id}: a rejection needs a note saying what to change (--note TEXT)")
    return _transition(
        store,
        article,
        "reject",
        version=article.version,
        variant=None,
        actor=actor,
        note=note,
        changes={"review_note": note},
    )


def publish(
    store: Store, content_id: int, publish_root: Path, *, variant: str | None = None, actor: str | None = None
) -> Publication:
    """approved -> published: export the variant to `<publish_root>/<site>/<article>/`, then commit the status.

    The variant defaults to the one approved. Every image of the variant must exist on disk with its
    recorded checksum. If anything fails, the status stays `approved` and an earlier export is kept.
    """
    article = load_article(store, content_id)
    _check_allowed(article, "publish")
    chosen = article.variant(_publish_variant(store, article, variant))
    images = _export_images(store, article, chosen)
    published_at = utcnow().replace(microsecond=0)
    target = Path(publish_root) / article.site.slug / article.slug

    def write(folder: Path) -> None:
        _write_export(folder, article, chosen, images, published_at)

    previous = _write_and_swap(target, write)
    try:
        moved = store.transition_content(
            content_id,
            APPROVED,
            PUBLISHED,
            actor=actor or default_actor(),
            version=chosen.version,
            variant=chosen.variant,
            changes={
                "published_at": published_at,
                "published_version": chosen.version,
                "published_variant": chosen.variant,
            },
        )
    except BaseException:
        _restore(target, previous)
        raise
    if not moved:
        _restore(target, previous)
        raise _changed_meanwhile(article, "publish")
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return Publication(
        content_id=content_id,
        site=article.site.slug,
        slug=article.slug,
        version=chosen.version,
        variant=chosen.variant,
        published_at=published_at,
        folder=target,
        files=sorted(path for path in target.rglob("*") if path.is_file()),
    )


def article_markdown(body_html: str) -> str:
    """An article body as Markdown (`## ` headings, `-` bullets), model text escaped and links filtered.

    The stored body is sanitised HTML, but its text may spell out `<script>`: `html_to_markdown` keeps
    such text text, and only http(s), mailto and relative links (`pipeline.output_safety`).
    """
    return html_to_markdown(body_html)


def render_html(variant: ContentVariant, images: Sequence[ArticleImage]) -> str:
    """A complete minimal HTML5 document: title, meta description, featured image, body with its images."""
    featured, body = _body_with_images(variant, images)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html>",
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(variant.meta_title or variant.title)}</title>",
            f'<meta name="description" content="{escape(variant.meta_description)}">',
            "</head>",
            "<body>",
            "<article>",
            f"<h1>{escape(variant.title)}</h1>",
            featured,
            body,
            "</article>",
            "</body>",
            "</html>",
            "",
        ]
    )


def render_markdown(front_matter: Mapping[str, Any], variant: ContentVariant, images: Sequence[ArticleImage]) -> str:
    """YAML front matter, then the featured image and the body as Markdown with each image after its H2."""
    featured, body = _body_with_images(variant, images)
    matter = yaml.dump(
        {key: _quoted(value) for key, value in front_matter.items()},
        Dumper=_FrontMatterDumper,
        sort_keys=False,
        allow_unicode=True,
        width=1_000_000,
    )
    # Only double-quoted scalars can hold `<` or `[`; as YAML escapes they keep the front matter inert even
    # where a renderer without front-matter support shows it as Markdown.
    matter = _QUOTED_SCALAR.sub(lambda scalar: scalar.group(0).replace("<", "\\x3C").replace("[", "\\x5B"), matter)
    markdown = article_markdown("\n".join([featured, body]))
    return f"---\n{matter}---\n\n{markdown}\n"


# -- transitions ------------------------------------------------------------------------------------


def _variant_letter(letter: str) -> str:
    letter = letter.strip().upper()
    if letter not in VARIANTS:
        raise ReviewError(f"unknown variant {letter!r}; use one of: {', '.join(VARIANTS)}")
    return letter


def _check_allowed(article: Article, action: str) -> None:
    content = article.content
    if content.regeneration_run_id:
        raise InvalidTransition(
            f"content {content.id} is being regenerated by run {content.regeneration_run_id}; "
            "review it once the run has finished"
        )
    if action in ACTIONS.get(content.status, {}):
        return
    if not article.variants:
        raise InvalidTransition(f"content {content.id} has no variants to review")
    raise InvalidTransition(f"content {content.id} is '{content.status}': cannot {action}; {_allowed(content.status)}")


def _allowed(status: str) -> str:
    allowed = ACTIONS.get(status, {})
    if allowed:
        return "allowed: " + ", ".join(allowed)
    if status == PUBLISHED:
        return "nothing is allowed: a published article returns to draft only when it is regenerated"
    return "nothing is allowed from this status"


def _changed_meanwhile(article: Article, action: str) -> InvalidTransition:
    return InvalidTransition(
        f"content {article.content.id} changed while you tried to {action} it (it was '{article.content.status}'); "
        f"look again with: pipeline review show {article.content.id}"
    )


def _transition(
    store: Store,
    article: Article,
    action: str,
    *,
    version: int,
    variant: str | None,
    actor: str | None,
    note: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Transition:
    to_status = ACTIONS[article.content.status][action]
    actor = actor or default_actor()
    moved = store.transition_content(
        article.content.id,
        article.content.status,
        to_status,
        actor=actor,
        version=version,
        variant=variant,
        note=note,
        changes=changes,
    )
    if not moved:
        raise _changed_meanwhile(article, action)
    return Transition(article.content.id, article.content.status, to_status, version, variant, actor, note)


def _publish_variant(store: Store, article: Article, requested: str | None) -> str:
    """The variant to publish: the one approved for the current version, unless the request contradicts it."""
    approval = next((e for e in reversed(store.review_events(article.content.id)) if e.to_status == APPROVED), None)
    if approval is None or approval.variant is None:
        # Approved without a recorded variant (e.g. set outside the gate): fall back to the default.
        return _variant_letter(requested or DEFAULT_VARIANT)
    if approval.version != article.version:
        raise PublishError(
            f"content {article.content.id} was approved at version {approval.version} but its current version is "
            f"{article.version}; reject it and approve the current version"
        )
    if requested is not None and (letter := _variant_letter(requested)) != approval.variant:
        raise PublishError(
            f"content {article.content.id} was approved as variant {approval.variant}, not {letter}; "
            f"publish variant {approval.variant}, or reject it and approve variant {letter}"
        )
    return approval.variant


# -- export -----------------------------------------------------------------------------------------


def _export_images(store: Store, article: Article, variant: ContentVariant) -> list[ArticleImage]:
    """The variant's images with their export names; `PublishError` unless every file is on disk."""
    where = f"content {article.content.id} version {variant.version} variant {variant.variant}"
    materialize = (
        f"materialize image_prompts and images for site '{article.site.slug}' first: dagster asset materialize "
        f"-m pipeline.definitions --select image_prompts,images --partition {article.site.slug}"
    )
    rows = store.variant_images(variant.id)
    if not any(prompt.kind == "featured" for prompt, _ in rows):
        raise PublishError(f"{where} has no image prompts yet; {materialize}")
    missing = [prompt for prompt, image in rows if image is None or not Path(image.path).is_file()]
    if missing:
        names = ", ".join(
            f"{p.kind} {p.position}" + (f" ('{p.anchor_heading}')" if p.anchor_heading else "") for p in missing
        )
        raise PublishError(f"{where}: {len(missing)} of {len(rows)} images are missing ({names}); {materialize}")
    exported, section = [], 0
    for prompt, image in rows:
        if prompt.kind == "featured":
            name = "featured"
        else:
            section += 1
            name = f"section-{section}"
        exported.append(ArticleImage(prompt=prompt, image=image, name=name + (Path(image.path).suffix or ".png")))
    return exported


def _front_matter(
    article: Article, variant: ContentVariant, images: Sequence[ArticleImage], published_at: datetime
) -> dict[str, Any]:
    featured = next(image for image in images if image.prompt.kind == "featured")
    return {
        "title": variant.title,
        "meta_title": variant.meta_title,
        "description": variant.meta_description,
        "slug": article.slug,
        "site": article.site.slug,
        "primary_keyword": variant.primary_keyword,
        "secondary_keywords": list(variant.secondary_keywords),
        "tags": list(variant.tags),
        "categories": list(variant.categories),
        "content_id": article.content.id,
        "version": variant.version,
        "variant": variant.variant,
        # A string, so every front-matter reader gets the same ISO 8601 value (not a YAML timestamp).
        "published_at": published_at.isoformat(),
        "featured_image": featured.src,
        "model": variant.model,
        "provider": variant.provider,
    }


class _QuotedStr(str):
    """A front-matter string value, always written double-quoted."""


class _FrontMatterDumper(yaml.SafeDumper):
    """YAML for front matter: every string value double-quoted on one line, line breaks and control
    characters escaped, so no value (`---`, `: `, quotes, newlines) can end the front matter or add keys."""


_FrontMatterDumper.add_representer(
    _QuotedStr, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')
)


def _quoted(value: Any) -> Any:
    if isinstance(value, str):
        return _QuotedStr(value)
    if isinstance(value, list | tuple):
        return [_quoted(item) for item in value]
    return value


def _img(image: ArticleImage) -> str:
    """An image as its own paragraph, so Markdown conversion gives it a line of its own."""
    return (
        f'<p><img src="{escape(image.src)}" alt="{escape(image.prompt.alt_text)}" '
        f'width="{image.image.width}" height="{image.image.height}"></p>'
    )


def _body_with_images(variant: ContentVariant, images: Sequence[ArticleImage]) -> tuple[str, str]:
    """(featured image HTML, stored body with each in-article image inserted right after its anchor H2)."""
    featured = "\n".join(_img(image) for image in images if image.prompt.kind == "featured")
    pending: dict[str, list[str]] = {}
    for image in images:
        if image.prompt.kind != "featured":
            pending.setdefault(normalize_keyword(image.prompt.anchor_heading or ""), []).append(_img(image))

    def after_heading(match: re.Match[str]) -> str:
        snippets = pending.pop(normalize_keyword(plain_text(match.group(1))), [])
        return "\n".join([match.group(0), *snippets])

    body = _H2.sub(after_heading, variant.body_html)
    if pending:
        # Prompts are anchored to this variant's own headings, so a miss means the two disagree: do not guess.
        raise PublishError(
            f"content {variant.content_id} version {variant.version} variant {variant.variant}: image anchors "
            f"{sorted(pending)} match no H2 of the article; regenerate its image prompts"
        )
    return featured, body


def _write_export(
    folder: Path, article: Article, variant: ContentVariant, images: Sequence[ArticleImage], published_at: datetime
) -> None:
    """Write index.html, index.md and images/ into `folder`, checking every copied file against its checksum."""
    image_dir = folder / "images"
    image_dir.mkdir()
    for image in images:
        data = Path(image.image.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != image.image.checksum:
            raise PublishError(
                f"content {article.content.id}: image file {image.image.path} does not match its recorded checksum; "
                f"re-materialize images for site '{article.site.slug}' (it changed on disk)"
            )
        (image_dir / image.name).write_bytes(data)
    (folder / "index.html").write_text(render_html(variant, images), encoding="utf-8")
    front_matter = _front_matter(article, variant, images, published_at)
    (folder / "index.md").write_text(render_markdown(front_matter, variant, images), encoding="utf-8")


def _write_and_swap(target: Path, write: Callable[[Path], None]) -> Path | None:
    """Fill a hidden sibling folder with `write`, then put it in place of `target`.

    Returns where the previous `target` was moved (to restore it or delete it), or None if there was none.
    The hidden `.name.*` siblings keep a half-written export out of any static-site build.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a published folder must be readable by a web server
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = staging.with_suffix(".old") if target.exists() else None
    if previous is not None:
        os.replace(target, previous)
    try:
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if previous is not None:
            os.replace(previous, target)
        raise
    return previous


def _restore(target: Path, previous: Path | None) -> None:
    """Undo `_write_and_swap`: drop the new export and put the previous one back."""
    shutil.rmtree(target, ignore_errors=True)
    if previous is not None:
        os.replace(previous, target)
