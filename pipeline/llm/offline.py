"""The offline provider: the embedded default, needing no key and no network.

It answers every prompt deterministically from the request's real data (cluster names from the keywords
they hold, ideas from the cluster's keywords and intents, articles from the idea's outline, image prompts
from the article's H2 sections) and renders images locally as PNG files. Everything it writes is stamped
`provider="offline"`, `model="offline"` by the engine, and images carry a visible "offline preview" band,
so its output is never mistaken for a real model's. Token counts are estimates (4 characters per token)
and cost nothing.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

from pipeline.llm.catalog import OFFLINE_MODEL, Usage
from pipeline.llm.offline_analysis import analyse_metrics as analyse_metrics  # imported from here too
from pipeline.llm.offline_images import parse_size
from pipeline.llm.offline_images import render_png as render_png  # imported from here too (the test servers)
from pipeline.llm.offline_phrases import IdeaPhrases, idea_phrases, offline_phrases
from pipeline.llm.offline_revise import optimize_article, without_banned_phrases
from pipeline.llm.wire import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    ImageRequest,
    ProviderError,
    RenderedImage,
)
from pipeline.prompts import encode_data
from pipeline.prompts.schemas import (
    ArticleDraft,
    ArticleSection,
    ClusterName,
    ClusterNames,
    FaqAnswer,
    IdeaBatch,
    IdeaDraft,
    ImagePromptDraft,
    ImagePromptSet,
    SectionImagePrompt,
)

STOPWORDS = frozenset(
    (
        "a an and are as at be best by can do does for from how i in is it my of on or should the to vs what "
        "when where which who why with without you your near me top good better cheap buy price review reviews "
        "guide tips ideas way ways make making use using get much many long"
    ).split()
)


class OfflineProvider:
    """Deterministic composer of answers for every registered prompt, and a local image renderer."""

    name = "offline"
    identity = "offline"
    endpoint = "local (deterministic, built from the inputs; no model called)"
    cacheable = False  # free and deterministic: a cache would only add writes
    embeddings = False  # clustering uses the lexical backend offline
    secrets: tuple[str, ...] = ()

    async def complete(self, request: CompletionRequest) -> Completion:
        """Compose the answer to `request` from its data."""
        composer = _COMPOSERS.get(request.prompt.name)
        if composer is None:
            raise ProviderError(
                "error", "NoComposer", f"the offline provider cannot answer prompt '{request.prompt.name}'"
            )
        answer = composer(request.data)
        usage = Usage(
            input_tokens=_tokens(request.prompt.instructions) + _tokens(encode_data(request.data)),
            output_tokens=_tokens(answer.model_dump_json()),
        )
        return Completion(answer=answer, model=OFFLINE_MODEL, usage=usage)

    async def image(self, request: ImageRequest) -> RenderedImage:
        """Render a PNG whose colours and shapes derive from the prompt, labelled as an offline preview."""
        width, height = parse_size(request.size)
        return RenderedImage(png=render_png(request.prompt, width, height), model=OFFLINE_MODEL, usage=Usage(images=1))

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Not offered offline: the lexical clustering backend needs no embeddings."""
        raise ProviderError("error", "Unsupported", "the offline provider has no embeddings; use the lexical backend")

    async def aclose(self) -> None:
        """Nothing to release."""


# -- cluster names ------------------------------------------------------------------------------------


def name_clusters(data: Mapping[str, Any]) -> ClusterNames:
    """Name each cluster after the words and phrase its keywords share most."""
    answers = []
    taken = {name.lower() for name in data.get("existing_names", [])}
    for cluster in data["clusters"]:
        keywords: list[str] = cluster["keywords"]
        name = topic_name(keywords)
        if name.lower() in taken:
            # Same shared words as another cluster: tell them apart by this cluster's lead keyword.
            name = f"{name}: {_headline(keywords[0])}" if keywords and keywords[0].lower() != name.lower() else name
            suffix = 2
            while name.lower() in taken:
                name, suffix = f"{topic_name(keywords)} ({suffix})", suffix + 1
        taken.add(name.lower())
        sample = ", ".join(f"“{k}”" for k in keywords[:3])
        description = (
            f"Searches about {name.lower()}, such as {sample}: "
            f"{len(keywords)} top keyword(s) shown, mostly {cluster.get('dominant_intent') or 'informational'} intent."
        )
        answers.append(ClusterName(key=cluster["key"], name=name, description=description))
    return ClusterNames(clusters=answers)


def topic_name(keywords: Sequence[str]) -> str:
    """The most shared two-word phrase of the keywords, else their most shared words, in Title Case."""
    words = [[w for w in re.findall(r"[a-z0-9]+", k.lower()) if w not in STOPWORDS] for k in keywords]
    bigrams = Counter(bg for ws in words for bg in set(itertools.pairwise(ws)))
    unigrams = Counter(w for ws in words for w in set(ws))
    if bigrams:
        (first, second), count = min(bigrams.items(), key=lambda item: (-item[1], item[0]))
        if count >= max(2, len(keywords) // 3):
            return f"{first} {second}".title()
    if unigrams:
        top = sorted(unigrams.items(), key=lambda item: (-item[1], item[0]))[:2]
        return " ".join(word for word, _ in top).title()
    return keywords[0].title() if keywords else "Miscellaneous"


# -- ideas --------------------------------------------------------------------------------------------


def plan_ideas(data: Mapping[str, Any]) -> IdeaBatch:
    """Split the cluster's keywords across the requested ideas and shape each by its lead keyword, with
    titles and outline fillers in the site's language when the data names it (`site.language`)."""
    site: Mapping[str, Any] = data["site"] if isinstance(data.get("site"), Mapping) else {}
    phrases = idea_phrases(str(site.get("language") or "en"))
    cluster = data["cluster"]
    keywords = [k["keyword"] for k in data["keywords"]]
    count = max(1, int(data["count"]))
    groups = [keywords[i::count] for i in range(count)]
    ideas = []
    used_titles: set[str] = set()
    for index, group in enumerate(groups):
        if not group:
            group = keywords[index % len(keywords) :][:3] or keywords[:1]
        lead = group[0]
        content_type, title = _title_for(lead, index, phrases)
        if title.lower() in used_titles:
            title = f"{title}: {phrases.variants[index % 3]}"
        used_titles.add(title.lower())
        outline = _outline(group, cluster["name"], content_type, phrases)
        covering = ", ".join(group[1:4]) or cluster["name"].lower()
        ideas.append(
            IdeaDraft(
                title=title,
                angle=phrases.angle.format(content_type=content_type, lead=lead, covering=covering),
                content_type=content_type,
                outline=outline,
                target_keywords=group[:6],
                # What the offline writer composes: about 125 words per section and a short intro and conclusion.
                estimated_word_count=min(3000, 60 + 125 * len(outline)),
            )
        )
    return IdeaBatch(ideas=ideas)


def _title_for(keyword: str, index: int, phrases: IdeaPhrases) -> tuple[str, str]:
    text = keyword.strip()
    titles = phrases.titles
    if " vs " in text:
        left, right = (part.strip().title() for part in text.split(" vs ", 1))
        return "comparison", titles["comparison"].format(left=left, right=right)
    if text.startswith("how to "):
        return "how-to", titles["how-to"].format(h=_headline(text))
    if text.startswith("best "):
        return "listicle", titles["listicle"].format(h=_headline(text))
    if text.split(" ", 1)[0] in {"what", "why", "when", "can", "does", "is", "should", "which", "how"}:
        return "post", titles["question"].format(h=_headline(text))
    if text.endswith((" review", " reviews")):
        return "review", titles["review"].format(h=_headline(text))
    kinds = ("guide", "post", "guide")
    kind = kinds[index % len(kinds)]
    return kind, titles[kind].format(h=_headline(text))


def _outline(keywords: Sequence[str], cluster_name: str, content_type: str, phrases: IdeaPhrases) -> list[str]:
    headings = [_headline(k) + ("?" if _is_question(k) else "") for k in keywords[:5]]
    fillers = phrases.fillers.get(content_type, phrases.fillers["default"])
    for template in fillers:
        filler = template.format(cluster=cluster_name)
        if len(headings) >= 4:
            break
        if filler not in headings:
            headings.append(filler)
    return list(dict.fromkeys(headings))


# -- articles -----------------------------------------------------------------------------------------

PARAGRAPHS_PER_SECTION = 3


def write_article(data: Mapping[str, Any]) -> ArticleDraft:
    """Write one section per outline heading from the idea's keywords, angle and cluster.

    Each paragraph pairs an opener with a detail sentence about a different target keyword, and no
    paragraph repeats within an article. The planned links (`links`) go one sentence each into the
    sections in turn, the FAQ questions (`faq_questions`) get short answers, every fixed phrase is in the
    site's language (`offline_phrases`), and no banned phrase of the site survives (`without_banned_phrases`).
    """
    site: Mapping[str, Any] = data["site"] if isinstance(data.get("site"), Mapping) else {}
    phrases = offline_phrases(str(site.get("language") or "en"))
    idea = data["idea"]
    keywords: list[str] = idea["target_keywords"] or [idea["title"].lower()]
    primary = keywords[0]
    topic = data["cluster"]["name"].lower()
    outline: list[str] = idea["outline"]
    intro = (
        f"<p>{idea['angle']}</p><p>"
        + phrases.intro.format(
            count=len(outline), topic=topic, first=outline[0].lower(), last=outline[-1].lower(), primary=primary
        )
        + "</p>"
    )
    used: set[str] = set()
    sections = []
    for position, heading in enumerate(outline):
        paragraphs = []
        for step in range(PARAGRAPHS_PER_SECTION):
            kw_a = keywords[(position + step) % len(keywords)]
            kw_b = keywords[(position + step + 1) % len(keywords)]
            for attempt in range(len(phrases.openers) * len(phrases.details)):
                opener = _pick(phrases.openers, heading, step + attempt)
                detail = _pick(phrases.details, heading + kw_a, step * 2 + attempt)
                text = f"{opener} {detail}".format(
                    heading=heading, heading_lower=heading.lower(), topic=topic, kw_a=kw_a, kw_b=kw_b
                )
                if text not in used:
                    used.add(text)
                    paragraphs.append(f"<p>{text}</p>")
                    break
        if position == 0 and len(keywords) > 2:
            paragraphs.append("<ul>" + "".join(f"<li>{k}</li>" for k in keywords[:5]) + "</ul>")
        sections.append(paragraphs)
    # One sentence per planned link, the links spread over the sections so none collects them all.
    for index, link in enumerate(data.get("links") or []):
        anchor = f'<a href="{escape(link["url"])}">{escape(link["anchor"], quote=False)}</a>'
        sentence = _pick(phrases.links, link["url"], index).format(link=anchor)
        sections[index % len(sections)].append(f"<p>{sentence}</p>")
    faq = [
        FaqAnswer(
            question=question,
            answer_html="<p>"
            + phrases.faq_answers[_answer_kind(question)].format(keyword=keywords[index % len(keywords)])
            + "</p>",
        )
        for index, question in enumerate(data.get("faq_questions") or [])
    ]
    taxonomy = data.get("taxonomy") or {}
    tags = list(taxonomy.get("tags") or [])[:5] or keywords[1:6] or [primary]
    categories = list(taxonomy.get("categories") or [])[:1] or [data["cluster"]["name"]]
    title = idea["title"]
    draft = ArticleDraft(
        title=title,
        meta_title=_clip(title, 60),
        meta_description=_clip(phrases.meta_description.format(angle=idea["angle"], primary=primary), 155),
        intro_html=intro,
        sections=[
            ArticleSection(heading=heading, html="".join(paragraphs))
            for heading, paragraphs in zip(outline, sections, strict=True)
        ],
        conclusion_html="<p>" + phrases.conclusion.format(primary=primary, topic=topic) + "</p>",
        primary_keyword=primary,
        secondary_keywords=keywords[1:],
        tags=tags,
        categories=categories,
        faq=faq,
    )
    return without_banned_phrases(draft, list(site.get("banned_phrases") or []))


# Question openings answered "usually yes" (1) or "start with ..." (2); everything else gets the general
# answer (0). Languages without word spaces (Japanese) always get the general one.
_YES_NO = frozenset("can is are does do should will could kann ist sind muss soll sollte darf lohnt hilft".split())
_HOW = frozenset("how wie".split())


def _answer_kind(question: str) -> int:
    first = question.lstrip("¿").split(" ", 1)[0].lower()
    return 1 if first in _YES_NO else 2 if first in _HOW else 0


# -- regeneration (the analysis it starts from: `offline_analysis`) -----------------------------------


def rewrite_article(data: Mapping[str, Any]) -> ArticleDraft:
    """A new variant: the article composed again with the variant's brief as its angle and a new headline."""
    idea = dict(data["idea"])
    keyword = (idea["target_keywords"] or [idea["title"]])[0]
    if data["variant"] == "A":
        idea["title"] = f"{_headline(keyword)}? The Answer, Then the Details"
    else:
        idea["title"] = f"{_headline(keyword)}: What You Get and How to Do It"
    idea["angle"] = f"{data['brief']} {data['analysis']['changes'][0]}."
    draft = write_article({**data, "idea": idea})
    return draft.model_copy(update={"meta_title": _clip(idea["title"], 60)})


# -- image prompts ------------------------------------------------------------------------------------

_STYLES = (
    "natural window light, shallow depth of field, warm tones",
    "overhead flat-lay, soft diffuse light, neutral background",
    "close-up detail shot, morning light, muted colours",
    "wide editorial shot, clean composition, soft shadows",
)


def describe_images(data: Mapping[str, Any]) -> ImagePromptSet:
    """A featured prompt from the title and keyword, and one prompt per leading H2 section."""
    title = data["title"]
    primary = data["primary_keyword"]
    featured = ImagePromptDraft(
        prompt=f"Editorial photograph illustrating “{title}”: {primary}, {_pick(_STYLES, title, 0)}, no text.",
        alt_text=_clip(f"Illustration for {title}", 120),
    )
    in_article = [
        SectionImagePrompt(
            heading=section["heading"],
            prompt=(
                f"Photograph for the section “{section['heading']}” of an article about {primary}: "
                f"{_pick(_STYLES, section['heading'], 1)}, no text."
            ),
            alt_text=_clip(f"{section['heading']} ({primary})", 120),
        )
        for section in data["sections"][: int(data["max_in_article"])]
    ]
    return ImagePromptSet(featured=featured, in_article=in_article)


# -- helpers ------------------------------------------------------------------------------------------


def _headline(text: str) -> str:
    small = {"a", "an", "and", "as", "at", "for", "in", "of", "on", "or", "the", "to", "vs", "with"}
    words = text.strip().rstrip("?").split()
    return " ".join(w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def _is_question(text: str) -> bool:
    return text.split(" ", 1)[0] in {"how", "what", "why", "when", "can", "does", "is", "should", "which", "do"}


def _pick(options: Sequence[str], seed: str, step: int) -> str:
    return options[(int(hashlib.sha1(seed.encode()).hexdigest(), 16) + step) % len(options)]


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


_COMPOSERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "cluster_names": name_clusters,
    "ideas": plan_ideas,
    "article": write_article,
    "image_prompts": describe_images,
    "metrics_analysis": analyse_metrics,
    "article_rewrite": rewrite_article,
    "article_optimize": optimize_article,
}
