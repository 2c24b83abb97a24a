"""Publishing targets: what each one is, how the site's settings choose them, and the folder target.

A target is an object with a `name`, a `destination` (where it publishes) and `placed(...)`: a context
manager that puts a variant in place, yields a `Placed` saying what happened, keeps it if the block (which
commits the article's status) succeeds and undoes what it can if the block raises. Adding a target is a
module beside `wordpress.py` and one line in `pipeline.publishing.targets_for`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from pipeline.models import ContentVariant, as_utc, utcnow
from pipeline.publishing import folder, structured_data
from pipeline.publishing.render import ArticleImage
from pipeline.review import Article
from pipeline.store import Store
from pipeline.store.publishing import DONE

Action = Literal["published", "updated", "recreated", "unchanged"]


@dataclass(frozen=True)
class Placed:
    """What a target did with an article: first `published`, `updated` in place, `recreated` (it had been
    deleted there) or `unchanged` (it shows this variant already); where it is (`url`) and its id there."""

    target: str
    action: Action
    url: str | None
    remote_id: str | None = None


class Target(Protocol):
    """A place articles are published to."""

    name: str
    destination: str

    def placed(
        self,
        store: Store,
        article: Article,
        variant: ContentVariant,
        images: Sequence[ArticleImage],
        *,
        published_at: datetime,
        verify: bool = False,
    ) -> AbstractContextManager[Placed]:
        """Put `variant` in place around the block that commits the article's status."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class FolderTarget:
    """`<publish_root>/<site>/<article>/`: HTML, Markdown with front matter, images (`pipeline.publishing.folder`)."""

    name = "folder"

    def __init__(self, publish_root: Path) -> None:
        self.root = Path(publish_root)
        self.destination = str(self.root.resolve())

    def close(self) -> None:
        """Nothing to release."""

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
        """Export the variant, swapped in place of an earlier export; undone if the block raises."""
        before = store.publication(article.content.id, self.name)
        # `date` is the first publication however often the article is published again; `lastmod` moves.
        first = (before.published_at if before is not None else None) or article.content.published_at or published_at
        lastmod = published_at if before is None else max(published_at, utcnow().replace(microsecond=0))
        page = structured_data.page_facts(store, article, published_at=as_utc(first), modified_at=lastmod)
        exported = folder.exported(self.root, article, variant, images, date=as_utc(first), lastmod=lastmod, page=page)
        with exported as path:
            action: Action = "updated" if before is not None and before.state == DONE else "published"
            yield Placed(self.name, action, str(path))
            store.record_publication(
                article.content.id,
                article.site.id,
                self.name,
                self.destination,
                url=str(path),
                state=DONE,
                version=variant.version,
                variant=variant.variant,
                published_at=first,
                error=None,
            )
