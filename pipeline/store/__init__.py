"""The store: every read and write of pipeline data goes through `Store`.

Writes are idempotent by construction: rows are inserted on their natural key with
`ON CONFLICT DO NOTHING` (or `DO UPDATE` where the input is the source of truth), and each item's
rows are written in one transaction, so a re-run never duplicates and a failure never half-writes.
The schema is created and upgraded by Alembic on open (`Store.migrate`).
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, defer, sessionmaker

from pipeline.keywords import KeywordRow
from pipeline.models import (
    UNCLUSTERED_KEY,
    Base,
    Cluster,
    Content,
    ContentVariant,
    Idea,
    Image,
    ImagePrompt,
    ItemLease,
    Keyword,
    ModelCall,
    PostMetric,
    RejectedFile,
    ResponseCache,
    ReviewEvent,
    Site,
    TriggerFiring,
    TriggerRule,
    utcnow,
)

MIGRATIONS_DIR = Path(__file__).parents[1] / "migrations"


class UnknownSite(LookupError):
    """Raised when a site slug is not registered in the store."""

    def __init__(self, slug: str):
        super().__init__(f"site '{slug}' is not registered; add it with: pipeline sites add {slug} --keywords FILE")
        self.slug = slug


@dataclass(frozen=True)
class SiteCounts:
    """Row counts per stage for one site (`images` counts files that exist on disk)."""

    site: str
    keywords: int
    clusters: int
    ideas: int
    content: int
    image_prompts: int
    images: int
    # Current article variants per provider: offline ones are labelled and counted apart, so a site that
    # mixes offline and real content says so.
    variants_by_provider: dict[str, int] = field(default_factory=dict)


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()

# PostgreSQL advisory-lock keys (namespace, id) that concurrent runs and processes serialise on.
# SQLite needs none: it admits one writer at a time.
_MIGRATION_LOCK = (7316, 0)
_SITE_LOCK_NAMESPACE = 7317


def _engine_for(url: str) -> Engine:
    """One engine per URL per process; SQLite gets WAL, a busy timeout and foreign keys."""
    with _lock:
        if url in _engines:
            return _engines[url]
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
        return engine


class Store:
    """Typed access to the pipeline database at `url`."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self.engine = _engine_for(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.migrate()

    # -- schema -----------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade the schema to the newest Alembic revision (once per URL per process)."""
        if self.url in _migrated:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Runs starting at once on a new (or older) database would race to create the same tables;
                # the lock makes the others wait, then find the schema already at head.
                connection.execute(select(func.pg_advisory_xact_lock(*_MIGRATION_LOCK)))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        _migrated.add(self.url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def _insert(self, session: Session):
        """`INSERT` with `ON CONFLICT` support for the session's dialect."""
        return postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert

    def _lock_site(self, session: Session, site_id: int) -> None:
        """Serialise this transaction with other writers of the same site, until it ends (PostgreSQL).

        For read-then-write steps that row constraints alone cannot make safe when two runs touch one site.
        Taken before any row lock, so writers queue instead of deadlocking. SQLite has one writer anyway.
        """
        if session.bind.dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(_SITE_LOCK_NAMESPACE, site_id)))

    # -- sites ------------------------------------------------------------------------------------

    def upsert_site(self, slug: str, name: str, keywords_file: str | None) -> Site:
        """Register a site or update its display name and keyword file; returns the stored row."""
        with self.transaction() as session:
            insert = self._insert(session)
            values = {"slug": slug, "name": name, "keywords_file": keywords_file, "settings": {}}
            statement = insert(Site).values(**values, created_at=utcnow(), updated_at=utcnow())
            statement = statement.on_conflict_do_update(
                index_elements=[Site.slug],
                set_={"name": name, "keywords_file": keywords_file, "updated_at": utcnow()},
            )
            session.execute(statement)
            return session.scalars(select(Site).where(Site.slug == slug)).one()

    def site(self, slug: str) -> Site:
        """The site with this slug, or `UnknownSite`."""
        with self._sessions() as session:
            found = session.scalars(select(Site).where(Site.slug == slug)).one_or_none()
        if found is None:
            raise UnknownSite(slug)
        return found

    def update_site_settings(self, site_id: int, values: Mapping[str, Any]) -> None:
        """Replace a site's settings (already validated by `SiteSettings`)."""
        with self.transaction() as session:
            session.execute(update(Site).where(Site.id == site_id).values(settings=dict(values), updated_at=utcnow()))

    def sites(self) -> list[Site]:
        """All registered sites, by slug."""
        with self._sessions() as session:
            return list(session.scalars(select(Site).order_by(Site.slug)))

    # -- keywords ---------------------------------------------------------------------------------

    def upsert_keywords(self, site_id: int, rows: Sequence[KeywordRow]) -> tuple[int, int]:
        """Insert new keywords and refresh metrics of known ones, all in one transaction.

        Keyword files are additive: keywords absent from a later file are kept, so their cluster
        membership and the work built on them survive. Returns (inserted, updated).
        """
        with self.transaction() as session:
            # Two imports of one site at once would lock keyword rows in file order and could deadlock;
            # serialised, each also counts exactly what it inserted.
            self._lock_site(session, site_id)
            before = session.scalar(select(func.count()).where(Keyword.site_id == site_id)) or 0
            insert = self._insert(session)
            now = utcnow()
            for chunk in _chunks(rows, 500):
                statement = insert(Keyword).values(
                    [
                        {
                            "site_id": site_id,
                            "keyword": row.keyword,
                            "normalized": row.normalized,
                            "volume": row.volume,
                            "difficulty": row.difficulty,
                            "intent": row.intent,
                            "extra": row.extra,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for row in chunk
                    ]
                )
                excluded = statement.excluded
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[Keyword.site_id, Keyword.normalized],
                        set_={
                            "volume": excluded.volume,
                            "difficulty": excluded.difficulty,
                            "intent": excluded.intent,
                            "extra": excluded.extra,
                            "updated_at": now,
                        },
                    )
                )
            after = session.scalar(select(func.count()).where(Keyword.site_id == site_id)) or 0
        inserted = after - before
        return inserted, len(rows) - inserted

    def keywords(self, site_id: int) -> list[Keyword]:
        """All keywords of a site, by volume (highest first) then text."""
        with self._sessions() as session:
            statement = (
                select(Keyword)
                .where(Keyword.site_id == site_id)
                .order_by(Keyword.volume.desc().nulls_last(), Keyword.normalized)
            )
            return list(session.scalars(statement))

    # -- clusters ---------------------------------------------------------------------------------

    def cluster_members(self, site_id: int) -> dict[str, list[str]]:
        """Current membership: cluster key -> normalised keywords."""
        with self._sessions() as session:
            rows = session.execute(
                select(Cluster.key, Keyword.normalized)
                .join(Keyword, Keyword.cluster_id == Cluster.id)
                .where(Cluster.site_id == site_id)
            )
            members: dict[str, list[str]] = {}
            for key, normalized in rows:
                members.setdefault(key, []).append(normalized)
            return members

    def apply_cluster_assignments(self, site_id: int, assignments: Mapping[str, str]) -> int:
        """Create missing clusters and set every keyword's cluster, in one transaction.

        Clusters left without members (after a recluster) are deleted with their ideas. Returns the
        number of clusters created.
        """
        with self.transaction() as session:
            self._lock_site(session, site_id)
            insert = self._insert(session)
            keys = sorted(set(assignments.values()))
            existing = set(session.scalars(select(Cluster.key).where(Cluster.site_id == site_id)))
            new = [key for key in keys if key not in existing]
            if new:
                now = utcnow()
                session.execute(
                    insert(Cluster)
                    .values(
                        [
                            {
                                "site_id": site_id,
                                "key": key,
                                "top_keywords": [],
                                "keyword_count": 0,
                                "total_volume": 0,
                                "created_at": now,
                                "updated_at": now,
                            }
                            for key in new
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=[Cluster.site_id, Cluster.key])
                )
            ids = dict(session.execute(select(Cluster.key, Cluster.id).where(Cluster.site_id == site_id)).all())
            by_cluster: dict[int, list[str]] = {}
            for normalized, key in assignments.items():
                by_cluster.setdefault(ids[key], []).append(normalized)
            for cluster_id, members in by_cluster.items():
                for chunk in _chunks(members, 500):
                    session.execute(
                        update(Keyword)
                        .where(Keyword.site_id == site_id, Keyword.normalized.in_(chunk))
                        .values(cluster_id=cluster_id)
                    )
            # Clusters a recluster left empty go, unless ideas were built on them (their content stays).
            # Emptiness is read back, not inferred from `assignments`: clusters another run created since
            # this one read the site have members this run never saw, and must survive.
            used = set(assignments.values())
            has_members = set(
                session.scalars(
                    select(Keyword.cluster_id)
                    .where(Keyword.site_id == site_id, Keyword.cluster_id.is_not(None))
                    .distinct()
                )
            )
            has_ideas = set(session.scalars(select(Idea.cluster_id).where(Idea.site_id == site_id).distinct()))
            for key, cluster_id in ids.items():
                if key not in used and cluster_id not in has_members and cluster_id not in has_ideas:
                    session.delete(session.get(Cluster, cluster_id))
            return len(new)

    def refresh_cluster_stats(self, site_id: int, top_n: int = 10) -> None:
        """Recompute count, volume, mean difficulty, dominant intent and top keywords per cluster."""
        with self.transaction() as session:
            self._lock_site(session, site_id)  # no stale stats from reading members mid-assignment
            clusters = session.scalars(select(Cluster).where(Cluster.site_id == site_id)).all()
            members: dict[int, list[Keyword]] = {}
            for keyword in session.scalars(
                select(Keyword)
                .where(Keyword.site_id == site_id, Keyword.cluster_id.is_not(None))
                .order_by(Keyword.volume.desc().nulls_last(), Keyword.normalized)
            ):
                members.setdefault(keyword.cluster_id, []).append(keyword)
            for cluster in clusters:
                rows = members.get(cluster.id, [])
                difficulties = [k.difficulty for k in rows if k.difficulty is not None]
                # A keyword with several intents ("informational, commercial") counts for each.
                intents = Counter(name for k in rows if k.intent for name in k.intent.split(", "))
                cluster.keyword_count = len(rows)
                cluster.total_volume = sum(k.volume or 0 for k in rows)
                cluster.mean_difficulty = round(sum(difficulties) / len(difficulties), 1) if difficulties else None
                cluster.dominant_intent = min(intents, key=lambda i: (-intents[i], i)) if intents else None
                cluster.top_keywords = [k.keyword for k in rows[:top_n]]

    def clusters(self, site_id: int, *, include_unclustered: bool = True) -> list[Cluster]:
        """Clusters of a site, largest volume first."""
        with self._sessions() as session:
            statement = select(Cluster).where(Cluster.site_id == site_id)
            if not include_unclustered:
                statement = statement.where(Cluster.key != UNCLUSTERED_KEY)
            return list(session.scalars(statement.order_by(Cluster.total_volume.desc(), Cluster.key)))

    def name_cluster(self, cluster_id: int, name: str, description: str, generated: Mapping[str, str]) -> None:
        """Store the model-given name and description of one cluster."""
        with self.transaction() as session:
            session.execute(
                update(Cluster)
                .where(Cluster.id == cluster_id)
                .values(name=name, description=description, **generated, updated_at=utcnow())
            )

    def cluster_keywords(self, cluster_id: int, limit: int | None = None) -> list[Keyword]:
        """Members of a cluster, highest volume first."""
        with self._sessions() as session:
            statement = (
                select(Keyword)
                .where(Keyword.cluster_id == cluster_id)
                .order_by(Keyword.volume.desc().nulls_last(), Keyword.normalized)
                .limit(limit)
            )
            return list(session.scalars(statement))

    # -- ideas ------------------------------------------------------------------------------------

    def clusters_without_ideas(self, site_id: int) -> list[Cluster]:
        """Named, non-bucket clusters that have no ideas yet."""
        with self._sessions() as session:
            has_ideas = select(Idea.id).where(Idea.cluster_id == Cluster.id).exists()
            statement = (
                select(Cluster)
                .where(
                    Cluster.site_id == site_id,
                    Cluster.key != UNCLUSTERED_KEY,
                    Cluster.name.is_not(None),
                    Cluster.keyword_count > 0,
                    ~has_ideas,
                )
                .order_by(Cluster.total_volume.desc(), Cluster.key)
            )
            return list(session.scalars(statement))

    def add_ideas(self, site_id: int, cluster_id: int, ideas: Iterable[Mapping[str, Any]]) -> int:
        """Insert a cluster's ideas on their natural key (cluster, title slug); returns rows added.

        A cluster's ideas are written once: if another run stored ideas for it first (two runs planning the
        same cluster at once, the model giving each different titles), nothing is added and 0 is returned.
        """
        values = [{"site_id": site_id, "cluster_id": cluster_id, "created_at": utcnow(), **idea} for idea in ideas]
        if not values:
            return 0
        with self.transaction() as session:
            self._lock_site(session, site_id)
            if session.scalar(select(Idea.id).where(Idea.cluster_id == cluster_id).limit(1)) is not None:
                return 0
            insert = self._insert(session)
            result = session.execute(
                insert(Idea).values(values).on_conflict_do_nothing(index_elements=[Idea.cluster_id, Idea.key])
            )
            return result.rowcount

    def ideas(self, site_id: int) -> list[Idea]:
        """All ideas of a site in creation order."""
        with self._sessions() as session:
            return list(session.scalars(select(Idea).where(Idea.site_id == site_id).order_by(Idea.id)))

    # -- content ----------------------------------------------------------------------------------

    def ideas_without_content(self, site_id: int) -> list[Idea]:
        """Ideas of a site that have no article yet."""
        with self._sessions() as session:
            has_content = select(Content.id).where(Content.idea_id == Idea.id).exists()
            statement = select(Idea).where(Idea.site_id == site_id, ~has_content).order_by(Idea.id)
            return list(session.scalars(statement))

    def add_contents(self, site_id: int, articles: Sequence[tuple[int, Mapping[str, Any]]]) -> int:
        """Create articles (version 1, variant A, `draft`) for ideas, in one transaction; ideas that already
        have an article are skipped (their row is never touched). Returns how many articles were created."""
        if not articles:
            return 0
        # In idea order: two runs writing overlapping batches then lock those rows in the same order, so they
        # queue instead of deadlocking (PostgreSQL); each batch arrives in its own completion order.
        articles = sorted(articles, key=lambda article: article[0])
        with self.transaction() as session:
            insert = self._insert(session)
            now = utcnow()
            # One cached statement run with many parameter sets (not a multi-row VALUES built per batch,
            # which SQLAlchemy would compile again for every batch size).
            statement = (
                insert(Content.__table__)
                .on_conflict_do_nothing(index_elements=[Content.idea_id])
                .returning(Content.idea_id, Content.id)
            )
            params = [
                {"site_id": site_id, "idea_id": idea_id, "status": "draft", "created_at": now, "updated_at": now}
                for idea_id, _ in articles
            ]
            created = dict(session.execute(statement, params).all())
            rows = [
                {"content_id": created[idea_id], "version": 1, "variant": "A", "created_at": now, **variant}
                for idea_id, variant in articles
                if idea_id in created
            ]
            if rows:
                session.execute(ContentVariant.__table__.insert(), rows)
            return len(rows)

    def current_variants(self, site_id: int, limit: int | None = None) -> list[ContentVariant]:
        """The newest version's variants of every article of a site (the first `limit` of them)."""
        with self._sessions() as session:
            statement = (
                _current_variants()
                .where(Content.site_id == site_id)
                .order_by(ContentVariant.content_id, ContentVariant.variant)
                .limit(limit)
            )
            return list(session.scalars(statement))

    def article_totals(self, site_id: int) -> tuple[int, int]:
        """(articles, words in their current variants) of a site, counted in the database."""
        current = _current_variants().where(Content.site_id == site_id).subquery()
        totals = select(func.count(func.distinct(current.c.content_id)), func.sum(current.c.word_count))
        with self._sessions() as session:
            articles, words = session.execute(totals).one()
        return int(articles), int(words or 0)

    # -- image prompts ----------------------------------------------------------------------------

    def variants_without_image_prompts(self, site_id: int) -> list[ContentVariant]:
        """Current variants that have no image prompts yet."""
        with self._sessions() as session:
            have = set(session.scalars(select(ImagePrompt.variant_id).where(ImagePrompt.site_id == site_id)))
        return [variant for variant in self.current_variants(site_id) if variant.id not in have]

    def add_image_prompts(self, site_id: int, variant_id: int, prompts: Iterable[Mapping[str, Any]]) -> int:
        """Insert a variant's image prompts on (variant, kind, position) in one transaction.

        Written once per variant: if another run stored prompts for it first, nothing is added (0), so two
        different answers are never mixed into one set.
        """
        values = [{"site_id": site_id, "variant_id": variant_id, "created_at": utcnow(), **p} for p in prompts]
        if not values:
            return 0
        with self.transaction() as session:
            self._lock_site(session, site_id)
            if session.scalar(select(ImagePrompt.id).where(ImagePrompt.variant_id == variant_id).limit(1)) is not None:
                return 0
            insert = self._insert(session)
            result = session.execute(
                insert(ImagePrompt)
                .values(values)
                .on_conflict_do_nothing(index_elements=[ImagePrompt.variant_id, ImagePrompt.kind, ImagePrompt.position])
            )
            return result.rowcount

    def image_prompts(self, site_id: int) -> list[ImagePrompt]:
        """All image prompts of a site."""
        with self._sessions() as session:
            statement = select(ImagePrompt).where(ImagePrompt.site_id == site_id).order_by(ImagePrompt.id)
            return list(session.scalars(statement))

    # -- images -----------------------------------------------------------------------------------

    def prompts_missing_images(self, site_id: int) -> list[ImagePrompt]:
        """Image prompts with no image row, or whose recorded file is gone from disk."""
        with self._sessions() as session:
            rows = session.execute(
                select(ImagePrompt, Image.path)
                .outerjoin(Image, Image.image_prompt_id == ImagePrompt.id)
                .where(ImagePrompt.site_id == site_id)
                .order_by(ImagePrompt.id)
            ).all()
        return [prompt for prompt, path in rows if path is None or not Path(path).is_file()]

    def save_image(self, site_id: int, image_prompt_id: int, values: Mapping[str, Any]) -> None:
        """Record (or re-point, when regenerated) the image file of an image prompt."""
        with self.transaction() as session:
            insert = self._insert(session)
            statement = insert(Image).values(
                site_id=site_id, image_prompt_id=image_prompt_id, created_at=utcnow(), **values
            )
            session.execute(statement.on_conflict_do_update(index_elements=[Image.image_prompt_id], set_=dict(values)))

    def images(self, site_id: int) -> list[Image]:
        """All image rows of a site."""
        with self._sessions() as session:
            return list(session.scalars(select(Image).where(Image.site_id == site_id).order_by(Image.id)))

    # -- ledger -----------------------------------------------------------------------------------

    def record_calls(
        self, calls: Sequence[Mapping[str, Any]], cache: Sequence[Mapping[str, Any]] = (), hits: Sequence[str] = ()
    ) -> None:
        """Append ledger rows, store accepted answers in the response cache and count cache hits, in one
        transaction (the engine batches these so the store is not a per-call bottleneck)."""
        if not calls and not cache and not hits:
            return
        with self.transaction() as session:
            now = utcnow()
            if calls:
                session.execute(ModelCall.__table__.insert(), [{"created_at": now, **values} for values in calls])
            # In key order: two runs caching or hitting the same answers then lock those rows in the same
            # order, so their batches queue instead of deadlocking (PostgreSQL). One statement with many
            # parameter sets: a multi-row VALUES would be compiled again for every batch size.
            unique = {entry["key"]: entry for entry in cache}
            if unique:
                rows = [
                    {**entry, "hits": 0, "created_at": now, "last_used_at": now}
                    for entry in sorted(unique.values(), key=lambda entry: entry["key"])
                ]
                session.execute(_cache_upsert(session.bind.dialect.name), rows)
            for key, count in sorted(Counter(hits).items()):
                session.execute(
                    update(ResponseCache)
                    .where(ResponseCache.key == key)
                    .values(hits=ResponseCache.hits + count, last_used_at=now)
                )

    def claim_items(
        self,
        stage: str,
        partition: str,
        refs: Sequence[str],
        holder: str,
        ttl_s: float,
        take_over: Sequence[str] = (),
    ) -> set[str]:
        """Claim items before paying for their model calls; returns the refs `holder` now holds.

        An item is granted when nobody holds it, its lease expired (a crashed run), `holder` already holds
        it, or its holder is in `take_over` (holders known to be dead). Inserts that lose a race do nothing
        (`ON CONFLICT DO NOTHING`), so two runs started together split the work instead of paying twice;
        the same on SQLite and PostgreSQL.
        """
        if not refs:
            return set()
        now = utcnow()
        expires = now + timedelta(seconds=ttl_s)
        granted: set[str] = set()
        with self.transaction() as session:
            for chunk in _chunks(sorted(set(refs)), 500):
                rows = [
                    {"stage": stage, "partition": partition, "item_ref": ref, "holder": holder, "expires_at": expires}
                    for ref in chunk
                ]
                # One statement in the common case (nobody holds them); only conflicts look further.
                insert = self._insert(session)(ItemLease).values(rows).on_conflict_do_nothing()
                granted.update(session.scalars(insert.returning(ItemLease.item_ref)))
                held = [ref for ref in chunk if ref not in granted]
                if held:
                    taken = (
                        update(ItemLease)
                        .where(
                            ItemLease.stage == stage,
                            ItemLease.partition == partition,
                            ItemLease.item_ref.in_(held),
                            (ItemLease.expires_at < now) | ItemLease.holder.in_([holder, *take_over]),
                        )
                        .values(holder=holder, expires_at=expires)
                        .returning(ItemLease.item_ref)
                    )
                    granted.update(session.scalars(taken))
        return granted

    def release_leases(self, holder: str) -> None:
        """Release every lease `holder` holds (its stage is over: finished items are stored by now)."""
        with self.transaction() as session:
            session.execute(delete(ItemLease).where(ItemLease.holder == holder))

    def cached_keys_among(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` have a cached answer now (answers another run stored meanwhile)."""
        found: set[str] = set()
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(keys)), 500):
                found.update(session.scalars(select(ResponseCache.key).where(ResponseCache.key.in_(chunk))))
        return found

    def lease_holders(self, stage: str, partition: str, refs: Sequence[str]) -> dict[str, str]:
        """Who holds each of `refs` (unexpired or not): item ref -> holder."""
        holders: dict[str, str] = {}
        with self._sessions() as session:
            for chunk in _chunks(sorted(set(refs)), 500):
                rows = session.execute(
                    select(ItemLease.item_ref, ItemLease.holder).where(
                        ItemLease.stage == stage, ItemLease.partition == partition, ItemLease.item_ref.in_(chunk)
                    )
                )
                holders.update({row.item_ref: row.holder for row in rows})
        return holders

    def cache_keys(self, stage: str) -> set[str]:
        """Keys of every cached answer of a stage (one query, so misses cost no round-trip)."""
        with self._sessions() as session:
            return set(session.scalars(select(ResponseCache.key).where(ResponseCache.stage == stage)))

    def cached_response(self, key: str) -> dict[str, Any] | None:
        """The cached answer for `key` (`{"answer", "model", "prompt_version"}`), or None. Read-only."""
        with self._sessions() as session:
            row = session.execute(
                select(ResponseCache.answer, ResponseCache.model, ResponseCache.prompt_version).where(
                    ResponseCache.key == key
                )
            ).one_or_none()
        return None if row is None else {"answer": row.answer, "model": row.model, "prompt_version": row.prompt_version}

    def run_cost(self, run_id: str) -> float:
        """USD spent so far by one run, from the ledger (all its assets, all its processes)."""
        with self._sessions() as session:
            total = session.scalar(select(func.sum(ModelCall.cost_usd)).where(ModelCall.run_id == run_id))
            return float(total or 0.0)

    def model_calls(self, *, partition: str | None = None, run_id: str | None = None) -> list[ModelCall]:
        """Ledger rows, optionally for one partition and/or run, oldest first."""
        with self._sessions() as session:
            statement = select(ModelCall).order_by(ModelCall.id)
            if partition is not None:
                statement = statement.where(ModelCall.partition == partition)
            if run_id is not None:
                statement = statement.where(ModelCall.run_id == run_id)
            return list(session.scalars(statement))

    # -- metrics, triggers, regeneration --------------------------------------------------------

    def content_by_ids(self, ids: Iterable[int]) -> dict[int, Content]:
        """Articles by id (missing ids are simply absent)."""
        ids = list(ids)
        with self._sessions() as session:
            return {c.id: c for c in session.scalars(select(Content).where(Content.id.in_(ids)))} if ids else {}

    def variants(self, content_id: int) -> list[ContentVariant]:
        """Every variant of an article, newest version first (A before B within a version)."""
        with self._sessions() as session:
            statement = (
                select(ContentVariant)
                .where(ContentVariant.content_id == content_id)
                .order_by(ContentVariant.version.desc(), ContentVariant.variant)
            )
            return list(session.scalars(statement))

    def current_version(self, content_id: int) -> int:
        """The highest version number of an article (0 if it has none)."""
        with self._sessions() as session:
            return session.scalar(
                select(func.coalesce(func.max(ContentVariant.version), 0)).where(
                    ContentVariant.content_id == content_id
                )
            )

    def add_metrics(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert metric observations on their natural key in one transaction; returns rows added."""
        if not rows:
            return 0
        added = 0
        with self.transaction() as session:
            insert = self._insert(session)
            now = utcnow()
            for chunk in _chunks(rows, 500):
                result = session.execute(
                    insert(PostMetric)
                    .values([{"created_at": now, **row} for row in chunk])
                    .on_conflict_do_nothing(
                        index_elements=[
                            PostMetric.content_id,
                            PostMetric.variant,
                            PostMetric.version,
                            PostMetric.metric,
                            PostMetric.observed_at,
                            PostMetric.source,
                        ]
                    )
                )
                added += result.rowcount
        return added

    def latest_metrics(self, content_id: int, version: int) -> dict[str, dict[str, float]]:
        """The newest value of every metric per variant of one version: `{variant: {metric: value}}`."""
        with self._sessions() as session:
            rows = session.execute(
                select(PostMetric.variant, PostMetric.metric, PostMetric.value)
                .where(PostMetric.content_id == content_id, PostMetric.version == version)
                .order_by(PostMetric.observed_at, PostMetric.id)
            )
            latest: dict[str, dict[str, float]] = {}
            for variant, metric, value in rows:
                latest.setdefault(variant, {})[metric] = value
            return latest

    def publications(self, content_ids: Iterable[int]) -> dict[int, list[tuple[datetime, int]]]:
        """When versions of these articles were published, from their review events, oldest first:
        `{content_id: [(when, version), ...]}`; articles without such events are absent."""
        ids = sorted(set(content_ids))
        found: dict[int, list[tuple[datetime, int]]] = {}
        with self._sessions() as session:
            for chunk in _chunks(ids, 500):
                rows = session.execute(
                    select(ReviewEvent.content_id, ReviewEvent.created_at, ReviewEvent.version)
                    .where(
                        ReviewEvent.content_id.in_(chunk),
                        ReviewEvent.to_status == "published",
                        ReviewEvent.version.is_not(None),
                    )
                    .order_by(ReviewEvent.created_at, ReviewEvent.id)
                )
                for content_id, when, version in rows:
                    found.setdefault(content_id, []).append((when, version))
        return found

    def record_rejected_file(self, folder: str, name: str, path: str, fingerprint: str, problem: str) -> None:
        """Record that a file in a watched folder was rejected (once per content; seen again: refreshed)."""
        with self.transaction() as session:
            now = utcnow()
            statement = self._insert(session)(RejectedFile).values(
                folder=folder,
                name=name,
                path=path,
                fingerprint=fingerprint,
                problem=problem,
                first_seen_at=now,
                last_seen_at=now,
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[RejectedFile.folder, RejectedFile.name, RejectedFile.fingerprint],
                    set_={"problem": problem, "path": path, "last_seen_at": now, "resolved_at": None},
                )
            )

    def resolve_rejected_files(self, folder: str, present: Mapping[str, str]) -> int:
        """Mark rejections in `folder` resolved unless it still holds that name with that fingerprint
        (`present`: name -> fingerprint of every entry there now); returns how many were resolved."""
        with self.transaction() as session:
            still_open = session.scalars(
                select(RejectedFile).where(RejectedFile.folder == folder, RejectedFile.resolved_at.is_(None))
            )
            gone = [row for row in still_open if present.get(row.name) != row.fingerprint]
            now = utcnow()
            for row in gone:
                row.resolved_at = now
            return len(gone)

    def rejected_files(self, *, include_resolved: bool = False) -> list[RejectedFile]:
        """Rejected input files, by folder and name; only those still in their folder unless `include_resolved`."""
        with self._sessions() as session:
            statement = select(RejectedFile).order_by(RejectedFile.folder, RejectedFile.name, RejectedFile.id)
            if not include_resolved:
                statement = statement.where(RejectedFile.resolved_at.is_(None))
            return list(session.scalars(statement))

    def published_content(self, site_id: int | None = None) -> list[Content]:
        """Published articles (of one site, or all), oldest publication first."""
        with self._sessions() as session:
            statement = select(Content).where(Content.status == "published", Content.published_version.is_not(None))
            if site_id is not None:
                statement = statement.where(Content.site_id == site_id)
            return list(session.scalars(statement.order_by(Content.published_at, Content.id)))

    def add_trigger_rule(self, values: Mapping[str, Any]) -> TriggerRule:
        """Store a trigger rule (site default when `content_id` is None)."""
        with self.transaction() as session:
            rule = TriggerRule(created_at=utcnow(), **values)
            session.add(rule)
            session.flush()
            return rule

    def trigger_rules(self, site_id: int) -> list[TriggerRule]:
        """Enabled rules of a site: article-specific and site defaults."""
        with self._sessions() as session:
            statement = select(TriggerRule).where(TriggerRule.site_id == site_id, TriggerRule.enabled.is_(True))
            return list(session.scalars(statement.order_by(TriggerRule.id)))

    def disable_trigger_rule(self, rule_id: int) -> bool:
        """Turn a rule off (kept for history); False if there is no such rule."""
        with self.transaction() as session:
            return (
                session.execute(update(TriggerRule).where(TriggerRule.id == rule_id).values(enabled=False)).rowcount > 0
            )

    def fire_trigger(self, values: Mapping[str, Any]) -> int | None:
        """Record that a rule fired for one published version; the id if it fires now, None if it already did.

        Atomic on the natural key (content, rule, published version): however many sensor ticks or
        Dagster instances evaluate the same rule, only one insert wins. A firing whose regeneration failed
        is armed again: it is re-requested here (attempts + 1) instead of inserted.
        """
        with self.transaction() as session:
            insert = self._insert(session)
            firing_id = session.scalar(
                insert(TriggerFiring)
                .values(**values, status="requested", attempts=1, fired_at=utcnow())
                .on_conflict_do_nothing(
                    index_elements=[TriggerFiring.content_id, TriggerFiring.rule_key, TriggerFiring.published_version]
                )
                .returning(TriggerFiring.id)
            )
            if firing_id is not None:
                return firing_id
            return session.scalar(
                update(TriggerFiring)
                .where(
                    TriggerFiring.content_id == values["content_id"],
                    TriggerFiring.rule_key == values["rule_key"],
                    TriggerFiring.published_version == values["published_version"],
                    TriggerFiring.status == "failed",
                )
                .values(
                    status="requested",
                    attempts=TriggerFiring.attempts + 1,
                    run_id=None,
                    fired_at=utcnow(),
                    observed=values["observed"],
                    triggered_variants=values["triggered_variants"],
                )
                .returning(TriggerFiring.id)
            )

    def firings(self, *, site_id: int | None = None, statuses: Sequence[str] | None = None) -> list[TriggerFiring]:
        """Trigger firings, optionally of one site and with given statuses."""
        with self._sessions() as session:
            statement = select(TriggerFiring).order_by(TriggerFiring.id)
            if site_id is not None:
                statement = statement.where(TriggerFiring.site_id == site_id)
            if statuses:
                statement = statement.where(TriggerFiring.status.in_(statuses))
            return list(session.scalars(statement))

    def claim_firing(self, firing_id: int, run_id: str) -> TriggerFiring | None:
        """Take a requested firing and lock its article for `run_id`, atomically; None if not claimable.

        The article lock (`content.regeneration_run_id`) is what guarantees no two runs rewrite it at once.
        """
        with self.transaction() as session:
            firing = session.get(TriggerFiring, firing_id)
            if firing is None or firing.status != "requested":
                return None
            locked = session.execute(
                update(Content)
                .where(
                    Content.id == firing.content_id,
                    (Content.regeneration_run_id.is_(None)) | (Content.regeneration_run_id == run_id),
                )
                .values(regeneration_run_id=run_id)
            ).rowcount
            if not locked:
                return None
            firing.status, firing.run_id = "running", run_id
            return firing

    def fail_firing(self, firing_id: int, run_id: str, error: str) -> None:
        """Mark a regeneration failed: the rule is armed again, the article unlocked, nothing else changes."""
        with self.transaction() as session:
            firing = session.get(TriggerFiring, firing_id)
            if firing is None:
                return
            firing.status, firing.error = "failed", error[:4000]
            session.execute(
                update(Content)
                .where(Content.id == firing.content_id, Content.regeneration_run_id == run_id)
                .values(regeneration_run_id=None)
            )

    def write_regenerated_version(
        self, firing_id: int, run_id: str, variants: Sequence[Mapping[str, Any]], analysis: str
    ) -> int:
        """Write new A/B variants as the next version, set the article to draft, consume the firing and unlock,
        all in one transaction. Earlier versions (and the published one) stay untouched. Returns the version."""
        with self.transaction() as session:
            firing = session.get(TriggerFiring, firing_id)
            content = session.get(Content, firing.content_id)
            if content.regeneration_run_id != run_id:
                raise RuntimeError(f"content {content.id} is not locked by run {run_id}; not writing")
            note = (
                f"regenerated by trigger {firing.rule_key} ({firing.metric} {firing.comparison} "
                f"{firing.threshold:g}): {analysis[:1500]}"
            )
            version = _write_next_version(session, content, variants, actor=f"regeneration:{run_id}", note=note)
            content.regeneration_run_id = None
            firing.status, firing.consumed_at, firing.error = "consumed", content.updated_at, None
            return version

    def plannable_clusters(self, site_id: int) -> list[Cluster]:
        """Named, non-bucket clusters with keywords, whether or not they have ideas (for a forced re-plan)."""
        return [
            c for c in self.clusters(site_id, include_unclustered=False) if c.name is not None and c.keyword_count > 0
        ]

    def content_ids_by_idea(self, site_id: int) -> dict[int, int]:
        """idea id -> article id, for every article of a site."""
        with self._sessions() as session:
            return dict(session.execute(select(Content.idea_id, Content.id).where(Content.site_id == site_id)).all())

    def add_content_version(self, content_id: int, variant: Mapping[str, Any], *, actor: str) -> int:
        """A forced rewrite: the next version (variant A) of an article, which goes back to `draft`.

        Earlier versions, and the published one, stay. Returns the new version number.
        """
        with self.transaction() as session:
            content = session.get(Content, content_id, with_for_update=True)
            variants = [{"variant": "A", **variant}]
            return _write_next_version(session, content, variants, actor=actor, note="rewritten by a forced run")

    def replace_image_prompts(self, site_id: int, variant_id: int, prompts: Iterable[Mapping[str, Any]]) -> int:
        """A forced redo: a variant's image prompts replaced (their image rows go with them) in one transaction."""
        values = [{"site_id": site_id, "variant_id": variant_id, "created_at": utcnow(), **p} for p in prompts]
        with self.transaction() as session:
            self._lock_site(session, site_id)  # two forced redos at once: the last one wins, never a mix
            session.execute(delete(ImagePrompt).where(ImagePrompt.variant_id == variant_id))
            if values:
                session.execute(ImagePrompt.__table__.insert(), values)
            return len(values)

    def replace_unwritten_ideas(self, site_id: int, cluster_id: int, ideas: Iterable[Mapping[str, Any]]) -> int:
        """A forced re-plan: a cluster's ideas that have no article yet are replaced by `ideas`; ideas with an
        article stay (new ideas whose key they already use are skipped). Returns ideas added."""
        with self.transaction() as session:
            self._lock_site(session, site_id)  # two forced re-plans at once: the last one wins, never both sets
            has_content = select(Content.id).where(Content.idea_id == Idea.id).exists()
            session.execute(delete(Idea).where(Idea.cluster_id == cluster_id, ~has_content))
            kept = set(session.scalars(select(Idea.key).where(Idea.cluster_id == cluster_id)))
            now = utcnow()
            values = [
                {"site_id": site_id, "cluster_id": cluster_id, "created_at": now, **idea}
                for idea in ideas
                if idea["key"] not in kept
            ]
            if values:
                session.execute(Idea.__table__.insert(), values)
            return len(values)

    def stale_cache_entries(self, older_than: datetime) -> int:
        """Delete cached answers not used since `older_than`; returns how many."""
        with self.transaction() as session:
            return session.execute(delete(ResponseCache).where(ResponseCache.last_used_at < older_than)).rowcount

    def media_paths(self) -> set[str]:
        """Every image path the store references."""
        with self._sessions() as session:
            return set(session.scalars(select(Image.path)))

    # -- status -----------------------------------------------------------------------------------

    def counts(self, slug: str) -> SiteCounts:
        """Row counts per stage for a site; `images` counts only files that exist."""
        site = self.site(slug)
        with self._sessions() as session:

            def count(model: type[Base]) -> int:
                return session.scalar(select(func.count()).select_from(model).where(model.site_id == site.id)) or 0

            paths = session.scalars(select(Image.path).where(Image.site_id == site.id))
            current = _current_variants().where(Content.site_id == site.id).subquery()
            by_provider = dict(
                session.execute(
                    select(current.c.provider, func.count()).group_by(current.c.provider).order_by(current.c.provider)
                ).all()
            )
            return SiteCounts(
                variants_by_provider={str(k): int(v) for k, v in by_provider.items()},
                site=slug,
                keywords=count(Keyword),
                clusters=count(Cluster),
                ideas=count(Idea),
                content=count(Content),
                image_prompts=count(ImagePrompt),
                images=sum(1 for path in paths if Path(path).is_file()),
            )

    # -- review -----------------------------------------------------------------------------------

    def review_queue(
        self, *, site_id: int | None = None, status: str | None = None
    ) -> list[tuple[Content, str, list[ContentVariant]]]:
        """Articles with their site slug and the variants of their current (highest) version, by site and id.

        Variant bodies are not loaded (a listing does not need them); reading `body_html` on them raises.
        """
        with self._sessions() as session:
            articles = select(Content, Site.slug).join(Site, Site.id == Content.site_id)
            current = (
                _current_variants()
                .options(defer(ContentVariant.body_html, raiseload=True))
                .order_by(ContentVariant.content_id, ContentVariant.variant)
            )
            if site_id is not None:
                articles, current = (
                    articles.where(Content.site_id == site_id),
                    current.where(Content.site_id == site_id),
                )
            if status is not None:
                articles, current = articles.where(Content.status == status), current.where(Content.status == status)
            variants: dict[int, list[ContentVariant]] = {}
            for variant in session.scalars(current):
                variants.setdefault(variant.content_id, []).append(variant)
            rows = session.execute(articles.order_by(Site.slug, Content.id)).all()
        return [(content, slug, variants.get(content.id, [])) for content, slug in rows]

    def review_article(self, content_id: int) -> tuple[Content, Site, Idea, list[ContentVariant]] | None:
        """An article with its site, its idea and every variant (newest version first, A before B); None if unknown."""
        with self._sessions() as session:
            row = session.execute(
                select(Content, Site, Idea)
                .join(Site, Site.id == Content.site_id)
                .join(Idea, Idea.id == Content.idea_id)
                .where(Content.id == content_id)
            ).one_or_none()
            if row is None:
                return None
            variants = session.scalars(
                select(ContentVariant)
                .where(ContentVariant.content_id == content_id)
                .order_by(ContentVariant.version.desc(), ContentVariant.variant)
            )
            return row[0], row[1], row[2], list(variants)

    def earlier_article_with_idea_key(self, site_id: int, key: str, content_id: int) -> bool:
        """Whether an older article of the site comes from an idea with the same key.

        Idea keys are unique per cluster, not per site, and publish folders are named by them.
        """
        with self._sessions() as session:
            clash = (
                select(Content.id)
                .join(Idea, Idea.id == Content.idea_id)
                .where(Content.site_id == site_id, Idea.key == key, Content.id < content_id)
                .exists()
            )
            return bool(session.scalar(select(clash)))

    def variant_images(self, variant_id: int) -> list[tuple[ImagePrompt, Image | None]]:
        """A variant's image prompts with their image row (None if not generated): featured first, then by position."""
        with self._sessions() as session:
            rows = session.execute(
                select(ImagePrompt, Image)
                .outerjoin(Image, Image.image_prompt_id == ImagePrompt.id)
                .where(ImagePrompt.variant_id == variant_id)
            ).all()
        return sorted(
            ((p, i) for p, i in rows), key=lambda row: (row[0].kind != "featured", row[0].position, row[0].id)
        )

    def review_events(self, content_id: int) -> list[ReviewEvent]:
        """An article's status history (review gate and regeneration), oldest first."""
        with self._sessions() as session:
            statement = select(ReviewEvent).where(ReviewEvent.content_id == content_id)
            return list(session.scalars(statement.order_by(ReviewEvent.created_at, ReviewEvent.id)))

    def transition_content(
        self,
        content_id: int,
        from_status: str,
        to_status: str,
        *,
        actor: str,
        version: int | None = None,
        variant: str | None = None,
        note: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move an article from `from_status` to `to_status` (plus `changes` to its other columns) and append its
        `ReviewEvent`, in one transaction.

        A compare-and-set on the status, so two reviewers acting on the same state cannot both win, and an
        article locked by a regeneration run is left alone: returns False, writing nothing, in either case.
        """
        with self.transaction() as session:
            now = utcnow()
            moved = session.execute(
                update(Content)
                .where(
                    Content.id == content_id,
                    Content.status == from_status,
                    Content.regeneration_run_id.is_(None),
                )
                .values(**dict(changes or {}), status=to_status, updated_at=now)
            ).rowcount
            if moved != 1:
                return False
            session.add(
                ReviewEvent(
                    content_id=content_id,
                    from_status=from_status,
                    to_status=to_status,
                    version=version,
                    variant=variant,
                    note=note,
                    actor=actor,
                    created_at=now,
                )
            )
            return True


def _write_next_version(
    session: Session, content: Content, variants: Sequence[Mapping[str, Any]], *, actor: str, note: str
) -> int:
    """Add `variants` as the article's next version, send it back to `draft` and log why (caller's transaction).

    Earlier versions, including the published one, are never touched. Returns the new version number.
    """
    latest = session.scalar(select(func.max(ContentVariant.version)).where(ContentVariant.content_id == content.id))
    version = (latest or 0) + 1
    now = utcnow()
    for values in variants:
        session.add(ContentVariant(content_id=content.id, version=version, created_at=now, **values))
    single = variants[0]["variant"] if len(variants) == 1 else None
    session.add(
        ReviewEvent(
            content_id=content.id,
            from_status=content.status,
            to_status="draft",
            version=version,
            variant=single,
            note=note,
            actor=actor,
            created_at=now,
        )
    )
    content.status, content.updated_at = "draft", now
    return version


def _current_variants():
    """Variants of each article's highest version (joined to `content` for filtering by site)."""
    newest = (
        select(ContentVariant.content_id, func.max(ContentVariant.version).label("version"))
        .group_by(ContentVariant.content_id)
        .subquery()
    )
    return (
        select(ContentVariant)
        .join(Content, Content.id == ContentVariant.content_id)
        .join(
            newest,
            (newest.c.content_id == ContentVariant.content_id) & (newest.c.version == ContentVariant.version),
        )
    )


@functools.cache
def _cache_upsert(dialect: str) -> Any:
    """`INSERT … ON CONFLICT (key) DO UPDATE` of response-cache rows, built once per dialect (building the
    `excluded` alias costs more than running the statement)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(ResponseCache.__table__)
    return statement.on_conflict_do_update(
        index_elements=[ResponseCache.key],
        set_={
            "answer": statement.excluded.answer,
            "model": statement.excluded.model,
            "last_used_at": statement.excluded.last_used_at,
        },
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
