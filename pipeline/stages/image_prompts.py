"""Stage 5: image prompts per current content variant: one featured, up to N anchored to H2 sections.

In-article prompts must name one of the article's real H2 headings; answers pointing elsewhere are
dropped (and counted), so every stored anchor exists in the article.
"""

from __future__ import annotations

from pipeline.article_html import read_sections
from pipeline.keywords import normalize_keyword
from pipeline.llm.engine import ModelCallFailed, ModelEngine, Task
from pipeline.prompts.schemas import ImagePromptSet
from pipeline.sites import site_settings
from pipeline.stages import RunOptions, StageReport, dry_run_report
from pipeline.store import Store

SECTION_EXCERPT_CHARS = 300


def generate_image_prompts(
    store: Store, engine: ModelEngine, slug: str, options: RunOptions = RunOptions()
) -> StageReport:
    """Write the image prompts of every current variant that has none, saving each variant's set as it comes."""
    site = store.site(slug)
    limit = site_settings(site.settings).in_article_images
    candidates = store.current_variants(site.id) if options.force else store.variants_without_image_prompts(site.id)
    variants = {f"variant:{v.id}": v for v in options.select(candidates)}
    sections = {ref: read_sections(v.body_html) for ref, v in variants.items()}
    tasks = [
        Task(
            ref=ref,
            prompt_name="image_prompts",
            data={
                "title": variant.title,
                "primary_keyword": variant.primary_keyword,
                "summary": variant.meta_description,
                "sections": [
                    {"heading": heading, "text": text[:SECTION_EXCERPT_CHARS]} for heading, text in sections[ref]
                ],
                "max_in_article": limit,
            },
            schema=ImagePromptSet,
        )
        for ref, variant in variants.items()
    ]
    if options.dry_run:
        return dry_run_report(engine.estimate("image_prompts", tasks), len(tasks))
    report = StageReport()
    added = off_anchor = 0
    for task, outcome in engine.generate_each("image_prompts", tasks):
        if isinstance(outcome, ModelCallFailed):
            report.failures.append(str(outcome))
            continue
        answer = outcome.answer
        if not answer.featured.prompt.strip():
            report.failures.append(f"image_prompts for {task.ref}: empty featured prompt; not stored")
            continue
        headings = {normalize_keyword(h): h for h, _ in sections[task.ref]}
        rows = [
            {
                "kind": "featured",
                "position": 0,
                "anchor_heading": None,
                "prompt": answer.featured.prompt.strip(),
                "alt_text": answer.featured.alt_text.strip()[:300] or variants[task.ref].title[:300],
            }
        ]
        used: set[str] = set()
        for item in answer.in_article:
            anchor = headings.get(normalize_keyword(item.heading))
            if anchor is None or anchor in used or not item.prompt.strip():
                off_anchor += 1
                continue
            if len(used) >= limit:
                break
            used.add(anchor)
            rows.append(
                {
                    "kind": "in_article",
                    "position": len(used),
                    "anchor_heading": anchor,
                    "prompt": item.prompt.strip(),
                    "alt_text": item.alt_text.strip()[:300] or anchor,
                }
            )
        rows = [r | outcome.provenance() for r in rows]
        if options.force:  # redo: the variant's prompts (and their images) are replaced
            added += store.replace_image_prompts(site.id, variants[task.ref].id, rows)
        else:
            added += store.add_image_prompts(site.id, variants[task.ref].id, rows)
    prompts = store.image_prompts(site.id)
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
