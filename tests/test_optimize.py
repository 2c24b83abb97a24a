"""The optimisation pass (`optimize: true` on `content`) through the real SDK and the loopback server:
articles failing the content checks get one model pass each, written as their next version for review;
the checks pass afterwards, and a second run calls nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import update

from pipeline import publishing, review
from pipeline.content_checks import run_checks
from pipeline.models import ContentVariant
from pipeline.sites import site_settings
from pipeline.stages.optimize import current_article
from tests.conftest import SAMPLE_KEYWORDS, Env
from tests.openai_server import LoopbackOpenAI
from tests.test_openai_engine import openai_llm

SETTINGS = {"base_url": "https://barista.example", "target_cluster_size": 6, "ideas_per_cluster": 2}


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as running:
        yield running


@pytest.fixture
def site_env(env: Env, server: LoopbackOpenAI, tmp_path: Path) -> Env:
    """A small site written through the loopback server: a slice of the sample keywords."""
    header, *rows = SAMPLE_KEYWORDS.read_text(encoding="utf-8").splitlines()
    keywords = tmp_path / "keywords.csv"
    keywords.write_text("\n".join([header, *rows[:30]]) + "\n", encoding="utf-8")
    env.resources["llm"] = openai_llm(server)
    site = env.add_site(keywords=keywords)
    env.store.update_site_settings(site.id, SETTINGS)
    assert env.materialize().success
    return env


def checks(env: Env) -> dict[str, set[int]]:
    """Failing article ids per check."""
    settings = site_settings(env.store.site("sample").settings)
    return {
        o.name: {f.content_id for f in o.failures} for o in run_checks(env.store, env.store.site("sample").id, settings)
    }


def optimize(env: Env) -> dg.ExecuteInProcessResult:
    return env.materialize(
        selection=["content", "image_prompts", "images"],
        run_config={"ops": {"content": {"config": {"optimize": True}}}},
    )


def optimize_requests(server: LoopbackOpenAI) -> int:
    return sum(1 for record in server.log.records("chat") if record.schema == "OptimizedArticle")


def test_articles_failing_a_check_get_one_call_each_a_new_version_for_review_and_pass_afterwards(site_env, server):
    ids = [item.id for item in review.review_list(site_env.store, site="sample")]
    broken = ids[:2]
    # Two articles whose meta descriptions are far too short and whose titles lost the primary keyword.
    with site_env.store.transaction() as session:
        session.execute(
            update(ContentVariant)
            .where(ContentVariant.content_id.in_(broken))
            .values(meta_description="Too short.", title="Untitled draft")
        )
    review.approve(site_env.store, broken[1], actor="ana")
    failing_before = checks(site_env)
    assert set(broken) <= failing_before["meta_lengths"] and set(broken) <= failing_before["keyword_placement"]
    failing_articles = set().union(*(failing_before[name] for name in failing_before if name != "image_alt_text"))
    requests = optimize_requests(server)

    result = optimize(site_env)

    assert result.success
    assert optimize_requests(server) - requests == len(failing_articles), "one call per failing article"
    after = checks(site_env)
    assert not after["meta_lengths"] and not after["keyword_placement"]
    for content_id in broken:
        article = review.load_article(site_env.store, content_id)
        assert article.version == 2 and article.content.status == "draft"  # back to review, approved one too
        variant = article.variant("A")
        assert 120 <= len(variant.meta_description) <= 155 and variant.prompt_version.startswith("article_optimize@")
        assert [v.version for v in article.variants] == [2, 1], "the first version is kept"
        events = site_env.store.review_events(content_id)
        assert events[-1].actor == "optimize" and events[-1].to_status == "draft"
    calls = [c for c in site_env.store.model_calls(partition="sample") if c.prompt_name == "article_optimize"]
    assert len(calls) == len(failing_articles) and all(c.outcome == "ok" and c.cost_usd > 0 for c in calls)
    [materialization] = result.asset_materializations_for_node("content")
    assert materialization.metadata["articles_optimized"].value == len(failing_articles)

    again = optimize(site_env)

    assert again.success and optimize_requests(server) - requests == len(failing_articles), "a re-run calls nothing"


def test_published_articles_are_left_to_the_metric_triggers(site_env):
    content_id = review.review_list(site_env.store, site="sample")[0].id
    with site_env.store.transaction() as session:
        session.execute(
            update(ContentVariant).where(ContentVariant.content_id == content_id).values(meta_description="Short.")
        )
    review.approve(site_env.store, content_id, actor="ana")
    publishing.publish(site_env.store, content_id, site_env.root / "publish", actor="ana")

    assert optimize(site_env).success

    assert content_id in checks(site_env)["meta_lengths"], "its live text is not rewritten behind review"
    article = review.load_article(site_env.store, content_id)
    assert (article.version, article.content.status) == (1, "published")


def test_the_stored_body_goes_to_the_model_in_the_answer_shape_without_its_faq_section():
    body = (
        '<p>Intro with <a href="/x/">a link</a>.</p>\n<h2>First</h2>\n<p>One.</p>\n'
        "<h2>Frequently asked questions</h2>\n<h3>Q?</h3>\n<p>A.</p>"
    )
    variant = ContentVariant(
        title="T",
        body_html=body,
        meta_title="M",
        meta_description="D",
        primary_keyword="k",
        secondary_keywords=[],
        tags=[],
        categories=[],
    )
    shaped = current_article(variant, "en")
    assert shaped["intro_html"] == '<p>Intro with <a href="/x/">a link</a>.</p>'
    assert shaped["sections"] == [{"heading": "First", "html": "<p>One.</p>"}]
