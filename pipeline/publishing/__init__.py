"""Publishing an approved article: the one entry point, `publish`, and the targets it puts it on.

`publish` asks the review gate (`pipeline.review`) which variant may go out, checks that its images are on
disk, puts it on every target of the site (WordPress, then the folder export) and commits
`approved -> published` while the folder's new export is in place, so a failure anywhere leaves the article
`approved`, any earlier export untouched and the next run (which calls `publish` again) completes it.
Publishing an article that is already `published` pushes its published variant again (a post deleted
in WordPress is re-created); its status does not change. Publishing a version that has A and B starts its
A/B experiment when the site's `ab_test` is enabled (`pipeline.experiments`), and `switch_variant` is how
the experiment puts the other variant of the published version live: the same targets, the same URL.

Targets (`targets.py`): `folder` (HTML, Markdown and images under the publish dir) and `wordpress`
(`wordpress.py`, over `wordpress_api.py`). `targets_for` builds a site's targets from its settings.
`render` holds what every target writes (the HTML page, the Markdown with its front matter, images);
`structured_data` what an exported page says about itself (schema.org JSON-LD, canonical URL, Open Graph).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipeline import review
from pipeline.models import ContentStatus, ContentVariant, Site, as_utc, utcnow
from pipeline.publishing.render import ArticleImage, article_markdown, render_html, render_markdown
from pipeline.publishing.targets import FolderTarget, Placed, Target
from pipeline.publishing.wordpress import WordPressTarget, password_from_environment
from pipeline.review import Article, PublishError
from pipeline.sites import SiteSettings, site_settings
from pipeline.store import Store

__all__ = [
    "ArticleImage",
    "Placed",
    "Publication",
    "Target",
    "article_markdown",
    "close_targets",
    "publish",
    "render_html",
    "render_markdown",
    "switch_variant",
    "targets_for",
]


@dataclass(frozen=True)
class Publication:
    """Where a published article went and what was written: one `Placed` per target."""

    content_id: int
    site: str
    slug: str
    version: int
    variant: str
    published_at: datetime
    placed: list[Placed]
    folder: Path | None = None
    files: list[Path] = field(default_factory=list)
    republished: bool = False

    def on(self, target: str) -> Placed | None:
        """What `target` did, or None if it is not a target of the site."""
        return next((placed for placed in self.placed if placed.target == target), None)


def targets_for(
    site: Site, publish_root: Path, *, settings: SiteSettings | None = None, environ: Mapping[str, str] | None = None
) -> list[Target]:
    """The site's targets from its settings, WordPress first (what cannot be undone goes before what can):
    WordPress when configured (its password read from the environment now) and the folder export unless
    `publishing.folder` is false. `PublishError` if none, or if the password variable is not set."""
    settings = settings or site_settings(site.settings, f"settings of site '{site.slug}'")
    targets: list[Target] = []
    wordpress = settings.publishing.wordpress
    if wordpress is not None:
        password = password_from_environment(wordpress, site.slug, environ)
        targets.append(WordPressTarget(wordpress, password, taxonomy=settings.taxonomy))
    if settings.publishing.folder:
        targets.append(FolderTarget(publish_root))
    if not targets:
        raise PublishError(
            f"site '{site.slug}' has no publishing target: publishing.folder is false and publishing.wordpress "
            "is not set"
        )
    return targets


def close_targets(targets: Sequence[Target]) -> None:
    """Release every target's connections."""
    for target in targets:
        target.close()


def publish(
    store: Store,
    content_id: int,
    publish_root: Path,
    *,
    variant: str | None = None,
    actor: str | None = None,
    targets: Sequence[Target] | None = None,
    now: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    verify: bool | None = None,
) -> Publication:
    """approved -> published: put the variant on every target of the site, then commit the status.

    The variant defaults to the one approved. Every image of the variant must exist on disk with its
    recorded checksum. If anything fails, the status stays `approved`, the folder keeps its earlier export
    and what WordPress got is on record, so calling `publish` again completes it without posting twice.
    An article already `published` is pushed again as published, with no status change; by default each
    target then checks what it has (`verify`: a post deleted in WordPress is re-created) instead of
    trusting its record. `targets` defaults to the site's (`targets_for`), built and closed here.
    """
    article = review.load_article(store, content_id)
    republish = article.content.status == ContentStatus.PUBLISHED and variant is None
    if republish:
        chosen = review.published_variant(article)
    else:
        article, chosen = review.publishable(store, content_id, variant=variant)
    images = _export_images(store, article, chosen)
    settings = site_settings(article.site.settings, f"settings of site '{article.site.slug}'")
    wordpress = settings.publishing.wordpress
    owned = targets is None
    chosen_targets = (
        list(targets)
        if targets is not None
        else targets_for(article.site, publish_root, settings=settings, environ=environ)
    )
    now = now or utcnow()
    try:
        publication = _put_in_place(
            store,
            article,
            chosen,
            images,
            chosen_targets,
            actor=actor,
            now=now,
            republish=republish,
            verify=republish if verify is None else verify,
            sent_ahead=wordpress is not None and wordpress.status == "future",
        )
    finally:
        if owned:
            close_targets(chosen_targets)
    if not republish:
        # Imported here: `pipeline.experiments` switches variants through this module.
        from pipeline.experiments import start_experiment

        start_experiment(store, content_id, now=publication.published_at)
    return publication


def switch_variant(
    store: Store,
    content_id: int,
    letter: str,
    publish_root: Path,
    *,
    actor: str,
    now: datetime | None = None,
    note: str | None = None,
    targets: Sequence[Target] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Publication:
    """Make variant `letter` of the published version the live one, on every target of the site.

    Each target shows it at the article's one URL (the WordPress post is updated in place, the folder export
    swapped), then `published -> published` is recorded with the new `published_variant` and a review event
    (dated `now`, so `Store.live_spans` sees the switch). If a push fails nothing is recorded and calling it
    again completes it; a variant already live is pushed only where a target lags (`unchanged` elsewhere).
    """
    article = review.load_article(store, content_id)
    live = review.published_variant(article)  # InvalidTransition unless published and not being regenerated
    chosen = next((v for v in article.variants if (v.version, v.variant) == (live.version, letter)), None)
    if chosen is None:
        raise PublishError(f"content {content_id}: its published version {live.version} has no variant {letter}")
    images = _export_images(store, article, chosen)
    owned = targets is None
    chosen_targets = list(targets) if targets is not None else targets_for(article.site, publish_root, environ=environ)
    now = now or utcnow()
    assert article.content.published_at is not None  # set with the status
    published_at = as_utc(article.content.published_at)
    placed: list[Placed] = []
    try:
        with ExitStack() as stack:
            for target in chosen_targets:
                placed.append(
                    stack.enter_context(target.placed(store, article, chosen, images, published_at=published_at))
                )
            if live.variant != letter and not store.record_variant_switch(
                content_id, live.version, letter, actor=actor, at=now, note=note
            ):
                # The folder's export is undone; WordPress shows the variant and its record says so.
                raise review.InvalidTransition(
                    f"content {content_id} changed while variant {letter} was being put live; nothing recorded"
                )
    finally:
        if owned:
            close_targets(chosen_targets)
    return _publication(content_id, article, chosen, published_at, placed, republished=True)


def _put_in_place(
    store: Store,
    article: Article,
    chosen: ContentVariant,
    images: list[ArticleImage],
    targets: Sequence[Target],
    *,
    actor: str | None,
    now: datetime,
    republish: bool,
    verify: bool,
    sent_ahead: bool,
) -> Publication:
    content = article.content
    if republish:
        assert content.published_at is not None  # set with the status
        published_at = as_utc(content.published_at)
    else:
        # Sent ahead of its slot (WordPress `future` posts), an article is dated at the slot; published by
        # hand or once its slot came, it is dated now.
        slot = as_utc(content.publish_slot) if content.publish_slot else None
        published_at = (slot if sent_ahead and slot is not None and slot > now else now).replace(microsecond=0)
    placed: list[Placed] = []
    with ExitStack() as stack:
        for target in targets:
            placed.append(
                stack.enter_context(
                    target.placed(store, article, chosen, images, published_at=published_at, verify=verify)
                )
            )
        if not republish:
            # The status changes while every target shows the new variant: if it cannot, the folder's
            # export is undone and the article stays approved (WordPress keeps it; the record says so).
            review.mark_published(store, article, chosen, published_at=published_at, actor=actor)
    return _publication(content.id, article, chosen, published_at, placed, republished=republish)


def _publication(
    content_id: int,
    article: Article,
    chosen: ContentVariant,
    published_at: datetime,
    placed: list[Placed],
    *,
    republished: bool,
) -> Publication:
    """What a publication (or a variant switch) put where, with the folder export's files."""
    folder = next((Path(p.url) for p in placed if p.target == FolderTarget.name and p.url), None)
    return Publication(
        content_id=content_id,
        site=article.site.slug,
        slug=article.slug,
        version=chosen.version,
        variant=chosen.variant,
        published_at=published_at,
        placed=placed,
        folder=folder,
        files=sorted(path for path in folder.rglob("*") if path.is_file()) if folder else [],
        republished=republished,
    )


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
        assert image is not None  # every image was checked present above
        if prompt.kind == "featured":
            name = "featured"
        else:
            section += 1
            name = f"section-{section}"
        exported.append(ArticleImage(prompt=prompt, image=image, name=name + (Path(image.path).suffix or ".png")))
    return exported
