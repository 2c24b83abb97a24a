"""Backfill controls on every model-calling stage: limit, item_id, skip_recent_days, force, dry_run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from pipeline.models import Content, Idea, ReviewEvent


def run(env, asset: str, **config):
    return env.materialize(selection=[asset], run_config={"ops": {asset: {"config": config}}})


@pytest.fixture
def planned(env):
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    return env


def calls(env, stage: str) -> int:
    return sum(1 for c in env.store.model_calls() if c.stage == stage)


def test_limit_processes_only_that_many_pending_items(planned):
    assert run(planned, "content", limit=4).success
    assert planned.store.counts(planned.store.site("sample").id).content == 4 and calls(planned, "content") == 4


def test_item_id_processes_exactly_one_item(planned):
    idea = planned.store.ideas(planned.store.site("sample").id)[7]
    assert run(planned, "content", item_id=idea.id).success
    assert planned.store.content_ids_by_idea(planned.store.site("sample").id).keys() == {idea.id}


def test_skip_recent_days_leaves_items_created_recently(planned):
    ideas = planned.store.ideas(planned.store.site("sample").id)
    old = [i.id for i in ideas[:5]]
    with planned.store.transaction() as s:
        s.execute(update(Idea).where(Idea.id.in_(old)).values(created_at=datetime.now(UTC) - timedelta(days=30)))
    assert run(planned, "content", skip_recent_days=7).success
    assert set(planned.store.content_ids_by_idea(planned.store.site("sample").id)) == set(old)


def test_force_rewrites_existing_articles_as_a_new_version_and_keeps_history(planned):
    assert planned.materialize(selection=["content", "image_prompts", "images"]).success
    site = planned.store.site("sample").id
    idea = planned.store.ideas(site)[0]
    content_id = planned.store.content_ids_by_idea(site)[idea.id]
    with planned.store.transaction() as s:
        s.execute(update(Content).where(Content.id == content_id).values(status="published", published_version=1))

    assert run(planned, "content", force=True, item_id=idea.id).success
    assert planned.materialize(selection=["image_prompts", "images"]).success

    assert [(v.version, v.variant) for v in planned.store.variants(content_id)] == [(2, "A"), (1, "A")]
    with planned.store.transaction() as s:
        content = s.get(Content, content_id)
        event = s.query(ReviewEvent).filter_by(content_id=content_id).one()
    assert (content.status, content.published_version) == ("draft", 1), "the published version is kept"
    assert (event.from_status, event.to_status, event.version) == ("published", "draft", 2)
    counts = planned.store.counts(planned.store.site("sample").id)
    assert counts.images == counts.image_prompts, "the new version gets its image prompts and images"


def test_force_on_images_renders_existing_images_again(planned):
    assert planned.materialize(selection=["content", "image_prompts", "images"]).success
    prompt = planned.store.image_prompts(planned.store.site("sample").id)[0]
    before = calls(planned, "images")
    assert run(planned, "images", force=True, item_id=prompt.id).success
    assert calls(planned, "images") == before + 1
    counts = planned.store.counts(planned.store.site("sample").id)
    assert counts.images == counts.image_prompts


def test_force_on_image_prompts_replaces_a_variant_set_and_its_images_follow(planned):
    assert planned.materialize(selection=["content", "image_prompts", "images"]).success
    variant = planned.store.current_variants(planned.store.site("sample").id)[0]
    rows_before = planned.row_counts()
    assert run(planned, "image_prompts", force=True, item_id=variant.id).success
    counts = planned.store.counts(planned.store.site("sample").id)
    assert counts.images == counts.image_prompts - 3
    assert planned.materialize(selection=["images"]).success
    assert planned.row_counts()["image_prompts"] == rows_before["image_prompts"]
    assert planned.row_counts()["images"] == rows_before["images"]


def test_force_on_ideas_replans_only_ideas_without_an_article(planned):
    site = planned.store.site("sample").id
    cluster_id = planned.store.ideas(site)[0].cluster_id
    assert run(planned, "content", item_id=planned.store.ideas(site)[0].id).success
    written = planned.store.ideas(site)[0]
    assert run(planned, "ideas", force=True, item_id=cluster_id).success
    mine = [i for i in planned.store.ideas(site) if i.cluster_id == cluster_id]
    assert written.id in {i.id for i in mine}, "an idea with an article is never replaced"
    assert len(mine) == 3


def test_force_on_clusters_names_them_again(planned):
    before = calls(planned, "clusters")
    assert run(planned, "clusters", force=True).success
    assert calls(planned, "clusters") > before


def test_dry_run_on_every_stage_writes_nothing_and_calls_nothing(planned):
    rows = planned.row_counts()
    for asset in ("clusters", "ideas", "content", "image_prompts", "images"):
        result = run(planned, asset, dry_run=True)
        assert result.success
        assert result.get_asset_materialization_events()[0].materialization.metadata["dry_run"].value == 1
    assert planned.row_counts() == rows
