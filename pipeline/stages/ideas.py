"""Stage 3: article ideas per cluster.

Target keywords are filtered against the cluster's own keywords (the model may not invent them); an idea
left with none falls back to the cluster's top keyword. Ideas are keyed by their title's slug within
the cluster, so a re-run cannot duplicate them. Before anything is stored, the cannibalisation guard
(`pipeline.cannibalisation`) drops new ideas that target a primary keyword or an intent the site already
covers, in a stored idea or a new one admitted before them; its decisions are reported. A site with
`ideas_need_approval` gets its new ideas as `proposed`: `content` writes only approved ideas.
"""

from __future__ import annotations

from typing import Any

from pipeline.cannibalisation import CannibalisationGuard, IdeaCandidate
from pipeline.keywords import normalize_keyword
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import ModelCallFailed, Task
from pipeline.models import Cluster, IdeaStatus
from pipeline.prompts.schemas import IdeaBatch, IdeaDraft
from pipeline.sites import slugify
from pipeline.stages import RunOptions, RunSite, StageReport, dry_run_report
from pipeline.store import Store

KEYWORDS_PER_PROMPT = 40


def generate_ideas(
    store: Store, engine: ModelEngine, site: RunSite | str, options: RunOptions = RunOptions()
) -> StageReport:
    """Ask for `ideas_per_cluster` ideas for each named cluster that has none; save each cluster's as it comes."""
    run = RunSite.of(store, site)
    site_id, count = run.site.id, run.settings.ideas_per_cluster
    candidates = store.plannable_clusters(site_id) if options.force else store.clusters_without_ideas(site_id)
    clusters = {c.key: c for c in options.select(candidates)}
    members = {key: store.cluster_keywords(c.id) for key, c in clusters.items()}
    tasks = [
        Task(
            ref=f"cluster:{key}",
            prompt_name="ideas",
            data={
                "site": run.prompt_data(),
                "count": count,
                "cluster": {"name": cluster.name, "description": cluster.description or ""},
                "keywords": [
                    {"keyword": k.keyword, "volume": k.volume, "intent": k.intent}
                    for k in members[key][:KEYWORDS_PER_PROMPT]
                ],
            },
            schema=IdeaBatch,
            choices={"ideas.target_keywords": [k.keyword for k in members[key][:KEYWORDS_PER_PROMPT]]},
            sizes={"ideas": (count, count)},
            check=_has_usable_idea,
            item=key,
        )
        for key, cluster in clusters.items()
    ]
    if options.dry_run:
        return dry_run_report(engine.estimate("ideas", tasks), len(tasks))
    report = StageReport(items=len(tasks))
    # With the site's approval gate on, new ideas wait as `proposed` (no article is paid for before a person
    # approves them: `pipeline ideas approve`, the desk's Ideas page); otherwise they are approved at once.
    status = IdeaStatus.PROPOSED if run.settings.ideas_need_approval else IdeaStatus.APPROVED
    guard = CannibalisationGuard(_stored_candidates(store, site_id, clusters if options.force else {}))
    added = dropped_keywords = planned = 0
    order = {task.item: index for index, task in enumerate(tasks)}
    for batch in engine.generate_batches("ideas", tasks):
        # Answers that arrive together are judged in plan order (highest-volume cluster first).
        for task, outcome in sorted(batch, key=lambda pair: order[pair[0].item]):
            if isinstance(outcome, ModelCallFailed):
                # Existing ideas stay as they were: an empty or unusable answer never replaces them.
                report.failures.append(str(outcome))
                continue
            planned += 1
            key = task.item
            allowed = {k.normalized: k.keyword for k in members[key]}
            rows = []
            for draft in outcome.answer.ideas[:count]:
                row, dropped = _idea_row(draft, allowed, members[key][0].keyword, run.settings.language)
                dropped_keywords += dropped
                if row is None:
                    report.degraded.append(f"ideas for cluster {key}: an idea had an empty title or outline; skipped")
                    continue
                rows.append(row | outcome.provenance() | {"status": status.value})
            admitted = _guarded(guard, rows, clusters[key].name or key)
            if rows and not admitted:
                # Nothing new for this cluster: a forced re-plan keeps the ideas it would have replaced.
                report.degraded.append(f"ideas for cluster {key}: every idea repeats another idea of the site")
                continue
            rows = admitted
            if options.force:  # re-plan: ideas without an article are replaced, written ones stay
                added += store.replace_unwritten_ideas(site_id, clusters[key].id, rows)
            else:
                added += store.add_ideas(site_id, clusters[key].id, rows)
    ideas = store.ideas(site_id)
    report.counts = {
        "clusters_planned": planned,
        "ideas_added": added,
        "ideas_total": len(ideas),
        "ideas_awaiting_approval": sum(1 for idea in ideas if idea.status == IdeaStatus.PROPOSED),
        "invented_keywords_dropped": dropped_keywords,
        **guard.counts,
    }
    if decisions := guard.markdown():
        report.notes["cannibalisation_decisions"] = decisions
    report.preview = [
        {
            "title": idea.title,
            "type": idea.content_type,
            "words": idea.estimated_word_count,
            "target_keywords": ", ".join(idea.target_keywords[:4]),
        }
        for idea in ideas[:15]
    ]
    return report


def _has_usable_idea(answer: IdeaBatch) -> str | None:
    """The stage's acceptance rule: at least one idea with a title and an outline."""
    if any(_idea_row(draft, {}, "-")[0] is not None for draft in answer.ideas):
        return None
    return "no usable idea: each idea needs a title and an outline of H2 headings"


def _stored_candidates(store: Store, site_id: int, replanned: dict[str, Cluster]) -> list[IdeaCandidate]:
    """The site's stored ideas as the guard sees them, without those a forced re-plan is about to replace
    (ideas of a re-planned cluster that have no article)."""
    names = {c.id: c.name or c.key for c in store.clusters(site_id)}
    replaced = {c.id for c in replanned.values()}
    written = store.content_ids_by_idea(site_id) if replaced else {}
    return [
        IdeaCandidate(idea.title, idea.target_keywords, names.get(idea.cluster_id, "?"), stored=True)
        for idea in store.ideas(site_id)
        if idea.cluster_id not in replaced or idea.id in written
    ]


def _guarded(guard: CannibalisationGuard, rows: list[dict[str, Any]], cluster: str) -> list[dict[str, Any]]:
    """The rows of one cluster the guard admits; a dropped idea's extra keywords may join the kept one."""
    kept: list[tuple[IdeaCandidate, dict[str, Any]]] = []
    for row in rows:
        candidate = IdeaCandidate(row["title"], row["target_keywords"], cluster)
        decision = guard.admit(candidate)
        if decision is None:
            kept.append((candidate, row))
        elif decision.merged_keywords:
            index = next(i for i, (c, _) in enumerate(kept) if c is decision.kept)
            merged = guard.merge_into(decision.kept, decision.merged_keywords)
            kept[index] = (merged, kept[index][1] | {"target_keywords": list(merged.target_keywords)})
    return [row for _, row in kept]


def _idea_row(
    draft: IdeaDraft, allowed: dict[str, str], fallback: str, language: str | None = None
) -> tuple[dict[str, Any] | None, int]:
    """A store row from a drafted idea, keeping only target keywords that belong to the cluster."""
    title = " ".join(draft.title.split())
    outline = list(dict.fromkeys(" ".join(h.split()) for h in draft.outline if h.strip()))[:12]
    if not title or not slugify(title) or not outline:
        return None, 0
    targets: list[str] = []
    for keyword in draft.target_keywords:
        known = allowed.get(normalize_keyword(keyword))
        if known and known not in targets:
            targets.append(known)
    dropped = len(draft.target_keywords) - len(targets)
    return {
        "key": slugify(title, 120, language),
        "title": title[:300],
        "angle": draft.angle.strip(),
        "content_type": draft.content_type,
        "outline": outline,
        "target_keywords": targets or [fallback],
        "estimated_word_count": min(max(draft.estimated_word_count, 300), 6000),
    }, max(dropped, 0)
