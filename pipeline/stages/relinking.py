"""Existing articles brought up to date with the link plan (site setting `links.update_existing`).

An article written before its planned targets existed lacks links to them. With the setting on, the
content stage gives each such article a new version whose last section (before the FAQ) ends with a
"Read also" paragraph linking the missing targets; the version goes through review like any other (the
article returns to `draft`, earlier versions stay). No model is called: the text is the reviewed one, only
the links are added, in the site's language (`pipeline.language.labels`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from html import escape
from typing import Any

from pipeline.article_html import count_words, plain_text
from pipeline.language import labels
from pipeline.linking import LinkPlan, LinkTarget, linked_urls
from pipeline.models import ContentVariant
from pipeline.stages import RunSite
from pipeline.store import Store
from pipeline.store.writing import carried_variant

ACTOR = "links"


def relink_existing(store: Store, run: RunSite, plan: LinkPlan, skip_ideas: Collection[int] = ()) -> int:
    """Give every article of the site whose current text lacks links to planned targets that have an article
    now a new version with them; returns how many articles got one. Articles of `skip_ideas` (just written,
    with the plan's links as data) and articles a regeneration run holds are left alone."""
    site_id = run.site.id
    idea_of = {content_id: idea_id for idea_id, content_id in store.content_ids_by_idea(site_id).items()}
    written = set(idea_of.values())  # links are added only to articles that exist, never to a plan's promise
    current: dict[int, list[ContentVariant]] = defaultdict(list)
    for variant in store.current_variants(site_id):
        current[variant.content_id].append(variant)
    words = labels(run.settings.language)
    relinked = 0
    for content_id, variants in sorted(current.items()):
        if idea_of[content_id] in skip_ideas:
            continue
        targets = tuple(t for t in plan.links_of(idea_of[content_id]) if t.idea_id in written)
        updated = [_with_links(variant, targets, words.read_also, words.faq) for variant in variants]
        if all(row is None for row in updated):
            continue
        rows = [
            row if row is not None else carried_variant(variant) for row, variant in zip(updated, variants, strict=True)
        ]
        version = store.add_next_version(
            content_id, variants[0].version, rows, actor=ACTOR, note="links added to articles planned since"
        )
        relinked += version is not None
    return relinked


def _with_links(
    variant: ContentVariant, targets: tuple[LinkTarget, ...], read_also: str, faq: str
) -> dict[str, Any] | None:
    """The variant's row with a paragraph linking the targets its body lacks (None when it lacks none)."""
    present = {url.rstrip("/") for url in linked_urls(variant.body_html)}
    missing = [t for t in targets if t.url.rstrip("/") not in present]
    if not missing:
        return None
    anchors = ", ".join(f'<a href="{escape(t.url)}">{escape(t.anchor, quote=False)}</a>' for t in missing)
    paragraph = f"<p>{escape(read_also, quote=False)}: {anchors}.</p>"
    body = variant.body_html
    faq_heading = f"<h2>{escape(faq, quote=False)}</h2>"
    # The paragraph closes the article's own text: before the FAQ section, whose shape is fixed.
    at = body.rfind(faq_heading)
    body = f"{body[:at]}{paragraph}\n{body[at:]}" if at >= 0 else f"{body}\n{paragraph}"
    return carried_variant(variant) | {
        "body_html": body,
        "word_count": variant.word_count + count_words(plain_text(paragraph)),
    }
