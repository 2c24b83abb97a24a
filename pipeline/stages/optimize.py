"""The optimisation pass (`optimize: true` in the content asset's run config): one bounded model pass over
the articles that fail the content checks, each written as a new version through review.

Which articles: current variants of `draft` and `approved` articles that fail a check a rewrite can fix
(`FIXABLE`), whose text did not already come from this pass: every written version gets at most one
optimisation, so re-running changes nothing and pays nothing. Published articles are left to the metric
triggers (their text is live). The answer is accepted exactly as a new article is (`content.variant_row`:
sections, planned links only, the FAQ), and the whole version (the optimised variants and copies of the
others) goes in at once as the next version, back to `draft`; the checks run again afterwards.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pipeline.article_html import plain_text
from pipeline.content_checks import CheckFailure, CheckOutcome, run_checks
from pipeline.keywords import normalize_keyword
from pipeline.language import labels
from pipeline.linking import site_link_plan
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import ModelCallFailed, Task
from pipeline.models import ContentStatus, ContentVariant
from pipeline.prompts.schemas import OptimizedArticle
from pipeline.stages import RunOptions, RunSite, StageReport, dry_run_report
from pipeline.stages.content import (
    ArticleCheck,
    accepted_row,
    article_choices,
    article_data,
    cluster_questions,
    page_rules,
)
from pipeline.store import Store
from pipeline.store.writing import carried_variant

PROMPT = "article_optimize"
ACTOR = "optimize"
# Checks a rewrite of the text can fix; alt texts belong to image prompts and are not among them.
FIXABLE = (
    "keyword_placement",
    "meta_lengths",
    "word_count_band",
    "readability",
    "internal_links",
    "banned_phrases",
    "near_duplicates",
)
_EDITABLE = (ContentStatus.DRAFT, ContentStatus.APPROVED)
_H2_SPLIT = re.compile(r"(<h2[^>]*>.*?</h2>)", re.IGNORECASE | re.DOTALL)


def optimize_articles(
    store: Store, engine: ModelEngine, site: RunSite | str, options: RunOptions = RunOptions()
) -> StageReport:
    """Rewrite every article failing a fixable check once, as its next version; report checks before/after."""
    run = RunSite.of(store, site)
    site_id, taxonomy = run.site.id, run.settings.taxonomy
    before = run_checks(store, site_id, run.settings)
    failing = _failing_variants(before)
    variants: dict[int, list[ContentVariant]] = defaultdict(list)
    for current_variant in store.current_variants(site_id):
        variants[current_variant.content_id].append(current_variant)
    contents = store.content_by_ids(variants)
    ideas = {idea.id: idea for idea in store.ideas(site_id)}
    clusters = {cluster.id: cluster for cluster in store.clusters(site_id)}
    plan = site_link_plan(store, site_id, run.settings)
    already = skipped = 0
    chosen: list[tuple[int, ContentVariant]] = []
    for content_id, letter in sorted(failing):
        content = contents.get(content_id)
        variant = next((v for v in variants.get(content_id, []) if v.variant == letter), None)
        if content is None or variant is None or content.status not in _EDITABLE or content.regeneration_run_id:
            skipped += 1
            continue
        if variant.prompt_version.startswith(f"{PROMPT}@"):
            already += 1  # this text came from the pass already: one optimisation per written version
            continue
        chosen.append((content_id, variant))
    if options.item_id is not None:
        chosen = [(c, v) for c, v in chosen if c == options.item_id]
    if options.limit is not None:
        chosen = chosen[: options.limit]
    questions = cluster_questions(store, run, {ideas[contents[c].idea_id].cluster_id for c, _ in chosen})
    tasks = []
    for content_id, variant in chosen:
        idea = ideas[contents[content_id].idea_id]
        rule = page_rules(run, plan, idea, questions.get(idea.cluster_id, []))
        data = article_data(
            run.prompt_data(),
            idea,
            clusters[idea.cluster_id],
            taxonomy,
            links=plan.links_of(idea.id),
            faq_questions=rule.faq_questions,
        )
        data["article"] = current_article(variant, run.settings.language)
        data["failed_checks"] = [
            {"check": f.check, "problem": f.detail, "measured": f.measured, "limit": f.limit}
            for f in failing[(content_id, variant.variant)]
        ]
        data["limits"] = run.settings.checks.model_dump()
        tasks.append(
            Task(
                ref=f"content:{content_id}:{variant.variant}:v{variant.version}:optimize",
                prompt_name=PROMPT,
                data=data,
                schema=OptimizedArticle,
                choices=article_choices(idea.target_keywords, taxonomy, rule.faq_questions),
                check=ArticleCheck(idea.target_keywords, taxonomy, rule),
                item=(content_id, variant, idea),
            )
        )
    if options.dry_run:
        return dry_run_report(engine.estimate("content", tasks), len(tasks))
    report = StageReport(items=len(tasks))
    answers: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for batch in engine.generate_batches("content", tasks):
        for task, outcome in batch:
            content_id, variant, idea = task.item
            if isinstance(outcome, ModelCallFailed):
                report.failures.append(f"optimisation of content {content_id} {variant.variant}: {outcome}; kept")
                continue
            answer = accepted_row(task, outcome.answer)
            for counter in ("dropped_keywords", "invented_links", "internal_links"):
                answer.pop(counter)
            answers[content_id][variant.variant] = answer | outcome.provenance()
    optimized = 0
    for content_id, rows in sorted(answers.items()):
        current = sorted(variants[content_id], key=lambda v: v.variant)
        version_rows = [rows.get(v.variant) or carried_variant(v) for v in current]
        for row, variant in zip(version_rows, current, strict=True):
            row["variant"] = variant.variant
        written = store.add_next_version(
            content_id, current[0].version, version_rows, actor=ACTOR, note="optimised for failed content checks"
        )
        optimized += written is not None
    after = run_checks(store, site_id, run.settings)
    report.counts = {
        "articles_failing_checks": len({c for c, _ in failing}),
        "variants_optimized": sum(len(rows) for rows in answers.values()),
        "articles_optimized": optimized,
        "optimized_already": already,
        "not_editable": skipped,
    }
    report.notes = {
        "checks_before": "; ".join(outcome.summary() for outcome in before),
        "checks_after": "; ".join(outcome.summary() for outcome in after),
    }
    return report


class _Failure:
    """A failed check of one variant, with the check's name."""

    def __init__(self, check: str, failure: CheckFailure) -> None:
        self.check, self.detail, self.measured, self.limit = check, failure.detail, failure.measured, failure.limit


def _failing_variants(outcomes: list[CheckOutcome]) -> dict[tuple[int, str], list[_Failure]]:
    """(content id, variant) -> the fixable checks it failed."""
    failing: dict[tuple[int, str], list[_Failure]] = defaultdict(list)
    for outcome in outcomes:
        if outcome.name in FIXABLE:
            for failure in outcome.failures:
                failing[(failure.content_id, failure.variant)].append(_Failure(outcome.name, failure))
    return failing


def current_article(variant: ContentVariant, language: str) -> dict[str, Any]:
    """A stored variant in the shape of an `ArticleDraft` answer (intro, sections, conclusion), its FAQ
    section left out: the stage adds it again from the answer's `faq`, in its one fixed shape."""
    parts = _H2_SPLIT.split(variant.body_html)
    intro, sections = parts[0].strip(), []
    faq_title = normalize_keyword(labels(language).faq)
    for heading_html, html in zip(parts[1::2], parts[2::2], strict=False):
        heading = plain_text(heading_html)
        if normalize_keyword(heading) == faq_title:
            continue
        sections.append({"heading": heading, "html": html.strip()})
    return {
        "title": variant.title,
        "meta_title": variant.meta_title,
        "meta_description": variant.meta_description,
        "intro_html": intro,
        "sections": sections,
        "conclusion_html": "",
        "primary_keyword": variant.primary_keyword,
        "secondary_keywords": list(variant.secondary_keywords),
        "tags": list(variant.tags),
        "categories": list(variant.categories),
    }
