"""The corpus `benchmarks/triggers.py` measures on: stores of published articles with rules and metrics,
inserted in bulk as the publish path writes them, and metric files to import.

Articles are published over the last three years; each gets variants A and B of version 1, the review
events draft -> approved -> published, a rule of its own as `pipeline triggers add --content` writes it
(ctr < 0.02 after 72 h) and healthy ctr rows for A and B. Sites and metric rows go through the `Store` API.
"""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline.models import Cluster, Content, ContentStatus, ContentVariant, Idea, ReviewEvent, TriggerRule
from pipeline.store import Store

DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
THRESHOLD = 0.02
MIN_AGE_HOURS = 72.0
HEALTHY, BREAKING = 0.05, 0.01
SPREAD = timedelta(days=3 * 365)
CHUNK = 10_000
EXTRA_METRICS = ("clicks", "impressions", "position", "bounce_rate", "time_on_page")


# -- stores --------------------------------------------------------------------------------------------


@contextmanager
def database(backend: str, postgres_url: str, folder: Path, label: str) -> Iterator[str]:
    """A new, empty database for one measurement; dropped afterwards (PostgreSQL) or left in `folder`."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{label}.db'}"
        return
    server = make_url(postgres_url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"triggers_bench_{os.getpid()}_{secrets.token_hex(3)}_{label}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def build_store(url: str, size: int, sites: int, now: datetime) -> tuple[Store, list[tuple[int, datetime]]]:
    """`size` published articles over `sites` sites, a rule and healthy A/B metrics for each.

    Returns the store and `(content id, published_at)` of every article, oldest id first.
    """
    store = Store(url)
    generated = {"provider": "offline", "model": "offline", "prompt_version": "bench@1"}
    site_ids = [store.upsert_site(f"bench-{s}", f"Bench {s}", None).id for s in range(sites)]
    articles: list[tuple[int, datetime]] = []
    per_site = [size // sites + (1 if s < size % sites else 0) for s in range(sites)]
    with store.engine.begin() as connection:
        for site_id, count in zip(site_ids, per_site, strict=True):
            cluster_id = connection.execute(
                insert(Cluster).returning(Cluster.id),
                [{"site_id": site_id, "key": "bench", "name": "Bench", "top_keywords": [], "created_at": now}],
            ).scalar_one()
            for start in range(0, count, CHUNK):
                numbers = range(start, min(start + CHUNK, count))
                ideas = [
                    {
                        "site_id": site_id,
                        "cluster_id": cluster_id,
                        "key": f"article-{i}",
                        "title": f"Article {i}",
                        "angle": "how",
                        "content_type": "guide",
                        "outline": ["one"],
                        "target_keywords": [f"keyword {i}"],
                        "estimated_word_count": 800,
                        "created_at": now,
                        **generated,
                    }
                    for i in numbers
                ]
                idea_ids = connection.execute(insert(Idea).returning(Idea.id, sort_by_parameter_order=True), ideas)
                published = [now - timedelta(days=1) - SPREAD * (i / max(count, 1)) for i in numbers]
                contents = [
                    {
                        "site_id": site_id,
                        "idea_id": idea_id,
                        "status": ContentStatus.PUBLISHED.value,
                        "published_at": when,
                        "published_version": 1,
                        "published_variant": "A",
                        "created_at": when - timedelta(days=1),
                        "updated_at": when,
                    }
                    for idea_id, when in zip(idea_ids.scalars(), published, strict=True)
                ]
                content_ids = list(
                    connection.execute(
                        insert(Content).returning(Content.id, sort_by_parameter_order=True), contents
                    ).scalars()
                )
                batch = list(zip(content_ids, published, strict=True))
                articles += batch
                connection.execute(
                    insert(ContentVariant), [_variant(c, v, generated, now) for c, _ in batch for v in "AB"]
                )
                connection.execute(insert(ReviewEvent), [event for c, when in batch for event in _events(c, when)])
                connection.execute(insert(TriggerRule), [_rule(site_id, c, now) for c, _ in batch])
    rows = [
        {
            "content_id": content_id,
            "variant": variant,
            "version": 1,
            "metric": "ctr",
            "value": HEALTHY,
            "observed_at": when + (now - when) / 2,
            "source": "setup",
        }
        for content_id, when in articles
        for variant in "AB"
    ]
    store.add_metrics(rows)
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        with store.engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return store, articles


def _variant(content_id: int, letter: str, generated: dict[str, str], now: datetime) -> dict[str, Any]:
    return {
        "content_id": content_id,
        "version": 1,
        "variant": letter,
        "title": f"Article {content_id} {letter}",
        "body_html": "<h2>One</h2><p>Some text.</p>",
        "meta_title": "t",
        "meta_description": "d",
        "primary_keyword": "keyword",
        "secondary_keywords": [],
        "tags": [],
        "categories": [],
        "word_count": 3,
        "created_at": now - SPREAD - timedelta(days=2),
        **generated,
    }


def _events(content_id: int, published_at: datetime) -> list[dict[str, Any]]:
    common = {"content_id": content_id, "version": 1, "variant": "A", "actor": "bench", "note": None}
    return [
        {**common, "from_status": "draft", "to_status": "approved", "created_at": published_at - timedelta(hours=1)},
        # The publish path dates the event after `published_at` by the export's duration.
        {
            **common,
            "from_status": "approved",
            "to_status": "published",
            "created_at": published_at + timedelta(seconds=2),
        },
    ]


def _rule(site_id: int, content_id: int, now: datetime) -> dict[str, Any]:
    return {
        "site_id": site_id,
        "content_id": content_id,
        "metric": "ctr",
        "comparison": "<",
        "threshold": THRESHOLD,
        "min_age_hours": MIN_AGE_HOURS,
        "instruction": "Sharpen the title.",
        "enabled": True,
        "created_at": now,
    }


def metric_row(content_id: int, variant: str, metric: str, value: float, when: datetime) -> dict[str, Any]:
    return {
        "content_id": content_id,
        "variant": variant,
        "version": 1,
        "metric": metric,
        "value": value,
        "observed_at": when,
        "source": "bench",
    }


def write_import(path: Path, articles: Sequence[tuple[int, datetime]], rows: int, when: datetime, attempt: int) -> int:
    """A metrics CSV of `rows` healthy rows: A and B per article, more metrics when articles are few."""
    metrics = ("ctr", *EXTRA_METRICS)
    written = 0
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["content_id", "variant", "metric", "value", "observed_at", "source"])
        offset = attempt * 997
        while written < rows:
            round_, position = divmod(written // 2, len(articles))
            content_id, _ = articles[(position + offset) % len(articles)]
            metric = metrics[round_ % len(metrics)]
            out.writerow([content_id, "AB"[written % 2], metric, HEALTHY if metric == "ctr" else 3, stamp, "import"])
            written += 1
    return written
