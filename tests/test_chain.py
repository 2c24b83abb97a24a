"""The whole chain on the embedded default: invariants on what it stores, and idempotent re-runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image
from sqlalchemy import select

from pipeline.article_html import plain_text, read_sections
from pipeline.models import Cluster, Content, ContentVariant, Idea, ImagePrompt, Keyword, ModelCall
from pipeline.models import Image as ImageRow
from tests.conftest import SIX_ASSETS


def test_chain_materializes_all_six_assets_in_order_for_the_site(sample_run):
    _, result = sample_run
    materialized = [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert materialized == SIX_ASSETS
    assert {e.partition for e in result.get_asset_materialization_events()} == {"sample"}


def test_every_keyword_is_in_exactly_one_cluster(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        keywords = s.scalars(select(Keyword)).all()
        clusters = s.scalars(select(Cluster)).all()
    assert len(keywords) == 397
    assert all(k.cluster_id is not None for k in keywords)
    assert sum(c.keyword_count for c in clusters) == len(keywords)
    assert {k.cluster_id for k in keywords} <= {c.id for c in clusters}
    assert all(c.name for c in clusters), "every cluster is named"


def test_cluster_statistics_match_their_members(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        for cluster in s.scalars(select(Cluster)):
            members = s.scalars(select(Keyword).where(Keyword.cluster_id == cluster.id)).all()
            assert cluster.keyword_count == len(members)
            assert cluster.total_volume == sum(k.volume or 0 for k in members)
            top = max(members, key=lambda k: k.volume or 0)
            assert cluster.top_keywords[0] == top.keyword


def test_every_idea_has_content_with_real_h2_sections(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        ideas = s.scalars(select(Idea)).all()
        content = {c.idea_id: c for c in s.scalars(select(Content))}
        variants = {v.content_id: v for v in s.scalars(select(ContentVariant))}
    assert ideas and set(content) == {i.id for i in ideas}
    for idea in ideas:
        article = content[idea.id]
        variant = variants[article.id]
        assert article.status == "draft"
        assert (variant.version, variant.variant) == (1, "A")
        assert [h for h, _ in read_sections(variant.body_html)] == idea.outline
        assert variant.word_count > 80
        assert "<script" not in variant.body_html


def test_content_metadata_counts_match_the_stored_articles_and_their_words(sample_run):
    env, result = sample_run
    [content] = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "content"
    ]
    with env.store.transaction() as s:
        variants = s.scalars(select(ContentVariant)).all()
    for variant in variants:  # counted from the sections, equal to the words of the whole body
        assert variant.word_count == len(plain_text(variant.body_html).split())
    assert content["articles_total"].value == len({v.content_id for v in variants}) == 93
    assert content["words_written_total"].value == sum(v.word_count for v in variants)


def test_ideas_target_only_keywords_of_their_own_cluster(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        for idea in s.scalars(select(Idea)):
            members = set(s.scalars(select(Keyword.keyword).where(Keyword.cluster_id == idea.cluster_id)))
            assert idea.target_keywords and set(idea.target_keywords) <= members


def test_every_content_has_exactly_one_featured_image_prompt(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        variants = s.scalars(select(ContentVariant)).all()
        prompts = s.scalars(select(ImagePrompt)).all()
    for variant in variants:
        mine = [p for p in prompts if p.variant_id == variant.id]
        assert [p.kind for p in mine].count("featured") == 1
        headings = [h for h, _ in read_sections(variant.body_html)]
        anchors = [p.anchor_heading for p in mine if p.kind == "in_article"]
        assert 1 <= len(anchors) <= 2
        assert set(anchors) <= set(headings) and len(set(anchors)) == len(anchors)


def test_every_image_file_exists_decodes_as_png_and_matches_its_checksum(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        prompts = s.scalars(select(ImagePrompt)).all()
        images = s.scalars(select(ImageRow)).all()
    assert {i.image_prompt_id for i in images} == {p.id for p in prompts}
    for image in images:
        path = Path(image.path)
        assert path.is_file() and path.is_relative_to(env.media / "sample")
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.checksum
        with Image.open(path) as decoded:
            assert decoded.format == "PNG"
            assert decoded.size == (image.width, image.height) == (256, 256)


def test_every_generated_row_and_ledger_entry_is_labelled_offline(sample_run):
    env, _ = sample_run
    with env.store.transaction() as s:
        for model in (Idea, ContentVariant, ImagePrompt, ImageRow):
            assert set(s.scalars(select(model.provider))) == {"offline"}
        assert set(s.scalars(select(Cluster.provider).where(Cluster.key != "unclustered"))) == {"offline"}
        # The visible bucket is named by rule, never by a model.
        assert set(s.scalars(select(Cluster.provider).where(Cluster.key == "unclustered"))) <= {"pipeline"}
        calls = s.scalars(select(ModelCall)).all()
    assert calls and {c.provider for c in calls} == {"offline"}
    assert {c.outcome for c in calls} == {"ok"}
    assert sum(c.cost_usd for c in calls) == 0
    assert {c.partition for c in calls} == {"sample"}
    assert {c.prompt_version for c in calls if c.stage == "ideas"} == {"ideas@2"}


def test_ledger_has_one_call_per_item_of_each_stage(sample_run):
    env, _ = sample_run
    counts = env.row_counts()
    calls = env.store.model_calls(partition="sample")
    by_stage = {
        stage: sum(1 for c in calls if c.stage == stage) for stage in ("ideas", "content", "image_prompts", "images")
    }
    topical = [c for c in env.store.clusters(env.store.site("sample").id) if c.key != "unclustered"]
    assert by_stage["ideas"] == len(topical)
    assert by_stage["content"] == counts["content"]
    assert by_stage["image_prompts"] == counts["content_variants"]
    assert by_stage["images"] == counts["images"]


def test_assets_report_counts_previews_and_model_usage_as_metadata(sample_run):
    _, result = sample_run
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert metadata["keywords"]["dagster/row_count"].value == 397
    for key in SIX_ASSETS[1:]:
        assert metadata[key]["model_calls"].value > 0
        assert metadata[key]["provider"].value == "offline"
        assert "preview" in metadata[key]
    assert metadata["content"]["article_preview"].value.startswith("# ")
    assert "| cluster | keywords | volume |" in metadata["clusters"]["preview"].value


def test_second_materialization_creates_no_rows_and_makes_no_model_calls(sample_run):
    env, _ = sample_run
    before = env.row_counts()
    result = env.materialize()
    assert result.success
    assert env.row_counts() == before
    metadata = {
        e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert all(metadata[key]["model_calls"].value == 0 for key in SIX_ASSETS[1:])


def test_an_image_whose_file_went_missing_is_regenerated(sample_run):
    env, _ = sample_run
    image = env.store.images(env.store.site("sample").id)[0]
    Path(image.path).unlink()
    calls_before = len(env.store.model_calls())
    result = env.materialize(selection=["images"])
    assert result.success
    assert Path(image.path).is_file()
    assert len(env.store.model_calls()) == calls_before + 1
    assert env.store.counts(env.store.site("sample").id).images == env.row_counts()["images"]
