"""Stage 2: group keywords into topic clusters algorithmically; the model only names them.

Assignments come from `pipeline.clustering`, never from model output. Only keywords without a cluster
are (re)assigned, unless `recluster` rebuilds from scratch; only clusters without a name are sent to the
model, in batches, so a re-run with no new keywords makes no calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.clustering import ClusteringConfig, cluster_keywords
from pipeline.llm.engine import ModelCallFailed, ModelEngine, Task
from pipeline.models import UNCLUSTERED_KEY
from pipeline.prompts.schemas import ClusterNames
from pipeline.sites import site_settings
from pipeline.stages import StageReport
from pipeline.store import Store

UNCLUSTERED_NAME = "Unclustered"


@dataclass(frozen=True)
class ClusterOptions:
    """Run options of the clusters stage."""

    recluster: bool = False
    naming_batch_size: int = 20


def build_clusters(
    store: Store, engine: ModelEngine, slug: str, options: ClusterOptions = ClusterOptions()
) -> StageReport:
    """Assign unclustered keywords, refresh cluster statistics, and have the model name new clusters."""
    site = store.site(slug)
    settings = site_settings(site.settings)
    keywords = store.keywords(site.id)
    if not keywords:
        raise ValueError(f"site '{slug}' has no keywords yet: materialize the keywords asset first")
    pending = sum(1 for k in keywords if k.cluster_id is None)
    created = 0
    if pending or options.recluster:
        existing = {} if options.recluster else store.cluster_members(site.id)
        result = cluster_keywords(
            [k.normalized for k in keywords],
            existing,
            ClusteringConfig(target_cluster_size=settings.target_cluster_size),
        )
        created = store.apply_cluster_assignments(site.id, result.assignments)
    store.refresh_cluster_stats(site.id)

    report = StageReport()
    named = _name_new_clusters(store, engine, site.id, site.name, options.naming_batch_size, report)
    clusters = store.clusters(site.id)
    bucket = next((c for c in clusters if c.key == UNCLUSTERED_KEY), None)
    report.counts = {
        "keywords": len(keywords),
        "keywords_assigned_this_run": pending if not options.recluster else len(keywords),
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


def _name_new_clusters(
    store: Store, engine: ModelEngine, site_id: int, site_name: str, batch: int, report: StageReport
) -> int:
    unnamed = [c for c in store.clusters(site_id) if c.name is None and c.keyword_count > 0]
    named = 0
    for cluster in unnamed:
        if cluster.key == UNCLUSTERED_KEY:
            store.name_cluster(
                cluster.id,
                UNCLUSTERED_NAME,
                "Keywords too far from every cluster; shown so nothing is silently dropped.",
                {"provider": "pipeline", "model": "rule", "prompt_version": "-"},
            )
    to_name = [c for c in unnamed if c.key != UNCLUSTERED_KEY]
    # A generator: each batch is built after the previous one is stored, so it sees the names given so far.
    tasks = (
        Task(
            ref=f"clusters:{group[0].key}..{group[-1].key}",
            prompt_name="cluster_names",
            data={
                "site": site_name,
                "existing_names": sorted(c.name for c in store.clusters(site_id) if c.name),
                "clusters": [
                    {"key": c.key, "keywords": c.top_keywords, "dominant_intent": c.dominant_intent} for c in group
                ],
            },
            schema=ClusterNames,
        )
        for group in (to_name[i : i + batch] for i in range(0, len(to_name), batch))
    )
    by_key = {c.key: c for c in to_name}
    for task, outcome in engine.generate_each("clusters", tasks):
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
            store.name_cluster(by_key[key].id, name, entry.description.strip(), outcome.provenance())
            named += 1
    return named
