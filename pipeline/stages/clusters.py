"""Stage 2: group keywords into topic clusters algorithmically; the model only names them.

Assignments come from `pipeline.clustering`, never from model output. Only keywords without a cluster
are (re)assigned, unless `recluster` rebuilds from scratch; only clusters without a name are sent to the
model, in batches, so a re-run with no new keywords makes no calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.clustering import ClusteringConfig, Embedder, cluster_keywords
from pipeline.llm.engine import ModelCallFailed, ModelEngine, Task
from pipeline.models import UNCLUSTERED_KEY, Keyword
from pipeline.prompts.schemas import ClusterNames
from pipeline.sites import site_settings
from pipeline.stages import RunOptions, StageReport, dry_run_report
from pipeline.store import Store

UNCLUSTERED_NAME = "Unclustered"
NAMING_BATCH = 20
TOP_KEYWORDS = 10


@dataclass(frozen=True)
class Unnamed:
    """A cluster waiting for a name: its key and what the model is shown."""

    key: str
    top_keywords: list[str]
    dominant_intent: str | None


def build_clusters(
    store: Store, engine: ModelEngine, slug: str, options: RunOptions = RunOptions(), *, recluster: bool = False
) -> StageReport:
    """Assign unclustered keywords, refresh cluster statistics, and have the model name new clusters."""
    site = store.site(slug)
    settings = site_settings(site.settings)
    keywords = store.keywords(site.id)
    if not keywords:
        raise ValueError(f"site '{slug}' has no keywords yet: materialize the keywords asset first")
    pending = sum(1 for k in keywords if k.cluster_id is None) if not recluster else len(keywords)
    config = ClusteringConfig(target_cluster_size=settings.target_cluster_size)
    embed = embedder(settings.clustering_backend, engine)
    existing = {} if recluster else store.cluster_members(site.id)

    if options.dry_run:
        assignments = (
            cluster_keywords([k.normalized for k in keywords], existing, config, embed).assignments if pending else {}
        )
        unnamed = _projected_unnamed(store, site.id, keywords, assignments)
        names = sorted(c.name for c in store.clusters(site.id) if c.name)
        tasks = list(_naming_tasks(site.name, lambda: names, options.select(unnamed, key=lambda u: u.key)))
        report = dry_run_report(engine.estimate("clusters", tasks), len(unnamed))
        report.counts["keywords_to_assign"] = pending
        return report

    created = 0
    if pending:
        result = cluster_keywords([k.normalized for k in keywords], existing, config, embed)
        created = store.apply_cluster_assignments(site.id, result.assignments)
    store.refresh_cluster_stats(site.id, top_n=TOP_KEYWORDS)

    report = StageReport()
    named = _name_new_clusters(store, engine, site.id, site.name, options, report)
    clusters = store.clusters(site.id)
    bucket = next((c for c in clusters if c.key == UNCLUSTERED_KEY), None)
    report.counts = {
        "keywords": len(keywords),
        "keywords_assigned_this_run": pending,
        "clusters": sum(1 for c in clusters if c.key != UNCLUSTERED_KEY),
        "clusters_created": created,
        "clusters_named": named,
        "unclustered_keywords": bucket.keyword_count if bucket else 0,
    }
    report.preview = [
        {
            "cluster": c.name or c.key,
            "keywords": c.keyword_count,
            "volume": c.total_volume,
            "mean_difficulty": c.mean_difficulty,
            "intent": c.dominant_intent,
            "top_keywords": ", ".join(c.top_keywords[:5]),
        }
        for c in clusters[:15]
    ]
    return report


def embedder(backend: str, engine: ModelEngine) -> Embedder | None:
    """The vectoriser for a site: None for the lexical default, the engine's embeddings endpoint (semantic,
    and `auto` when the provider has one), or the bundled local model."""
    if backend == "local":
        from pipeline.local_embeddings import local_embedder  # optional extra: imported only when chosen

        return local_embedder()
    if backend == "semantic" or (backend == "auto" and engine.provider.embeddings):

        def embed(texts: Sequence[str]) -> np.ndarray:
            return np.asarray(engine.embed("embeddings", list(texts)), dtype=np.float32)

        return embed
    return None


def _name_new_clusters(
    store: Store, engine: ModelEngine, site_id: int, site_name: str, options: RunOptions, report: StageReport
) -> int:
    # `force` names every cluster again; otherwise only new (unnamed) ones.
    clusters = [c for c in store.clusters(site_id) if (c.name is None or options.force) and c.keyword_count > 0]
    for cluster in clusters:
        if cluster.key == UNCLUSTERED_KEY and cluster.name is None:
            store.name_cluster(
                cluster.id,
                UNCLUSTERED_NAME,
                "Keywords too far from every cluster; shown so nothing is silently dropped.",
                {"provider": "pipeline", "model": "rule", "prompt_version": "-"},
            )
    unnamed = [Unnamed(c.key, c.top_keywords, c.dominant_intent) for c in clusters if c.key != UNCLUSTERED_KEY]
    unnamed = options.select(unnamed, key=lambda u: next(c.id for c in clusters if c.key == u.key))
    ids = {c.key: c.id for c in clusters}
    named = 0

    def names_so_far() -> list[str]:
        return sorted(c.name for c in store.clusters(site_id) if c.name)

    for task, outcome in engine.generate_each("clusters", _naming_tasks(site_name, names_so_far, unnamed)):
        if isinstance(outcome, ModelCallFailed):
            report.failures.append(str(outcome))
            continue
        wanted = {c["key"] for c in task.data["clusters"]}
        answered = {entry.key: entry for entry in outcome.answer.clusters if entry.key in wanted}
        for key in sorted(wanted - answered.keys()):
            report.failures.append(f"clusters: the model did not name cluster {key}; it stays unnamed until a re-run")
        for key, entry in answered.items():
            name = " ".join(entry.name.split())[:200]
            if not name:
                report.failures.append(f"clusters: empty name for cluster {key}")
                continue
            store.name_cluster(ids[key], name, entry.description.strip(), outcome.provenance())
            named += 1
    return named


def _naming_tasks(
    site_name: str, existing_names: Callable[[], list[str]], unnamed: Sequence[Unnamed]
) -> Iterator[Task[ClusterNames]]:
    """Batches of clusters to name. Built lazily, so each batch sees the names given before it."""
    for start in range(0, len(unnamed), NAMING_BATCH):
        group = unnamed[start : start + NAMING_BATCH]
        yield Task(
            ref=f"clusters:{group[0].key}..{group[-1].key}",
            prompt_name="cluster_names",
            data={
                "site": site_name,
                "existing_names": existing_names(),
                "clusters": [
                    {"key": u.key, "keywords": u.top_keywords, "dominant_intent": u.dominant_intent} for u in group
                ],
            },
            schema=ClusterNames,
        )


def _projected_unnamed(
    store: Store, site_id: int, keywords: list[Keyword], assignments: dict[str, str]
) -> list[Unnamed]:
    """For a dry run: the clusters that would need a name after assigning pending keywords (nothing written)."""
    known = {c.key: c for c in store.clusters(site_id)}
    members: dict[str, list[Keyword]] = {}
    for keyword in keywords:  # already sorted by volume, highest first
        key = assignments.get(keyword.normalized)
        if key is None and keyword.cluster_id is not None:
            key = next((c.key for c in known.values() if c.id == keyword.cluster_id), None)
        if key is not None:
            members.setdefault(key, []).append(keyword)
    unnamed = []
    for key, rows in sorted(members.items()):
        if key == UNCLUSTERED_KEY or (key in known and known[key].name):
            continue
        intents = Counter(k.intent for k in rows if k.intent)
        unnamed.append(
            Unnamed(key, [k.keyword for k in rows[:TOP_KEYWORDS]], intents.most_common(1)[0][0] if intents else None)
        )
    return unnamed
