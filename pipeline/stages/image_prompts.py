"""Stage 5: image prompts per current content variant: one featured, up to N anchored to H2 sections.

In-article prompts must name one of the article's real H2 headings; answers pointing elsewhere are
dropped (and counted), so every stored anchor exists in the article.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.article_html import read_sections
from pipeline.keywords import normalize_keyword
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import ModelCallFailed, Task
from pipeline.prompts.schemas import ImagePromptSet
from pipeline.stages import RunOptions, RunSite, StageReport, dry_run_report
from pipeline.store import Store

SECTION_EXCERPT_CHARS = 300


def generate_image_prompts(
    store: Store, engine: ModelEngine, site: RunSite | str, options: RunOptions = RunOptions()
) -> StageReport:
    """Write the image prompts of every current variant that has none, saving each variant's set as it comes."""
    run = RunSite.of(store, site)
    site_id, limit = run.site.id, run.settings.in_article_images
    candidates = store.current_variants(site_id) if options.force else store.variants_without_image_prompts(site_id)
    variants = options.select(candidates)
    sections = {v.id: read_sections(v.body_html) for v in variants}
    tasks = [
        Task(
            ref=f"variant:{variant.id}",
            prompt_name="image_prompts",
            data={
                "title": variant.title,
                "primary_keyword": variant.primary_keyword,
                "summary": variant.meta_description,
                "sections": [
                    {"heading": heading, "text": text[:SECTION_EXCERPT_CHARS]} for heading, text in sections[variant.id]
                ],
                "max_in_article": limit,
                "language": run.settings.language,
            },
            schema=ImagePromptSet,
            choices={"in_article.heading": [heading for heading, _ in sections[variant.id]]},
            sizes={"in_article": (1, limit)} if limit and sections[variant.id] else {},
            check=_prompt_set_check([heading for heading, _ in sections[variant.id]], limit, variant.title),
            item=variant,
        )
        for variant in variants
    ]
    if options.dry_run:
        return dry_run_report(engine.estimate("image_prompts", tasks), len(tasks))
    report = StageReport(items=len(tasks))
    added = off_anchor = 0
    for task, outcome in engine.generate_each("image_prompts", tasks):
        if isinstance(outcome, ModelCallFailed):
            # The variant's existing prompts (and images) stay: an unusable answer replaces nothing.
            report.failures.append(f"{outcome}; not stored")
            continue
        variant = task.item
        headings = [heading for heading, _ in sections[variant.id]]
        rows, dropped = prompt_rows(outcome.answer, headings, limit, variant.title)
        off_anchor += dropped
        rows = [r | outcome.provenance() for r in rows]
        if options.force:  # redo: the variant's prompts (and their images) are replaced
            added += store.replace_image_prompts(site_id, variant.id, rows)
        else:
            added += store.add_image_prompts(site_id, variant.id, rows)
    prompts = store.image_prompts(site_id)
    report.counts = {
        "variants_prompted": len(tasks) - len(report.failures),
        "prompts_added": added,
        "prompts_total": len(prompts),
        "featured_total": sum(1 for p in prompts if p.kind == "featured"),
        "off_anchor_prompts_dropped": off_anchor,
    }
    report.preview = [
        {"kind": p.kind, "section": p.anchor_heading or "(featured)", "prompt": p.prompt[:120]} for p in prompts[:15]
    ]
    return report


def prompt_rows(
    answer: ImagePromptSet, headings: list[str], limit: int, title: str
) -> tuple[list[dict[str, Any]], int]:
    """Stored rows of an answer: the featured prompt, then in-article prompts anchored to real H2 headings
    (at most `limit`, one per heading); returns the rows and how many in-article prompts were dropped."""
    by_key = {normalize_keyword(h): h for h in headings}
    rows: list[dict[str, Any]] = []
    if answer.featured.prompt.strip():
        rows.append(
            {
                "kind": "featured",
                "position": 0,
                "anchor_heading": None,
                "prompt": answer.featured.prompt.strip(),
                "alt_text": _one_line(answer.featured.alt_text)[:300] or title[:300],
            }
        )
    used: set[str] = set()
    dropped = 0
    for item in answer.in_article:
        anchor = by_key.get(normalize_keyword(item.heading))
        if anchor is None or anchor in used or not item.prompt.strip() or len(used) >= limit:
            dropped += anchor is None or anchor in used or not item.prompt.strip()
            continue
        used.add(anchor)
        rows.append(
            {
                "kind": "in_article",
                "position": len(used),
                "anchor_heading": anchor,
                "prompt": item.prompt.strip(),
                "alt_text": _one_line(item.alt_text)[:300] or anchor,
            }
        )
    return rows, dropped


def _prompt_set_check(headings: list[str], limit: int, title: str) -> Callable[[ImagePromptSet], str | None]:
    """The stage's acceptance rule: a featured prompt, and at least one anchored in-article prompt when
    the article has sections and the site wants in-article images."""

    def check(answer: ImagePromptSet) -> str | None:
        rows, _ = prompt_rows(answer, headings, limit, title)
        if not rows or rows[0]["kind"] != "featured":
            return "the featured image prompt was empty"
        if limit and headings and len(rows) == 1:
            return "no in-article prompt named one of the article's H2 headings exactly as given"
        return None

    return check


def _one_line(text: str) -> str:
    return " ".join(text.split())
