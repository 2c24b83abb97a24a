"""The store: every read and write of pipeline data goes through `Store`.

Writes are idempotent by construction: rows are inserted on their natural key with
`ON CONFLICT DO NOTHING` (or `DO UPDATE` where the input is the source of truth), and each item's
rows are written in one transaction, so a re-run never duplicates and a failure never half-writes.
The schema is created and upgraded by Alembic on open (`Store.migrate`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

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
    Keyword,
    ModelCall,
    ResponseCache,
    Site,
    utcnow,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()


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
            used = set(assignments.values())
            has_ideas = set(session.scalars(select(Idea.cluster_id).where(Idea.site_id == site_id).distinct()))
            for key, cluster_id in ids.items():
                if key not in used and cluster_id not in has_ideas:
                    session.delete(session.get(Cluster, cluster_id))
            return len(new)

    def refresh_cluster_stats(self, site_id: int, top_n: int = 10) -> None:
        """Recompute count, volume, mean difficulty, dominant intent and top keywords per cluster."""
        with self.transaction() as session:
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
                intents = Counter(k.intent for k in rows if k.intent)
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
        """Insert a cluster's ideas on their natural key (cluster, title slug); returns rows added."""
        values = [{"site_id": site_id, "cluster_id": cluster_id, "created_at": utcnow(), **idea} for idea in ideas]
        if not values:
            return 0
        with self.transaction() as session:
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

    def add_content(self, site_id: int, idea_id: int, variant: Mapping[str, Any]) -> bool:
        """Create the article for an idea with its first variant (version 1, A) in one transaction.

        Returns False (and writes nothing) when the idea already has an article.
        """
        with self.transaction() as session:
            insert = self._insert(session)
            now = utcnow()
            content_id = session.scalar(
                insert(Content)
                .values(site_id=site_id, idea_id=idea_id, status="draft", created_at=now, updated_at=now)
                .on_conflict_do_nothing(index_elements=[Content.idea_id])
                .returning(Content.id)
            )
            if content_id is None:
                return False
            session.execute(
                ContentVariant.__table__.insert(),
                [{"content_id": content_id, "version": 1, "variant": "A", "created_at": now, **variant}],
            )
            return True

    def current_variants(self, site_id: int) -> list[ContentVariant]:
        """The newest version's variants of every article of a site."""
        with self._sessions() as session:
            newest = (
                select(ContentVariant.content_id, func.max(ContentVariant.version).label("version"))
                .group_by(ContentVariant.content_id)
                .subquery()
            )
            statement = (
                select(ContentVariant)
                .join(Content, Content.id == ContentVariant.content_id)
                .join(
                    newest,
                    (newest.c.content_id == ContentVariant.content_id) & (newest.c.version == ContentVariant.version),
                )
                .where(Content.site_id == site_id)
                .order_by(ContentVariant.content_id, ContentVariant.variant)
            )
            return list(session.scalars(statement))

    # -- image prompts ----------------------------------------------------------------------------

    def variants_without_image_prompts(self, site_id: int) -> list[ContentVariant]:
        """Current variants that have no image prompts yet."""
        with self._sessions() as session:
            have = set(session.scalars(select(ImagePrompt.variant_id).where(ImagePrompt.site_id == site_id)))
        return [variant for variant in self.current_variants(site_id) if variant.id not in have]

    def add_image_prompts(self, site_id: int, variant_id: int, prompts: Iterable[Mapping[str, Any]]) -> int:
        """Insert a variant's image prompts on (variant, kind, position) in one transaction."""
        values = [{"site_id": site_id, "variant_id": variant_id, "created_at": utcnow(), **p} for p in prompts]
        if not values:
            return 0
        with self.transaction() as session:
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
        """Append ledger rows, store validated answers in the response cache and count cache hits, in one
        transaction (the engine batches these so the store is not a per-call bottleneck)."""
        if not calls and not cache and not hits:
            return
        with self.transaction() as session:
            now = utcnow()
            if calls:
                session.execute(ModelCall.__table__.insert(), [{"created_at": now, **values} for values in calls])
            insert = self._insert(session)
            for entry in cache:
                statement = insert(ResponseCache).values(**entry, hits=0, created_at=now, last_used_at=now)
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=[ResponseCache.key],
                        set_={
                            "answer": statement.excluded.answer,
                            "model": statement.excluded.model,
                            "last_used_at": now,
                        },
                    )
                )
            for key, count in Counter(hits).items():
                session.execute(
                    update(ResponseCache)
                    .where(ResponseCache.key == key)
                    .values(hits=ResponseCache.hits + count, last_used_at=now)
                )

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

    # -- status -----------------------------------------------------------------------------------

    def counts(self, slug: str) -> SiteCounts:
        """Row counts per stage for a site; `images` counts only files that exist."""
        site = self.site(slug)
        with self._sessions() as session:

            def count(model: type[Base]) -> int:
                return session.scalar(select(func.count()).select_from(model).where(model.site_id == site.id)) or 0

            paths = session.scalars(select(Image.path).where(Image.site_id == site.id))
            return SiteCounts(
                site=slug,
                keywords=count(Keyword),
                clusters=count(Cluster),
                ideas=count(Idea),
                content=count(Content),
                image_prompts=count(ImagePrompt),
                images=sum(1 for path in paths if Path(path).is_file()),
            )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
