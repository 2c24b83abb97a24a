"""Pydantic models of each prompt's answer; providers must return exactly these shapes.

Fields stay plain (no length or range keywords) so the same JSON schema works in OpenAI's strict
structured-output mode; business rules (keywords taken from the cluster, anchors matching headings,
lengths) are enforced by the stage that uses the answer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ContentType = Literal["guide", "how-to", "listicle", "comparison", "review", "post", "page"]


class Answer(BaseModel):
    """Base of every answer: unknown fields are rejected, so a wrong shape fails loudly."""

    model_config = ConfigDict(extra="forbid")


class ClusterName(Answer):
    """Name and description of one cluster, echoing the cluster's key."""

    key: str = Field(description="The cluster key exactly as given in the data.")
    name: str = Field(description="A short topic name, 2-5 words, Title Case.")
    description: str = Field(description="One or two sentences on what searchers in this cluster want.")


class ClusterNames(Answer):
    """Answer of the `cluster_names` prompt."""

    clusters: list[ClusterName]


class IdeaDraft(Answer):
    """One article idea."""

    title: str
    angle: str = Field(description="What makes this article worth reading, in one or two sentences.")
    content_type: ContentType
    outline: list[str] = Field(description="The article's H2 section headings, in order.")
    target_keywords: list[str] = Field(description="Keywords from the cluster this article targets.")
    estimated_word_count: int


class IdeaBatch(Answer):
    """Answer of the `ideas` prompt."""

    ideas: list[IdeaDraft]


class ArticleSection(Answer):
    """One H2 section of an article."""

    heading: str
    html: str = Field(description="Section body as HTML paragraphs/lists, without the heading.")


class FaqAnswer(Answer):
    """One question of an article's FAQ section and its answer."""

    question: str = Field(description="The question exactly as given in the data's `faq_questions`.")
    answer_html: str = Field(description="A short answer: one paragraph of two to four sentences.")


class ArticleDraft(Answer):
    """Answer of the `article` prompt."""

    title: str
    meta_title: str
    meta_description: str
    intro_html: str
    sections: list[ArticleSection]
    conclusion_html: str
    primary_keyword: str
    secondary_keywords: list[str]
    tags: list[str]
    categories: list[str]
    # Empty unless the data asks for an FAQ; a default, so answers of prompts without one stay valid.
    faq: list[FaqAnswer] = Field(default_factory=list)


class OptimizedArticle(ArticleDraft):
    """Answer of the `article_optimize` prompt: the whole article again, revised to pass the failed checks."""


class ImagePromptDraft(Answer):
    """One image prompt and the alt text of the resulting image."""

    prompt: str
    alt_text: str


class SectionImagePrompt(ImagePromptDraft):
    """An in-article image prompt anchored to one of the article's H2 headings."""

    heading: str = Field(description="The H2 heading exactly as given in the data.")


class ImagePromptSet(Answer):
    """Answer of the `image_prompts` prompt."""

    featured: ImagePromptDraft
    in_article: list[SectionImagePrompt]


class MetricsAnalysis(Answer):
    """Answer of the `metrics_analysis` prompt: why an article under-performed and what to change."""

    underperformed: str = Field(description="What under-performed, with the numbers, against the rule.")
    comparison: str = Field(description="How variant A and variant B compare, and what explains the gap.")
    changes: list[str] = Field(description="Concrete changes to make in the rewrite, most important first.")
    brief_a: str = Field(description="Direction for the new variant A.")
    brief_b: str = Field(description="A different direction for the new variant B, to test against A.")
