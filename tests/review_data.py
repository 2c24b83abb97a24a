"""Small sites of draft articles written straight into the store, for review and calendar tests.

The sample chain (`sample_run`) takes a while and is shared by a module; these are per test, with the
clusters and article counts a test names, so each test can approve, reject and publish freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline import review
from pipeline.models import Cluster, Content, ContentVariant, Idea
from tests.conftest import Env


def add_articles(
    env: Env, slug: str, clusters: Mapping[str, int], *, settings: Mapping[str, Any] | None = None
) -> dict[str, list[int]]:
    """Register site `slug` (with `settings`) and `clusters[key]` draft articles per cluster; ids by cluster key."""
    site = env.store.upsert_site(slug, slug.title(), None)
    if settings is not None:
        env.store.update_site_settings(site.id, settings)
    generated = {"provider": "offline", "model": "offline-test", "prompt_version": "test"}
    ids: dict[str, list[int]] = {}
    with env.store.transaction() as session:
        for key, count in clusters.items():
            cluster = Cluster(site_id=site.id, key=key, name=key.title())
            session.add(cluster)
            session.flush()
            for number in range(count):
                title = f"{key.title()} article {number}"
                idea = Idea(
                    site_id=site.id,
                    cluster_id=cluster.id,
                    key=f"{key}-{number}",
                    title=title,
                    angle="",
                    content_type="guide",
                    outline=[],
                    target_keywords=[],
                    estimated_word_count=800,
                    **generated,
                )
                session.add(idea)
                session.flush()
                content = Content(site_id=site.id, idea_id=idea.id, status="draft")
                session.add(content)
                session.flush()
                session.add(
                    ContentVariant(
                        content_id=content.id,
                        version=1,
                        variant="A",
                        title=title,
                        body_html="<p>Text.</p>",
                        meta_title=title,
                        meta_description=title,
                        primary_keyword=key,
                        secondary_keywords=[],
                        tags=[],
                        categories=[],
                        word_count=1,
                        **generated,
                    )
                )
                ids.setdefault(key, []).append(content.id)
    return ids


def content_row(env: Env, content_id: int) -> Content:
    """The article's row as stored now."""
    with env.store.transaction() as session:
        row = session.get(Content, content_id)
    assert row is not None, content_id
    return row


def publish(env: Env, content_id: int, at: datetime) -> None:
    """approved -> published through the review gate, as a publishing target does once the article is out."""
    article, chosen = review.publishable(env.store, content_id)
    review.mark_published(env.store, article, chosen, published_at=at, actor="test:publisher")
