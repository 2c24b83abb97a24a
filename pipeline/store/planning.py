"""Planning: sites, their keywords, the clusters keywords are grouped into, and the ideas planned per cluster."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update

from pipeline.keywords import KeywordRow
from pipeline.models import (
    UNCLUSTERED_KEY,
    Cluster,
    Idea,
    Keyword,
    Site,
    utcnow,
)
from pipeline.store.base import StoreBase, UnknownSite, _chunks


class PlanningStore(StoreBase):
    """Sites, keywords, clusters and ideas."""

    def upsert_site(self, slug: str, name: str, keywords_file: str | None) -> Site:
        """Register a site or update its display name and keyword file; returns the stored row."""
        with self.transaction() as session:
            insert = self._insert(session)
            values: dict[str, Any] = {"slug": slug, "name": name, "keywords_file": keywords_file, "settings": {}}
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

    def keyword_volumes(self, site_id: int, normalized: Iterable[str]) -> dict[str, int]:
        """Search volume of the named keywords of a site (normalised text -> volume, 0 when unknown)."""
        wanted = sorted(set(normalized))
        volumes: dict[str, int] = {}
        with self._sessions() as session:
            for chunk in _chunks(wanted, 500):
                rows = session.execute(
                    select(Keyword.normalized, Keyword.volume).where(
                        Keyword.site_id == site_id, Keyword.normalized.in_(chunk)
                    )
                )
                volumes.update((text, volume or 0) for text, volume in rows)
        return volumes

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
            members: dict[int | None, list[Keyword]] = {}
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

    def cluster(self, cluster_id: int) -> Cluster:
        """One cluster by id (`LookupError` if there is none)."""
        return self._row(Cluster, cluster_id)

    def plannable_clusters(self, site_id: int) -> list[Cluster]:
        """Named, non-bucket clusters with keywords, whether or not they have ideas (for a forced re-plan)."""
        return [
            c for c in self.clusters(site_id, include_unclustered=False) if c.name is not None and c.keyword_count > 0
        ]

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
        return self._insert_set_once(site_id, Idea, Idea.cluster_id, cluster_id, values, [Idea.cluster_id, Idea.key])

    def ideas(self, site_id: int, *, status: str | None = None) -> list[Idea]:
        """All ideas of a site (or those with review `status`) in creation order."""
        with self._sessions() as session:
            statement = select(Idea).where(Idea.site_id == site_id)
            if status is not None:
                statement = statement.where(Idea.status == status)
            return list(session.scalars(statement.order_by(Idea.id)))

    def idea(self, idea_id: int) -> Idea:
        """One idea by id (`LookupError` if there is none)."""
        return self._row(Idea, idea_id)
