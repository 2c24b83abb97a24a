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
from pydantic import BaseModel

from pipeline.clustering import ClusteringConfig, Embedder, cluster_keywords
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import Generation, ModelCallFailed, Task
from pipeline.models import UNCLUSTERED_KEY, Keyword
from pipeline.prompts.schemas import ClusterNames
from pipeline.stages import RunOptions, RunSite, StageReport, dry_run_report
from pipeline.store import Store

UNCLUSTERED_NAME = "Unclustered"
NAMING_BATCH = 20
TOP_KEYWORDS = 10
# `model` of a cluster named after its top keyword because the model gave it no usable name: such
# clusters go downstream under that name, are counted, and are sent to the model again on the next run.
FALLBACK_MODEL = "fallback-top-keyword"


@dataclass(frozen=True)
class Unnamed:
    """A cluster waiting for a name: its key and what the model is shown."""

    key: str
    top_keywords: list[str]
    dominant_intent: str | None


def build_clusters(
    store: Store,
    engine: ModelEngine,
    site: RunSite | str,
    options: RunOptions = RunOptions(),
    *,
    recluster: bool = False,
) -> StageReport:
    """Assign unclustered keywords, refresh cluster statistics, and have the model name new clusters."""
    run = RunSite.of(store, site)
    settings = run.settings
    keywords = store.keywords(run.site.id)
    if not keywords:
        raise ValueError(f"site '{run.site.slug}' has no keywords yet: materialize the keywords asset first")
    pending = sum(1 for k in keywords if k.cluster_id is None) if not recluster else len(keywords)
    config = ClusteringConfig(target_cluster_size=settings.target_cluster_size)
    existing = {} if recluster else store.cluster_members(run.site.id)

    if options.dry_run:
        # Projected with the lexical backend: a dry run calls nothing, embeddings included.
        assignments = (
            cluster_keywords([k.normalized for k in keywords], existing, config, None).assignments if pending else {}
        )
        unnamed = _projected_unnamed(store, run.site.id, keywords, assignments)
        names = sorted(c.name for c in store.clusters(run.site.id) if c.name and c.model != FALLBACK_MODEL)
        tasks = list(_naming_tasks(run.site.name, lambda: names, options.select(unnamed, key=lambda u: u.key)))
        report = dry_run_report(engine.estimate("clusters", tasks), len(unnamed))
        report.counts["keywords_to_assign"] = pending
        return report

    report = StageReport()
    created = 0
    backend: str = settings.clustering_backend  # becomes the backend actually used
    if pending:
        texts = [k.normalized for k in keywords]
        embed = embedder(backend, engine)
        try:
            result = cluster_keywords(texts, existing, config, embed)
            backend = "lexical" if embed is None else ("local" if backend == "local" else "semantic")
        except ModelCallFailed as failure:
            if backend != "auto":
                raise
            # `auto` with an endpoint that has no embeddings: lexical clustering, and the run says so.
            result = cluster_keywords(texts, existing, config, None)
            backend = f"lexical (embeddings unavailable: {failure.message[:200]})"
        created = store.apply_cluster_assignments(run.site.id, result.assignments)
    store.refresh_cluster_stats(run.site.id, top_n=TOP_KEYWORDS)

    named, fallbacks = _name_new_clusters(store, engine, run.site.id, run.site.name, options, report)
    clusters = store.clusters(run.site.id)
    bucket = next((c for c in clusters if c.key == UNCLUSTERED_KEY), None)
    report.counts = {
        "keywords": len(keywords),
        "keywords_assigned_this_run": pending,
        "clusters": sum(1 for c in clusters if c.key != UNCLUSTERED_KEY),
        "clusters_created": created,
        "clusters_named": named,
        "clusters_named_by_fallback": fallbacks,
        "clusters_with_fallback_names_total": sum(1 for c in clusters if c.model == FALLBACK_MODEL),
        "unclustered_keywords": bucket.keyword_count if bucket else 0,
    }
    report.notes["clustering_backend"] = backend if pending else "(no keywords to assign)"
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
    if backend == "semantic" or (backend == "auto" and engine.embedding_provider.embeddings):

        def embed(texts: Sequence[str]) -> np.ndarray:
            return np.asarray(engine.embed("embeddings", list(texts)), dtype=np.float32)

        return embed
    return None


def _name_new_clusters(
    store: Store, engine: ModelEngine, site_id: int, site_name: str, options: RunOptions, report: StageReport
) -> tuple[int, int]:
    """Name clusters without a (real) name; returns (named by the model, named after their top keyword)."""
    # `force` names every cluster again; otherwise new ones and those that only have a fallback name.
    clusters = [
        c
        for c in store.clusters(site_id)
        if (c.name is None or c.model == FALLBACK_MODEL or options.force) and c.keyword_count > 0
    ]
    for cluster in clusters:
        if cluster.key == UNCLUSTERED_KEY and cluster.name is None:
            store.name_cluster(
                cluster.id,
                UNCLUSTERED_NAME,
                "Keywords too far from every cluster; shown so nothing is silently dropped.",
                {"provider": "pipeline", "model": "rule", "prompt_version": "-"},
            )
    by_key = {c.key: c for c in clusters if c.key != UNCLUSTERED_KEY}
    unnamed = [Unnamed(c.key, c.top_keywords, c.dominant_intent) for c in by_key.values()]
    unnamed = options.select(unnamed, key=lambda u: by_key[u.key].id)
    report.items += len(unnamed)
    named = fallbacks = 0

    def names_so_far() -> list[str]:
        return sorted(c.name for c in store.clusters(site_id) if c.name and c.model != FALLBACK_MODEL)

    for task, outcome in engine.generate_each("clusters", _naming_tasks(site_name, names_so_far, unnamed)):
        wanted = task.item
        # A rejected answer (some keys missing) still names the clusters it did name.
        usable = _usable_names(outcome.answer, wanted) if outcome.answer is not None else {}
        for key in wanted:
            cluster = by_key[key]
            if key in usable:
                name, description = usable[key]
                store.name_cluster(cluster.id, name, description, provenance(engine, outcome))
                named += 1
                continue
            why = str(outcome) if isinstance(outcome, ModelCallFailed) else "the model did not name it"
            line = f"clusters: cluster {key}: {why}; named after its top keyword until a re-run"
            # No answer at all is a failed call; an answer that left this key out is a counted fallback.
            (report.failures if outcome.answer is None else report.degraded).append(line)
            if cluster.name is None or cluster.model == FALLBACK_MODEL:
                fallback = fallback_name(cluster.top_keywords, key)
                # No description: it would reach the ideas prompt as if it described the topic.
                store.name_cluster(
                    cluster.id, fallback, "", {"provider": "pipeline", "model": FALLBACK_MODEL, "prompt_version": "-"}
                )
                fallbacks += 1
    return named, fallbacks


def provenance(engine: ModelEngine, outcome: Generation[ClusterNames] | ModelCallFailed) -> dict[str, str]:
    """Provenance of names taken from an answer (accepted, or the usable part of a rejected one)."""
    if isinstance(outcome, ModelCallFailed):
        model = engine.catalog.stage("clusters").model
        return {"provider": engine.provider.name, "model": model, "prompt_version": "rejected-answer"}
    return outcome.provenance()


def fallback_name(top_keywords: Sequence[str], key: str) -> str:
    """A cluster's name when the model gives none: its top keyword in title case (or its key)."""
    source = top_keywords[0] if top_keywords else key
    return " ".join(word[:1].upper() + word[1:] for word in source.split())[:200] or key


def _usable_names(answer: BaseModel, wanted: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Names for the wanted keys only, the first per key, with a non-empty name after clean-up."""
    usable: dict[str, tuple[str, str]] = {}
    if not isinstance(answer, ClusterNames):  # a rejected answer comes back as its schema's instance
        return usable
    for entry in answer.clusters:
        name = _clean_name(entry.name)
        if entry.key in wanted and entry.key not in usable and name:
            usable[entry.key] = (name, " ".join(entry.description.split())[:1000])
    return usable


def _clean_name(text: str) -> str:
    # Names are labels: one line, no markup characters, bounded length.
    return " ".join("".join(ch for ch in text if ch.isprintable() and ch not in "<>`").split())[:200]


def _naming_check(wanted: Sequence[str]) -> Callable[[ClusterNames], str | None]:
    def check(answer: ClusterNames) -> str | None:
        missing = [key for key in wanted if key not in _usable_names(answer, wanted)]
        if missing:
            return f"name every cluster exactly once by its key; missing or empty: {', '.join(missing)}"
        return None

    return check


def _naming_tasks(
    site_name: str, existing_names: Callable[[], list[str]], unnamed: Sequence[Unnamed]
) -> Iterator[Task[ClusterNames, list[str]]]:
    """Batches of clusters to name. Built lazily, so each batch sees the names given before it."""
    for start in range(0, len(unnamed), NAMING_BATCH):
        group = unnamed[start : start + NAMING_BATCH]
        keys = [u.key for u in group]
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
            choices={"clusters.key": keys},
            sizes={"clusters": (len(keys), len(keys))},
            check=_naming_check(keys),
            item=keys,
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
