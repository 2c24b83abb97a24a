"""Regeneration: rewrite under-performing published articles as new A/B variants, from trigger firings.

For each firing the run claims the article (a lock no other run can take), asks the model to analyse
the metrics (both variants' newest values and window totals, the trend that fired, the A/B experiment's
result; all of it and the rule's instruction passed as data), asks for new variants A and B with
different briefs, and writes them as the next version, sets the article back to `draft` and consumes
the firing, all in one transaction. Image prompts and images for the new variants follow in the same run
(the `image_prompts` and `images` assets fill what is missing). If anything fails, nothing is written:
the published version stays as it is, the article is unlocked and the rule is armed again.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.article_html import plain_text, read_sections
from pipeline.linking import site_link_plan
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import ModelCallFailed, Task
from pipeline.models import TriggerFiring
from pipeline.prompts.schemas import ArticleDraft, MetricsAnalysis
from pipeline.stages import RunSite, StageReport
from pipeline.stages.content import (
    ArticleCheck,
    UnusableArticle,
    accepted_row,
    article_choices,
    article_data,
    cluster_questions,
    page_rules,
)
from pipeline.store import Store
from pipeline.triggers import experiment_result, published_windows

STAGE = "regeneration"
OPENING_CHARS = 400


class RegenerationFailed(RuntimeError):
    """One article could not be regenerated; nothing was written for it."""


def regenerate_variants(
    store: Store, engine: ModelEngine, site: RunSite | str, firing_ids: Sequence[int], run_id: str
) -> StageReport:
    """Regenerate the articles of the given firings; each article succeeds or fails on its own."""
    run = RunSite.of(store, site)
    report = StageReport(items=len(firing_ids))
    regenerated, skipped, previews = 0, 0, []
    for firing_id in firing_ids:
        firing = store.claim_firing(firing_id, run_id)
        if firing is None or firing.site_id != run.site.id:
            skipped += 1  # consumed already, or another run holds the article: never rewrite twice
            continue
        try:
            version, analysis, titles = _regenerate(store, engine, run, firing)
        except (ModelCallFailed, RegenerationFailed, UnusableArticle) as failure:
            store.fail_firing(firing.id, run_id, str(failure))
            report.failures.append(f"regeneration of content {firing.content_id}: {failure}; published version kept")
            continue
        except BaseException as error:
            store.fail_firing(firing.id, run_id, f"{type(error).__name__}: {error}")
            raise
        regenerated += 1
        previews.append(
            f"### Content {firing.content_id}: version {version}\n\n**Analysis.** {analysis.underperformed} "
            f"{analysis.comparison}\n\n- A: {titles[0]}\n- B: {titles[1]}"
        )
    report.counts = {"firings": len(firing_ids), "regenerated": regenerated, "skipped": skipped}
    report.markdown = "\n\n".join(previews) or None
    return report


def _regenerate(
    store: Store, engine: ModelEngine, run: RunSite, firing: TriggerFiring
) -> tuple[int, MetricsAnalysis, tuple[str, str]]:
    site = run.site
    content = store.content(firing.content_id)
    idea = store.idea(content.idea_id)
    cluster = store.cluster(idea.cluster_id)
    published = [v for v in store.variants(content.id) if v.version == content.published_version] or store.variants(
        content.id
    )[:1]
    taxonomy = run.settings.taxonomy
    trend = firing.observed.get("trend")
    windows = published_windows(store, content.id, trend["window_days"] if trend else None)
    analysis = engine.generate(
        STAGE,
        Task(
            ref=f"content:{content.id}:analysis",
            prompt_name="metrics_analysis",
            data={
                "article": {
                    "title": published[0].title,
                    "primary_keyword": published[0].primary_keyword,
                    "content_type": idea.content_type,
                },
                "variants": [
                    {
                        "variant": v.variant,
                        "title": v.title,
                        "meta_description": v.meta_description,
                        "opening": plain_text(v.body_html)[:OPENING_CHARS],
                        "metrics": firing.observed.get(v.variant, {}),
                    }
                    for v in published
                ],
                # Every variant with numbers (a variant may have no text of its own in this version).
                "latest": {variant: values for variant, values in firing.observed.items() if variant != "trend"},
                "windows": windows,
                "rule": {
                    "kind": trend["kind"] if trend else "value",
                    "metric": firing.metric,
                    "comparison": firing.comparison,
                    "threshold": firing.threshold,
                    "window_days": trend["window_days"] if trend else None,
                    "min_volume": trend["min_volume"] if trend else None,
                },
                "trend": trend,
                "experiment": experiment_result(store.experiment_of(content.id, content.published_version)),
                "triggered_variants": firing.triggered_variants,
                "instruction": firing.instruction,
            },
            schema=MetricsAnalysis,
        ),
    ).answer
    current = published[0]
    plan = site_link_plan(store, site.id, run.settings)
    questions = cluster_questions(store, run, [cluster.id]).get(cluster.id, [])
    rules = page_rules(run, plan, idea, questions)
    base = article_data(
        run.prompt_data(), idea, cluster, taxonomy, links=plan.links_of(idea.id), faq_questions=rules.faq_questions
    )
    tasks = [
        Task(
            ref=f"content:{content.id}:{variant}",
            prompt_name="article_rewrite",
            data=base
            | {
                "variant": variant,
                "brief": brief,
                "instruction": firing.instruction,
                "analysis": {"underperformed": analysis.underperformed, "changes": analysis.changes},
                "current": {
                    "title": current.title,
                    "meta_description": current.meta_description,
                    "sections": [heading for heading, _ in read_sections(current.body_html)],
                },
            },
            schema=ArticleDraft,
            choices=article_choices(idea.target_keywords, taxonomy, rules.faq_questions),
            check=ArticleCheck(idea.target_keywords, taxonomy, rules),
            item=variant,
        )
        for variant, brief in (("A", analysis.brief_a), ("B", analysis.brief_b))
    ]
    rows = {}
    for task, outcome in engine.generate_each(STAGE, tasks):
        if isinstance(outcome, ModelCallFailed):
            raise outcome
        variant = task.item
        row = accepted_row(task, outcome.answer)
        for count in ("dropped_keywords", "invented_links", "internal_links"):
            row.pop(count)
        rows[variant] = {"variant": variant, **row}
        rows[variant] |= outcome.provenance()
    if set(rows) != {"A", "B"}:
        raise RegenerationFailed("both variants are needed")
    summary = f"{analysis.underperformed} {analysis.comparison} Changes: {'; '.join(analysis.changes)}"
    version = store.write_regenerated_version(firing.id, firing.run_id or "", [rows["A"], rows["B"]], summary)
    return version, analysis, (rows["A"]["title"], rows["B"]["title"])
