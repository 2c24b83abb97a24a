"""The site link plan: pillars, siblings and reachability; planned links in stored bodies, nothing else."""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from typing import Any, ClassVar

import pytest

from pipeline import review
from pipeline.linking import MAX_PILLAR_LINKS, LinkPlan, keep_planned_links, linked_urls, plan_links, site_link_plan
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.wire import Completion, CompletionRequest
from pipeline.models import Idea
from pipeline.prompts.schemas import ArticleDraft
from pipeline.sites import LinkSettings, site_settings
from pipeline.stages.content import write_content
from pipeline.urls import article_url
from tests.conftest import Env
from tests.test_engine import engine

BASE_URL = "https://barista.example"


def idea(id: int, cluster: int, keyword: str, content_type: str = "post", key: str | None = None) -> Idea:
    return Idea(
        id=id,
        site_id=1,
        cluster_id=cluster,
        key=key or f"idea-{id}",
        title=f"Idea {id}",
        angle="",
        content_type=content_type,
        outline=["A"],
        target_keywords=[keyword, f"{keyword} extra"],
        estimated_word_count=800,
    )


def reachable_from_pillar(plan: LinkPlan, ideas: list[Idea]) -> set[int]:
    by_url = {url: idea_id for idea_id, url in plan.urls.items()}
    seen = set(plan.pillars.values())
    queue = deque(seen)
    while queue:
        for target in plan.links_of(queue.popleft()):
            if by_url[target.url] not in seen:
                seen.add(by_url[target.url])
                queue.append(by_url[target.url])
    return seen


# -- the plan -----------------------------------------------------------------------------------------


def test_the_pillar_is_the_idea_with_the_broadest_keyword_ties_by_id():
    ideas = [idea(1, 7, "grinder"), idea(2, 7, "burr grinder"), idea(3, 7, "espresso grinder")]
    volumes = {"grinder": 100, "burr grinder": 900, "espresso grinder": 900}
    plan = plan_links(ideas, volumes, LinkSettings(), None)
    assert plan.pillars == {7: 2}


def test_an_explicit_pillar_idea_wins_over_volume():
    ideas = [idea(1, 7, "grinder"), idea(2, 7, "burr grinder", content_type="pillar"), idea(3, 7, "hand grinder")]
    plan = plan_links(ideas, {"grinder": 99_000}, LinkSettings(), None)
    assert plan.pillars == {7: 2}
    assert [t.kind for t in plan.links_of(2)] == ["cluster", "cluster"]


def test_every_article_links_its_pillar_and_siblings_with_balanced_incoming_links():
    ideas = [idea(i, 1, f"kw {i}") for i in range(1, 12)]
    plan = plan_links(ideas, {"kw 1": 1000}, LinkSettings(min_siblings=2, max_siblings=4), BASE_URL)
    pillar = plan.pillars[1]
    incoming: Counter[str] = Counter()
    for item in ideas:
        if item.id == pillar:
            continue
        links = plan.links_of(item.id)
        assert links[0].kind == "pillar" and links[0].url == plan.urls[pillar]
        siblings = [t for t in links if t.kind == "sibling"]
        assert 2 <= len(siblings) <= 4 and len({t.url for t in siblings}) == len(siblings)
        assert plan.urls[item.id] not in {t.url for t in links}, "no article links itself"
        incoming.update(t.url for t in siblings)
    assert len(set(incoming.values())) == 1, "every non-pillar receives as many sibling links as it gives"
    assert reachable_from_pillar(plan, ideas) == {i.id for i in ideas}


def test_a_big_clusters_pillar_is_capped_yet_every_article_stays_reachable():
    ideas = [idea(i, 1, f"kw {i}") for i in range(1, MAX_PILLAR_LINKS + 15)]
    plan = plan_links(ideas, {}, LinkSettings(), None)
    assert len(plan.links_of(plan.pillars[1])) == MAX_PILLAR_LINKS
    assert reachable_from_pillar(plan, ideas) == {i.id for i in ideas}


def test_small_clusters_are_topped_up_with_related_pillars_sharing_words():
    ideas = [
        idea(1, 1, "cold brew"),
        idea(2, 1, "cold brew ratio"),
        idea(3, 2, "espresso machine"),
        idea(4, 3, "cold brew concentrate"),
        idea(5, 4, "latte art"),
    ]
    plan = plan_links(ideas, {"cold brew": 10, "espresso machine": 10}, LinkSettings(min_siblings=2), None)
    links = plan.links_of(2)
    assert [t.kind for t in links] == ["pillar", "related", "related"]
    assert links[1].idea_id == 4, "the pillar sharing most words comes first"


def test_anchors_are_the_targets_primary_keywords_and_urls_follow_the_base_url():
    ideas = [idea(1, 1, "cold brew", key="cold-brew"), idea(2, 1, "cold brew ratio", key="ratio")]
    with_base = plan_links(ideas, {"cold brew": 10}, LinkSettings(), BASE_URL)
    relative = plan_links(ideas, {"cold brew": 10}, LinkSettings(), None)
    [to_pillar] = [t for t in with_base.links_of(2) if t.kind == "pillar"]
    assert (to_pillar.anchor, to_pillar.url) == ("cold brew", "https://barista.example/cold-brew/")
    assert relative.urls == {1: "/cold-brew/", 2: "/ratio/"}


def test_ideas_sharing_a_key_across_clusters_get_distinct_urls():
    ideas = [idea(1, 1, "a", key="same"), idea(5, 2, "b", key="same")]
    plan = plan_links(ideas, {}, LinkSettings(), None)
    assert plan.urls == {1: "/same/", 5: "/same-5/"}


# -- links in answers ---------------------------------------------------------------------------------


def test_links_outside_the_plan_are_unlinked_and_counted_keeping_their_text():
    body = (
        '<p>See <a href="https://barista.example/ratio" rel="noopener noreferrer">ratio</a> and '
        '<a href="https://evil.example/">this</a>, <a href="/made-up/">that</a>.</p>'
    )
    linked = keep_planned_links(body, {"https://barista.example/ratio/"})
    assert (linked.kept, linked.removed) == (1, 2)
    assert linked.html == '<p>See <a href="https://barista.example/ratio/">ratio</a> and this, that.</p>'


class InventedLinks(OfflineProvider):
    """The offline composer, plus two links of its own in every article and a planned link in another form."""

    name = "inventive"
    seen_links: ClassVar[list[list[dict[str, Any]]]] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        completion = await super().complete(request)
        if request.prompt.name != "article":
            return completion
        self.seen_links.append(request.data["links"])
        answer = completion.answer
        assert isinstance(answer, ArticleDraft)
        invented = (
            '<p>Also <a href="https://evil.example/buy">buy here</a> and '
            '<a href="https://barista.example/not-an-article/">more</a>.</p>'
        )
        answer = answer.model_copy(update={"conclusion_html": answer.conclusion_html + invented})
        return dataclasses.replace(completion, answer=answer)


@pytest.fixture(scope="module")
def linked_site(tmp_path_factory: pytest.TempPathFactory):
    """The sample site planned offline with `base_url` set, its articles written by `InventedLinks`."""
    env = Env(tmp_path_factory.mktemp("links"))
    site = env.add_site()
    env.store.update_site_settings(site.id, {"base_url": BASE_URL})
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    InventedLinks.seen_links.clear()
    with engine(env, InventedLinks()) as inventive:
        report = write_content(env.store, inventive, "sample")
    yield env, report
    env.close()


def stored_bodies(env: Env) -> dict[int, str]:
    """Idea id -> current variant A body."""
    site_id = env.store.site("sample").id
    idea_of = {content: idea for idea, content in env.store.content_ids_by_idea(site_id).items()}
    return {idea_of[v.content_id]: v.body_html for v in env.store.current_variants(site_id) if v.variant == "A"}


def test_invented_links_are_removed_from_stored_bodies_and_counted(linked_site):
    env, report = linked_site
    articles = report.counts["articles_written"]
    assert articles > 0 and report.counts["invented_links_removed"] == 2 * articles
    plan = site_link_plan(env.store, env.store.site("sample").id, site_settings(env.store.site("sample").settings))
    bodies = stored_bodies(env)
    for idea_id, body in bodies.items():
        assert set(linked_urls(body)) <= plan.allowed_urls(idea_id), "no link to an unplanned URL"
        assert set(linked_urls(body)) == plan.allowed_urls(idea_id), "every planned link is there"
        assert "buy here" in body and "evil.example" not in body
    assert report.counts["internal_links_total"] == sum(len(linked_urls(b)) for b in bodies.values())


def test_the_article_prompt_gets_the_planned_links_as_data(linked_site):
    assert InventedLinks.seen_links and all(links for links in InventedLinks.seen_links)
    for links in InventedLinks.seen_links:
        for link in links:
            assert set(link) == {"url", "anchor", "title", "kind"}
            assert link["url"].startswith(BASE_URL + "/") and link["kind"] in {
                "pillar",
                "sibling",
                "cluster",
                "related",
            }


def test_planned_urls_are_the_canonical_urls_of_the_stored_articles(linked_site):
    env, _ = linked_site
    site_id = env.store.site("sample").id
    plan = site_link_plan(env.store, site_id, site_settings(env.store.site("sample").settings))
    for idea_id, content_id in env.store.content_ids_by_idea(site_id).items():
        assert plan.urls[idea_id] == article_url(BASE_URL, review.load_article(env.store, content_id).slug)


def test_the_plan_is_the_same_when_the_same_keywords_are_run_again(linked_site):
    env, _ = linked_site
    site_id = env.store.site("sample").id
    settings = site_settings(env.store.site("sample").settings)
    before = site_link_plan(env.store, site_id, settings)
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    assert site_link_plan(env.store, site_id, settings) == before


# -- articles written later ---------------------------------------------------------------------------


def add_idea_to_first_cluster(env: Env, site_id: int) -> Idea:
    """An idea joining a cluster whose articles are written (as a re-plan or new keywords would add one)."""
    cluster = env.store.ideas(site_id)[0].cluster_id
    row = {
        "key": "late-idea",
        "title": "A Late Idea",
        "angle": "Written after the others.",
        "content_type": "post",
        "outline": ["First Part", "Second Part", "Third Part"],
        "target_keywords": ["late idea keyword"],
        "estimated_word_count": 900,
        "provider": "offline",
        "model": "offline",
        "prompt_version": "ideas@2",
    }
    assert env.store.replace_unwritten_ideas(site_id, cluster, [row]) == 1  # the written ideas stay
    return next(i for i in env.store.ideas(site_id) if i.key == "late-idea")


def test_articles_written_earlier_get_a_new_version_linking_to_later_ones_when_the_site_asks(env):
    site = env.add_site()
    env.store.update_site_settings(site.id, {"base_url": BASE_URL, "links": {"update_existing": True}})
    assert env.materialize(selection=["keywords", "clusters", "ideas", "content"]).success
    late = add_idea_to_first_cluster(env, site.id)
    with engine(env, OfflineProvider()) as offline:
        report = write_content(env.store, offline, "sample")
    assert report.counts["articles_written"] == 1 and report.counts["articles_relinked"] >= 1
    plan = site_link_plan(env.store, site.id, site_settings(env.store.site("sample").settings))
    late_url = plan.urls[late.id]
    bodies = stored_bodies(env)
    for idea_id, body in bodies.items():
        assert plan.allowed_urls(idea_id) <= set(linked_urls(body)), f"idea {idea_id} lacks a planned link"
    assert late_url in linked_urls(bodies[plan.pillars[late.cluster_id]]), "its pillar now links to it"
    contents = env.store.content_ids_by_idea(site.id)
    relinked = [c for c in contents.values() if env.store.current_version(c) == 2]
    assert len(relinked) == report.counts["articles_relinked"]
    for content_id in relinked:
        article = review.load_article(env.store, content_id)
        assert article.content.status == "draft" and {v.version for v in article.variants} == {1, 2}
        assert env.store.review_events(content_id)[-1].actor == "links"
        old, new = article.variant("A"), next(v for v in article.variants if v.version == 1)
        assert old.title == new.title and len(old.body_html) > len(new.body_html), "text kept, links added"
    with engine(env, OfflineProvider()) as offline:
        again = write_content(env.store, offline, "sample")
    assert again.counts["articles_relinked"] == 0, "a second run has nothing to add"


def test_articles_written_earlier_stay_as_they_are_by_default(env):
    site = env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas", "content"]).success
    add_idea_to_first_cluster(env, site.id)
    with engine(env, OfflineProvider()) as offline:
        report = write_content(env.store, offline, "sample")
    assert report.counts["articles_relinked"] == 0
    assert all(env.store.current_version(c) == 1 for c in env.store.content_ids_by_idea(site.id).values())


def test_the_chain_with_a_base_url_stores_only_planned_links(tmp_path):
    env = Env(tmp_path)
    try:
        site = env.add_site()
        env.store.update_site_settings(site.id, {"base_url": BASE_URL, "faq": True})
        assert env.materialize().success
        plan = site_link_plan(env.store, site.id, site_settings(env.store.site("sample").settings))
        for idea_id, body in stored_bodies(env).items():
            assert set(linked_urls(body)) == plan.allowed_urls(idea_id)
    finally:
        env.close()
