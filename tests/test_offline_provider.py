"""The offline provider: deterministic answers built from the real inputs, and real PNG files."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.llm.offline import describe_images, name_clusters, plan_ideas, render_png, topic_name, write_article

pytestmark = pytest.mark.backend_independent


def test_cluster_names_come_from_the_words_their_keywords_share():
    keywords = ["cold brew ratio", "how long to steep cold brew", "cold brew concentrate", "best coffee for cold brew"]
    assert topic_name(keywords) == "Cold Brew"
    answer = name_clusters({"clusters": [{"key": "c-1", "keywords": keywords, "dominant_intent": "informational"}]})
    assert answer.clusters[0].key == "c-1" and answer.clusters[0].name == "Cold Brew"
    assert "cold brew ratio" in answer.clusters[0].description


def test_cluster_names_are_distinct_from_existing_ones():
    keywords = ["moka pot", "moka pot gasket", "how to use a moka pot"]
    answer = name_clusters({"existing_names": ["Moka Pot"], "clusters": [{"key": "c-2", "keywords": keywords}]})
    assert answer.clusters[0].name not in {"Moka Pot"}


def test_ideas_split_the_cluster_keywords_and_follow_their_intent():
    data = {
        "cluster": {"name": "Moka Pot", "description": ""},
        "count": 3,
        "keywords": [
            {"keyword": k}
            for k in ["moka pot vs espresso machine", "how to use a moka pot", "best moka pot", "moka pot ratio"]
        ],
    }
    ideas = plan_ideas(data).ideas
    assert [i.content_type for i in ideas] == ["comparison", "how-to", "listicle"]
    assert ideas[0].target_keywords == ["moka pot vs espresso machine", "moka pot ratio"]
    assert len({i.title for i in ideas}) == 3
    assert plan_ideas(data) == plan_ideas(data), "deterministic"


def test_articles_follow_the_outline_without_repeating_paragraphs():
    idea = {
        "title": "How to Use a Moka Pot: A Step-by-Step Guide",
        "angle": "A how-to for beginners.",
        "content_type": "how-to",
        "outline": ["How to Use a Moka Pot?", "Moka Pot Ratio", "Common Mistakes to Avoid"],
        "target_keywords": ["how to use a moka pot", "moka pot ratio"],
        "estimated_word_count": 1200,
    }
    draft = write_article(
        {"idea": idea, "cluster": {"name": "Moka Pot"}, "taxonomy": {"categories": ["Brewing"], "tags": []}}
    )
    assert [s.heading for s in draft.sections] == idea["outline"]
    paragraphs = [p for s in draft.sections for p in s.html.split("</p>") if p.startswith("<p>")]
    assert len(paragraphs) == len(set(paragraphs)) >= 6
    assert draft.primary_keyword == "how to use a moka pot" and draft.categories == ["Brewing"]
    assert len(draft.meta_title) <= 60 and len(draft.meta_description) <= 155


def test_image_prompts_anchor_to_the_given_sections_up_to_the_limit():
    sections = [{"heading": h, "text": "..."} for h in ["Grind Size", "Water Temperature", "Brew Time"]]
    answer = describe_images(
        {"title": "Pour Over Basics", "primary_keyword": "pour over", "sections": sections, "max_in_article": 2}
    )
    assert "Pour Over Basics" in answer.featured.prompt
    assert [p.heading for p in answer.in_article] == ["Grind Size", "Water Temperature"]


def test_rendered_images_are_deterministic_pngs_of_the_requested_size():
    first = render_png("a cup of cold brew on a wooden table", 320, 200)
    assert first == render_png("a cup of cold brew on a wooden table", 320, 200)
    assert first != render_png("a moka pot on a gas stove", 320, 200)
    with Image.open(io.BytesIO(first)) as image:
        assert image.format == "PNG" and image.size == (320, 200)
