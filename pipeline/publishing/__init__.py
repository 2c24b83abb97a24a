"""Publishing an approved article: the one entry point, `publish`, and the targets it exports to.

`publish` asks the review gate (`pipeline.review`) which variant may go out, checks that its images are on
disk, puts it in place through a target and commits `approved -> published` while the new export is in
place, so a failure anywhere leaves the article `approved` and any earlier export untouched.

Targets: `folder` (HTML, Markdown and images under the publish dir) is the first. Another target (WordPress
next) is a module beside it with the same shape: a context manager that puts the article in place, keeps
it if the block that commits the status succeeds, and undoes it if that block raises. `render` holds what
every target writes (the HTML page, the Markdown with its front matter, image placement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pipeline import review
from pipeline.models import ContentVariant, utcnow
from pipeline.publishing import folder
from pipeline.publishing.render import ArticleImage, article_markdown, render_html, render_markdown
from pipeline.review import Article, PublishError
from pipeline.store import Store

__all__ = ["ArticleImage", "Publication", "article_markdown", "publish", "render_html", "render_markdown"]


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


def publish(
    store: Store, content_id: int, publish_root: Path, *, variant: str | None = None, actor: str | None = None
) -> Publication:
    """approved -> published: export the variant to `<publish_root>/<site>/<article>/`, then commit the status.

    The variant defaults to the one approved. Every image of the variant must exist on disk with its
    recorded checksum. If anything fails, the status stays `approved` and an earlier export is kept.
    """
    article, chosen = review.publishable(store, content_id, variant=variant)
    images = _export_images(store, article, chosen)
    published_at = utcnow().replace(microsecond=0)
    first_published = article.content.published_at or published_at  # a new version keeps the page's date
    with folder.exported(
        Path(publish_root), article, chosen, images, date=first_published, lastmod=published_at
    ) as target:
        # The status changes while the new export is in place: if it cannot, the export is undone.
        review.mark_published(store, article, chosen, published_at=published_at, actor=actor)
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
