"""Stage 4: one article per idea, stored as version 1, variant A, status `draft`.

The model returns structured sections; we assemble and sanitise the HTML (`pipeline.article_html`), so
every stored body has real H2 sections. Tags and categories are filtered against the site's taxonomy when
one is set (the model may not invent them). An answer with no usable body is a failure, never content.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.article_html import count_words, plain_text, read_sections, render_article
from pipeline.faq import faq_questions
from pipeline.keywords import normalize_keyword
from pipeline.language import labels
from pipeline.linking import LinkPlan, LinkTarget, keep_planned_links, site_link_plan
from pipeline.llm.engine import ModelEngine
from pipeline.llm.tasks import ModelCallFailed, Task
from pipeline.models import Cluster, Idea, IdeaStatus
from pipeline.output_safety import markdown_block, markdown_text
from pipeline.prompts.schemas import ArticleDraft
from pipeline.sites import Taxonomy
from pipeline.stages import RunOptions, RunSite, StageReport, dry_run_report
from pipeline.stages.relinking import relink_existing
from pipeline.store import Store

MIN_WORDS = 80
MAX_TAGS = 8


def write_content(
    store: Store, engine: ModelEngine, site: RunSite | str, options: RunOptions = RunOptions()
) -> StageReport:
    """Write the article of every idea that has none, saving each as soon as it is written."""
    run = RunSite.of(store, site)
    site_id = run.site.id
    clusters = {c.id: c for c in store.clusters(site_id)}
    # Only approved ideas are written (a site with `ideas_need_approval` has the others wait as `proposed`).
    approved = IdeaStatus.APPROVED.value
    candidates = store.ideas(site_id, status=approved) if options.force else store.ideas_without_content(site_id)
    awaiting = {"ideas_awaiting_approval": store.idea_status_counts(site_id)[IdeaStatus.PROPOSED.value]}
    existing = store.content_ids_by_idea(site_id) if options.force else {}
    # The plan covers every approved idea of the site, written or not, so links between articles written in the
    # same run (or later) already point at the right URLs.
    plan = site_link_plan(store, site_id, run.settings)
    selected = options.select(candidates)
    questions = cluster_questions(store, run, {idea.cluster_id for idea in selected})
    # Built as the engine takes them: the first call starts before the last task is built.
    tasks = (
        article_task(
            run, idea, clusters[idea.cluster_id], plan, page_rules(run, plan, idea, questions.get(idea.cluster_id, []))
        )
        for idea in selected
    )
    if options.dry_run:
        dry = dry_run_report(engine.estimate("content", list(tasks)), len(selected))
        dry.counts |= awaiting
        return dry
    report = StageReport(items=len(selected))
    written = dropped_keywords = invented_links = internal_links = 0
    done: set[int] = set()
    for batch in engine.generate_batches("content", tasks):
        new_articles = []
        for task, outcome in batch:
            if isinstance(outcome, ModelCallFailed):
                report.failures.append(f"{outcome}; not stored")
                continue
            # Accepted by the engine only after its `ArticleCheck`: this cannot raise `UnusableArticle`.
            variant = accepted_row(task, outcome.answer)
            dropped_keywords += variant.pop("dropped_keywords")
            invented_links += variant.pop("invented_links")
            internal_links += variant.pop("internal_links")
            idea_id = task.item.id
            done.add(idea_id)
            if idea_id in existing:  # forced rewrite: a new version, history kept, back to draft
                store.add_content_version(existing[idea_id], variant | outcome.provenance(), actor="force")
                written += 1
            else:
                new_articles.append((idea_id, variant | outcome.provenance()))
        written += store.add_contents(site_id, new_articles)
    relinked = 0
    if run.settings.links.update_existing and written and options.item_id is None:
        # Articles written before the ones this run wrote get a new version linking to them (only when
        # something was written: otherwise nothing new can be linked, and no bodies need reading).
        relinked = relink_existing(store, run, plan, skip_ideas=done)
    # Totals are counted by the database and only the previewed articles are loaded: a site's whole
    # corpus of HTML is not read back to describe one run.
    articles_total, words_total = store.article_totals(site_id)
    variants = store.current_variants(site_id, limit=15)
    report.counts = {
        "articles_written": written,
        "articles_total": articles_total,
        "words_written_total": words_total,
        "invented_keywords_dropped": dropped_keywords,
        "invented_links_removed": invented_links,
        "internal_links_total": internal_links,
        "articles_relinked": relinked,
        **awaiting,
    }
    report.preview = [
        {"title": v.title, "words": v.word_count, "primary_keyword": v.primary_keyword, "tags": ", ".join(v.tags)}
        for v in variants
    ]
    if variants:
        report.markdown = article_markdown(variants[0].title, variants[0].meta_description, variants[0].body_html)
    return report


class UnusableArticle(ValueError):
    """A model answer that must not be stored as an article (no sections, too short)."""


@dataclass(frozen=True)
class PageRules:
    """What an article's stored body must hold beyond the answer's own text: only the planned links, and
    the FAQ section (under `faq_heading`) answering `faq_questions` when the site has FAQs on."""

    links: Collection[str] = ()
    faq_heading: str | None = None
    faq_questions: Sequence[str] = ()


def page_rules(run: RunSite, plan: LinkPlan, idea: Idea, questions: Sequence[str]) -> PageRules:
    """An idea's `PageRules`: its planned links, and the FAQ when the site has FAQs on."""
    heading = labels(run.settings.language).faq if run.settings.faq else None
    return PageRules(plan.allowed_urls(idea.id), heading, questions if heading else ())


def article_task(
    run: RunSite, idea: Idea, cluster: Cluster, plan: LinkPlan, rules: PageRules
) -> Task[ArticleDraft, Idea]:
    """The engine task writing one idea's article, with its planned links and FAQ questions as data."""
    taxonomy = run.settings.taxonomy
    return Task(
        ref=f"idea:{idea.id}",
        prompt_name="article",
        data=article_data(
            run.prompt_data(), idea, cluster, taxonomy, links=plan.links_of(idea.id), faq_questions=rules.faq_questions
        ),
        schema=ArticleDraft,
        choices=article_choices(idea.target_keywords, taxonomy, rules.faq_questions),
        check=ArticleCheck(idea.target_keywords, taxonomy, rules),
        item=idea,
    )


def cluster_questions(store: Store, run: RunSite, cluster_ids: Collection[int]) -> dict[int, list[str]]:
    """The FAQ questions of each cluster (its question keywords, highest volume first), when FAQs are on."""
    if not run.settings.faq:
        return {}
    language = run.settings.language
    return {cid: faq_questions((k.keyword for k in store.cluster_keywords(cid)), language) for cid in cluster_ids}


def article_data(
    site: Mapping[str, Any] | str,
    idea: Idea,
    cluster: Cluster,
    taxonomy: Taxonomy | None,
    *,
    links: Sequence[LinkTarget] = (),
    faq_questions: Sequence[str] = (),
) -> dict[str, Any]:
    """What the article prompts get: the site (`RunSite.prompt_data`, or just its name), the idea, its
    cluster, the site's taxonomy, the planned links and the FAQ questions to answer."""
    return {
        "site": {"name": site} if isinstance(site, str) else dict(site),
        "idea": {
            "title": idea.title,
            "angle": idea.angle,
            "content_type": idea.content_type,
            "outline": idea.outline,
            "target_keywords": idea.target_keywords,
            "estimated_word_count": idea.estimated_word_count,
        },
        "cluster": {"name": cluster.name, "description": cluster.description or ""},
        "taxonomy": taxonomy.model_dump() if taxonomy else None,
        "links": [link.as_data() for link in links],
        "faq_questions": list(faq_questions),
    }


def article_choices(
    targets: list[str], taxonomy: Taxonomy | None, questions: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Answer fields that must come from the inputs: keywords from the idea, FAQ questions from the data,
    tags and categories from the site's taxonomy (when one is set)."""
    choices = {"primary_keyword": targets, "secondary_keywords": targets}
    if questions:
        choices["faq.question"] = list(questions)
    if taxonomy and taxonomy.tags:
        choices["tags"] = taxonomy.tags
    if taxonomy and taxonomy.categories:
        choices["categories"] = taxonomy.categories
    return choices


class ArticleCheck:
    """The stage's acceptance rule for an article answer (see `variant_row`), run by the engine.

    Accepting an answer means building its stored form; the row built for the answer last accepted is kept
    for `row`, so the stage does not sanitise and measure the same article twice.
    """

    def __init__(self, targets: list[str], taxonomy: Taxonomy | None, rules: PageRules | None = None):
        self.targets, self.taxonomy, self.rules = targets, taxonomy, rules
        self._accepted: tuple[ArticleDraft, dict[str, Any]] | None = None

    def __call__(self, draft: ArticleDraft) -> str | None:
        try:
            self._accepted = (draft, variant_row(draft, self.targets, self.taxonomy, self.rules))
        except UnusableArticle as problem:
            return str(problem)
        return None

    def row(self, draft: ArticleDraft) -> dict[str, Any]:
        """The stored form of `draft`, an answer the engine accepted (built again only when the answer did
        not pass through this check, e.g. a cached one)."""
        accepted, self._accepted = self._accepted, None
        if accepted is not None and accepted[0] is draft:
            return accepted[1]
        return variant_row(draft, self.targets, self.taxonomy, self.rules)


def accepted_row(task: Task[Any, Any], draft: ArticleDraft) -> dict[str, Any]:
    """The stored form of an accepted answer to `task` (built by its `ArticleCheck`)."""
    check = task.check
    if not isinstance(check, ArticleCheck):
        raise TypeError(f"task {task.ref} has no ArticleCheck")
    return check.row(draft)


def variant_row(
    draft: ArticleDraft, targets: list[str], taxonomy: Taxonomy | None, rules: PageRules | None = None
) -> dict[str, Any]:
    """The stored form of an article answer: sanitised HTML with H2 sections, cleaned metadata.

    Primary and secondary keywords are the idea's target keywords: others are dropped and counted under
    `dropped_keywords` (the primary falls back to the idea's first target). With `rules`, links outside the
    plan are unlinked (counted under `invented_links`, the others under `internal_links`) and the FAQ
    section is added. Raises `UnusableArticle` for answers that must never be stored as content.
    """
    body = render_article(draft, rules.faq_heading if rules else None, rules.faq_questions if rules else ())
    invented = internal = 0
    if rules is not None:
        linked = keep_planned_links(body, rules.links)
        body, invented, internal = linked.html, linked.removed, linked.kept
    sections = read_sections(body)
    # Every word of the body is in the intro or in a section's heading or text (read once, not twice).
    words = count_words(plain_text(body.split("<h2>", 1)[0]))
    words += sum(count_words(heading) + count_words(text) for heading, text in sections)
    if not sections or words < MIN_WORDS:
        raise UnusableArticle(
            f"answer had {words} words and {len(sections)} sections; an article needs at least {MIN_WORDS} "
            "words in H2 sections"
        )
    title = " ".join(draft.title.split())[:300]
    if not title:
        raise UnusableArticle("answer had an empty title")
    chosen = _filter([draft.primary_keyword], targets)
    primary = chosen[0] if chosen else targets[0]
    secondary = [k for k in _filter(draft.secondary_keywords, targets) if k != primary]
    offered = _unique([draft.primary_keyword, *draft.secondary_keywords])
    kept = {normalize_keyword(k) for k in (primary, *secondary)}
    return {
        "title": title,
        "body_html": body,
        "meta_title": " ".join(draft.meta_title.split())[:300] or title,
        "meta_description": " ".join(draft.meta_description.split())[:400],
        "primary_keyword": primary,
        "secondary_keywords": secondary,
        "tags": _filter(draft.tags, taxonomy.tags if taxonomy else None)[:MAX_TAGS],
        "categories": _filter(draft.categories, taxonomy.categories if taxonomy else None)[:3],
        "word_count": words,
        "dropped_keywords": sum(1 for k in offered if normalize_keyword(k) not in kept),
        "invented_links": invented,
        "internal_links": internal,
    }


def article_markdown(title: str, description: str, body_html: str, excerpt_chars: int = 600) -> str:
    """A readable markdown preview of an article: title, description, each H2 with the start of its text.

    The UI renders it as Markdown, so every piece of model text is escaped (`pipeline.output_safety`):
    a title or section that spells out `<script>` or `[x](javascript:...)` shows as that text.
    """
    lines = [f"# {markdown_block(title)}", ""]
    if description.strip():
        lines += [f"*{markdown_text(' '.join(description.split()))}*", ""]
    for heading, text in read_sections(body_html):
        excerpt = text if len(text) <= excerpt_chars else text[:excerpt_chars].rsplit(" ", 1)[0] + " …"
        lines += [f"## {markdown_block(heading)}", "", markdown_block(excerpt), ""]
    return "\n".join(lines)


def _unique(values: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        cleaned = " ".join(value.split())
        if cleaned:
            seen.setdefault(normalize_keyword(cleaned), cleaned)
    return list(seen.values())


def _filter(values: list[str], allowed: list[str] | None) -> list[str]:
    """Keep values from the taxonomy (in its spelling) when one is set; otherwise de-duplicated values."""
    if allowed is None or not allowed:
        return _unique(values)
    by_key = {normalize_keyword(a): a for a in allowed}
    return _unique([by_key[k] for v in values if (k := normalize_keyword(v)) in by_key])
