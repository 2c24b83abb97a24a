"""The WordPress target: an article as a post, its images as media, its tags and categories as terms.

A push is ordered so that a failure anywhere leaves nothing half-visible and the next run completes it:

1. terms are found (created only when the site's taxonomy lists them), images uploaded once each (by
   checksum, recorded as soon as each is uploaded) under names built from the article's slug and section;
2. a post the target already has (its id is on record) is updated in place, in one request; a post it
   does not have is created as a `draft` first and its id recorded at once, then switched to its final
   status (`publish`, `future` or `draft`) in a second request. A run that fails between the two leaves
   an invisible draft, which the next run finds by its recorded id (or, if the answer was lost, by slug);
3. a post deleted in WordPress (gone, or in the trash) is created again and the new id recorded.

The application password comes from the environment variable the site settings name, at run time; it is
passed to the HTTP session only, and errors are redacted (`WordPressAPI.redact`).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.models import ContentVariant, Publication
from pipeline.publishing.render import ArticleImage, body_with_images
from pipeline.publishing.targets import Action, Placed
from pipeline.publishing.wordpress_api import WordPressAPI, WordPressError
from pipeline.review import Article, PublishError
from pipeline.sites import Taxonomy, WordPressSettings, slugify
from pipeline.store import Store
from pipeline.store.publishing import DONE, FAILED, PENDING

TARGET = "wordpress"
_MAX_ERROR = 2000


def password_from_environment(settings: WordPressSettings, site: str, environ: Mapping[str, str] | None = None) -> str:
    """The application password from `settings.password_env`; a `PublishError` naming the variable if unset."""
    value = (environ if environ is not None else os.environ).get(settings.password_env, "")
    if not value.strip():
        raise PublishError(
            f"site '{site}': the WordPress application password is read from the environment variable "
            f"{settings.password_env} (publishing.wordpress.password_env), which is not set in this process"
        )
    return value.strip()


class WordPressTarget:
    """Publishes to one WordPress site as one user (see the module docstring for the order of requests)."""

    name = TARGET

    def __init__(
        self,
        settings: WordPressSettings,
        password: str,
        *,
        taxonomy: Taxonomy | None = None,
        api: WordPressAPI | None = None,
    ) -> None:
        self.settings = settings
        self.destination = settings.url.rstrip("/")
        self.api = api or WordPressAPI(settings.url, settings.username, password)
        self.taxonomy = taxonomy
        self._term_cache: dict[tuple[str, str], int | None] = {}  # (taxonomy, name) -> id, for this run

    def close(self) -> None:
        """Close the HTTP session."""
        self.api.close()

    @contextmanager
    def placed(
        self,
        store: Store,
        article: Article,
        variant: ContentVariant,
        images: Sequence[ArticleImage],
        *,
        published_at: datetime,
        verify: bool = False,
    ) -> Iterator[Placed]:
        """Push the variant (unless WordPress shows it already and `verify` is off) and yield where it is.

        A post cannot be taken back once live, so nothing is undone if the block raises: the publication row
        says what WordPress shows, and the next run finishes what the block did not.
        """
        yield self.push(store, article, variant, images, published_at=published_at, verify=verify)

    def push(
        self,
        store: Store,
        article: Article,
        variant: ContentVariant,
        images: Sequence[ArticleImage],
        *,
        published_at: datetime,
        verify: bool = False,
    ) -> Placed:
        """Put the variant on WordPress; `WordPressError` (recorded on the publication row) if it fails."""
        content = article.content
        row = store.publication(content.id, TARGET)
        if row is not None and row.destination != self.destination:
            row = None  # recorded for another WordPress site: this one has nothing yet
        if row is not None and _shows(row, variant) and not verify:
            return Placed(TARGET, "unchanged", row.url, row.remote_id)
        try:
            return self._push(store, article, variant, images, row, published_at=published_at)
        except WordPressError as error:
            store.record_publication(
                content.id, article.site.id, TARGET, self.destination, state=FAILED, error=str(error)[:_MAX_ERROR]
            )
            raise

    def _push(
        self,
        store: Store,
        article: Article,
        variant: ContentVariant,
        images: Sequence[ArticleImage],
        row: Publication | None,
        *,
        published_at: datetime,
    ) -> Placed:
        content, site = article.content, article.site
        existing = self._existing_post(row, article.slug)
        categories = self._term_ids("categories", variant.categories, self.taxonomy.categories if self.taxonomy else [])
        tags = self._term_ids("tags", variant.tags, self.taxonomy.tags if self.taxonomy else [])
        uploaded, featured_id = self._media(store, article, images, verify=existing is None)
        _, body = body_with_images(variant, [image for image in uploaded if image.prompt.kind != "featured"])
        status = self.settings.status
        was_done = row is not None and row.state == DONE and row.remote_id is not None
        fields: dict[str, Any] = {
            "title": variant.title,
            "slug": article.slug,
            "excerpt": variant.meta_description,
            "content": body,
            "categories": categories,
            "tags": tags,
            "featured_media": featured_id,
            "status": status,
        }
        # WordPress reads `date_gmt` as UTC; a `future` post goes live at this time by itself. A live post
        # keeps its date when a new version replaces its text.
        keeps_date = existing is not None and was_done and existing.get("status") == "publish"
        if status != "draft" and not keeps_date:
            fields["date_gmt"] = published_at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        action: Action
        if existing is not None:
            post = self.api.update_post(str(existing["id"]), fields)
            action = "updated" if was_done else "published"
        else:
            # Created invisible, id on record, then made visible: a failure between leaves only a draft.
            draft = self.api.create_post(fields | {"status": "draft"})
            store.record_publication(
                content.id,
                site.id,
                TARGET,
                self.destination,
                remote_id=str(draft["id"]),
                url=draft.get("link"),
                remote_status="draft",
                state=PENDING,
                error=None,
            )
            post = draft if status == "draft" else self.api.update_post(str(draft["id"]), {"status": status} | fields)
            action = "recreated" if was_done else "published"
        store.record_publication(
            content.id,
            site.id,
            TARGET,
            self.destination,
            remote_id=str(post["id"]),
            url=post.get("link"),
            remote_status=post.get("status"),
            state=DONE,
            version=variant.version,
            variant=variant.variant,
            published_at=(row.published_at if row is not None and keeps_date else None) or published_at,
            error=None,
        )
        return Placed(TARGET, action, post.get("link"), str(post["id"]))

    def _existing_post(self, row: Publication | None, slug: str) -> dict[str, Any] | None:
        """The post this article already has on the site, or None (never had one, or deleted there)."""
        if row is not None and row.remote_id:
            post = self.api.post(row.remote_id)
            if post is not None and post.get("status") != "trash":
                return post
            return None
        if row is not None and row.state in (PENDING, FAILED):
            # A create whose answer was lost left a draft we never learnt the id of: adopt it by slug.
            for post in self.api.posts_with_slug(slug):
                if post.get("status") == "draft":
                    return post
        return None

    def _term_ids(self, taxonomy: str, names: Sequence[str], allowed: Sequence[str]) -> list[int]:
        """WordPress ids of the named terms; a missing term is created only when the site's taxonomy lists it."""
        listed = {name.casefold() for name in allowed}
        ids: list[int] = []
        for name in names:
            key = (taxonomy, name.casefold())
            if key not in self._term_cache:
                found = [
                    term
                    for term in self.api.terms(taxonomy, name)
                    if str(term.get("name", "")).casefold() == name.casefold() or term.get("slug") == slugify(name)
                ]
                if found:
                    self._term_cache[key] = int(found[0]["id"])
                elif name.casefold() in listed:
                    self._term_cache[key] = int(self.api.create_term(taxonomy, name)["id"])
                else:
                    self._term_cache[key] = None  # not in WordPress and not in the site's taxonomy: left off
            term_id = self._term_cache[key]
            if term_id is not None:
                ids.append(term_id)
        return sorted(set(ids), key=ids.index)

    def _media(
        self, store: Store, article: Article, images: Sequence[ArticleImage], *, verify: bool
    ) -> tuple[list[ArticleImage], int]:
        """Every image with its URL on the site (uploaded once per file, by checksum, under its SEO name), and
        the featured image's media id. With `verify`, files on record are checked to still be there."""
        site = article.site
        uploaded: list[ArticleImage] = []
        featured_id = 0
        names: set[str] = set()
        for image in images:
            checksum = image.image.checksum
            known = store.remote_media(site.id, TARGET, self.destination, checksum)
            if known is not None and verify and self.api.media(known.remote_id) is None:
                store.forget_remote_media(site.id, TARGET, self.destination, checksum)
                known = None
            if known is None:
                data = Path(image.image.path).read_bytes()
                if hashlib.sha256(data).hexdigest() != checksum:
                    raise PublishError(
                        f"content {article.content.id}: image file {image.image.path} does not match its recorded "
                        f"checksum; re-materialize images for site '{site.slug}' (it changed on disk)"
                    )
                file_name = _seo_file_name(article.slug, image, names)
                mime = mimetypes.guess_type(file_name)[0] or "image/png"
                title = image.prompt.anchor_heading or article.idea.title
                media = self.api.upload_media(data, file_name, mime, alt_text=image.prompt.alt_text, title=title)
                store.record_remote_media(
                    site.id,
                    TARGET,
                    self.destination,
                    checksum,
                    remote_id=str(media["id"]),
                    url=str(media.get("source_url") or ""),
                    file_name=file_name,
                    alt_text=image.prompt.alt_text,
                )
                known = store.remote_media(site.id, TARGET, self.destination, checksum)
                assert known is not None  # just recorded
            names.add(known.file_name)
            uploaded.append(replace(image, url=known.url))
            if image.prompt.kind == "featured":
                featured_id = int(known.remote_id)
        return uploaded, featured_id


def _shows(row: Publication, variant: ContentVariant) -> bool:
    """Whether the publication row says WordPress shows this variant already."""
    return (
        row.state == DONE
        and row.remote_id is not None
        and (row.version, row.variant)
        == (
            variant.version,
            variant.variant,
        )
    )


def _seo_file_name(slug: str, image: ArticleImage, taken: set[str]) -> str:
    """`<article-slug>.png` for the featured image, `<article-slug>-<section-slug>.png` for the others."""
    suffix = Path(image.image.path).suffix or ".png"
    stem = slug if image.prompt.kind == "featured" else f"{slug}-{slugify(image.prompt.anchor_heading or '', 60)}"
    stem = stem.rstrip("-") or slug
    name, n = f"{stem}{suffix}", 2
    while name in taken:
        name, n = f"{stem}-{n}{suffix}", n + 1
    return name
