"""The cannibalisation guard (one article per primary keyword and intent) and transliterated slugs."""

from __future__ import annotations

import csv
import re
import unicodedata
from typing import ClassVar

import dagster as dg
import pytest

import resources.llm
from pipeline.cannibalisation import CannibalisationGuard, IdeaCandidate
from pipeline.llm.catalog import DEFAULT_CATALOG
from pipeline.llm.engine import ModelEngine
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.wire import Completion, CompletionRequest
from pipeline.prompts import PromptRegistry
from pipeline.prompts.schemas import IdeaBatch, IdeaDraft
from pipeline.sites import slugify
from pipeline.stages import RunOptions
from pipeline.stages.clusters import build_clusters
from pipeline.stages.ideas import generate_ideas
from pipeline.stages.keywords import ingest_keywords
from resources import LLMResource
from tests.conftest import SAMPLE_KEYWORDS


def idea(title: str, *keywords: str, cluster: str = "A", stored: bool = False) -> IdeaCandidate:
    return IdeaCandidate(title, list(keywords), cluster, stored)


# -- the guard ---------------------------------------------------------------------------------------


def test_same_primary_keyword_across_clusters_keeps_the_first():
    guard = CannibalisationGuard()
    assert guard.admit(idea("Cold Brew Ratio Explained", "cold brew ratio", cluster="Cold Brew")) is None
    decision = guard.admit(idea("Mixing Concentrate Right", "Cold  Brew Ratio", "dilution", cluster="Ratios"))
    assert decision is not None and decision.reason == "duplicate_keyword"
    assert decision.describe() == (
        "dropped 'Mixing Concentrate Right' (cluster Ratios): same primary keyword 'cold brew ratio' as "
        "'Cold Brew Ratio Explained' (cluster Cold Brew)"
    )
    assert guard.counts == {"ideas_dropped_duplicate_keyword": 1, "ideas_dropped_similar": 0}


def test_same_primary_keyword_in_one_cluster_merges_the_extra_keywords():
    guard = CannibalisationGuard()
    kept = idea("Moka Pot Basics", "moka pot", "moka pot size")
    assert guard.admit(kept) is None
    decision = guard.admit(idea("Using a Moka Pot Well", "moka pot", "moka pot gasket", "Moka Pot Size"))
    assert decision is not None and decision.merged_keywords == ("moka pot gasket",)
    merged = guard.merge_into(decision.kept, decision.merged_keywords)
    assert merged.target_keywords == ["moka pot", "moka pot size", "moka pot gasket"]


def test_near_identical_titles_keep_one():
    guard = CannibalisationGuard()
    assert guard.admit(idea("Cold Brew Ratio: A Complete Guide", "cold brew ratio", cluster="Cold Brew")) is None
    decision = guard.admit(idea("The Complete Cold Brew Ratio Guide", "cold brew ratios", cluster="Ratios"))
    assert decision is not None and decision.reason == "similar" and decision.similarity == 1.0
    assert guard.admit(idea("Best Moka Pot: Our Top Picks", "best moka pot")) is None
    assert guard.admit(idea("The Best Moka Pots of 2026", "best moka pots")) is not None
    assert guard.counts == {"ideas_dropped_duplicate_keyword": 0, "ideas_dropped_similar": 2}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            ("How Long Does Caffeine Last?", "how long does caffeine last"),
            ("How Long Do Coffee Beans Last?", "how long do coffee beans last"),
        ),
        (("French Press Ratio Guide", "french press ratio"), ("Cold Brew Ratio Guide", "cold brew ratio")),
        (
            ("Best Gooseneck Kettle", "best gooseneck kettle"),
            ("Gooseneck Kettle vs Regular Kettle", "gooseneck kettle vs regular kettle"),
        ),
        (
            ("Moka Pot vs Espresso Machine", "moka pot vs espresso machine"),
            ("How to Use a Moka Pot", "how to use a moka pot"),
        ),
    ],
)
def test_distinct_ideas_on_one_topic_are_all_kept(first, second):
    guard = CannibalisationGuard()
    assert guard.admit(idea(*first)) is None
    assert guard.admit(idea(*second)) is None
    assert guard.decisions == [] and guard.markdown() is None


def test_stored_ideas_win_and_are_named_as_stored():
    guard = CannibalisationGuard([idea("Latte Art for Beginners", "latte art", cluster="Milk", stored=True)])
    decision = guard.admit(idea("Latte Art at Home", "latte art", cluster="Latte"))
    assert decision is not None and decision.merged_keywords == ()  # a stored idea is never changed
    assert guard.markdown() == (
        "- dropped 'Latte Art at Home' (cluster Latte): same primary keyword 'latte art' as "
        "'Latte Art for Beginners' (cluster Milk, stored)"
    )


def test_japanese_titles_compare_by_character_pairs():
    guard = CannibalisationGuard()
    assert guard.admit(idea("コーヒーの淹れ方", "コーヒー 淹れ方")) is None
    assert guard.admit(idea("コーヒーの淹れ方ガイド", "コーヒー 淹れ方 ガイド")) is not None
    assert guard.admit(idea("抹茶ラテの作り方", "抹茶ラテ")) is None


# -- the ideas stage ---------------------------------------------------------------------------------


class FixedIdeas(OfflineProvider):
    """Answers the ideas prompt with fixed ideas for the clusters named in `titles` (using their keywords),
    like the offline provider for the others."""

    name = "fixed-ideas"
    titles: ClassVar[dict[str, list[tuple[str, tuple[int, ...]]]]] = {}  # cluster -> (title, keyword indexes)

    async def complete(self, request: CompletionRequest) -> Completion:
        completion = await super().complete(request)
        if request.prompt.name != "ideas" or request.data["cluster"]["name"] not in self.titles:
            return completion
        keywords = [k["keyword"] for k in request.data["keywords"]]
        ideas = [
            IdeaDraft(
                title=title,
                angle="An angle.",
                content_type="guide",
                outline=["Section One", "Section Two"],
                target_keywords=[keywords[i] for i in targets],
                estimated_word_count=1200,
            )
            for title, targets in self.titles[request.data["cluster"]["name"]]
        ]
        return Completion(IdeaBatch(ideas=ideas), completion.model, completion.usage)


def offline_engine(env, provider: OfflineProvider | None = None, partition: str = "sample") -> ModelEngine:
    return ModelEngine(
        provider or OfflineProvider(),
        catalog=DEFAULT_CATALOG,
        prompts=PromptRegistry(),
        store=env.store,
        run_id="run-1",
        partition=partition,
    )


def clustered(env, slug: str = "sample", keywords=SAMPLE_KEYWORDS):
    """A site with keywords and named clusters (offline), ready for the ideas stage."""
    env.add_site(slug, keywords)
    ingest_keywords(env.store, slug)
    with offline_engine(env, partition=slug) as engine:
        build_clusters(env.store, engine, slug)
    return env.store.site(slug)


def test_stage_drops_cannibalising_ideas_before_storing_and_reports_them(env):
    site = clustered(env)
    clusters = env.store.plannable_clusters(site.id)
    first, second = clusters[0], clusters[1]
    top = env.store.cluster_keywords(first.id)[0].keyword
    FixedIdeas.titles = {
        first.name: [
            (f"{top.title()}: The Complete Guide", (0, 1)),
            (f"The Complete {top.title()} Guide", (1, 0)),  # a rewording: near-identical intent
            ("A Different Angle Entirely", (0,)),  # same primary keyword as the first
        ],
        second.name: [("Something Else Again", (0,))],
    }
    with offline_engine(env, FixedIdeas()) as engine:
        report = generate_ideas(env.store, engine, "sample")

    stored = [i for i in env.store.ideas(site.id) if i.cluster_id in {first.id, second.id}]
    assert [i.title for i in stored] == [f"{top.title()}: The Complete Guide", "Something Else Again"]
    assert report.counts["ideas_dropped_duplicate_keyword"] == 1
    assert report.counts["ideas_dropped_similar"] == 1
    decisions = report.notes["cannibalisation_decisions"].splitlines()
    assert decisions[0].startswith(f"- dropped 'The Complete {top.title()} Guide' (cluster {first.name}): near")
    assert decisions[1].startswith(f"- dropped 'A Different Angle Entirely' (cluster {first.name}): same primary")

    with offline_engine(env, FixedIdeas()) as engine:
        again = generate_ideas(env.store, engine, "sample")
    assert again.counts["ideas_added"] == 0 and "cannibalisation_decisions" not in again.notes
    assert again.counts["ideas_dropped_duplicate_keyword"] == again.counts["ideas_dropped_similar"] == 0


def test_forced_replan_does_not_count_the_ideas_it_replaces_as_duplicates(env):
    site = clustered(env)
    with offline_engine(env) as engine:
        generate_ideas(env.store, engine, "sample")
    before = [(i.cluster_id, i.key) for i in env.store.ideas(site.id)]
    with offline_engine(env) as engine:
        report = generate_ideas(env.store, engine, "sample", RunOptions(force=True))
    assert report.counts["ideas_dropped_duplicate_keyword"] == report.counts["ideas_dropped_similar"] == 0
    assert sorted((i.cluster_id, i.key) for i in env.store.ideas(site.id)) == sorted(before)


def test_a_japanese_site_gets_ideas_with_readable_ascii_keys(env, tmp_path):
    keywords = tmp_path / "ja.csv"
    rows = [
        ("コーヒー 淹れ方", 9000),
        ("コーヒー 淹れ方 ハンドドリップ", 4000),
        ("コーヒー 淹れ方 初心者", 2500),
        ("コーヒー豆 保存方法", 3000),
        ("コーヒー豆 保存方法 冷凍", 1500),
        ("コーヒー豆 保存 容器", 1200),
        ("水出しコーヒー 作り方", 5000),
        ("水出しコーヒー 作り方 比率", 1100),
    ]
    with keywords.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["keyword", "volume"])
        writer.writerows(rows)
    env.add_site("kissa", keywords, name="喫茶ガイド")
    site = env.store.site("kissa")
    env.store.update_site_settings(site.id, {"language": "ja"})
    ingest_keywords(env.store, "kissa")
    with offline_engine(env, partition="kissa") as engine:
        build_clusters(env.store, engine, "kissa")
        report = generate_ideas(env.store, engine, "kissa")

    ideas = env.store.ideas(site.id)
    assert ideas and report.counts["ideas_added"] == len(ideas)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", i.key) for i in ideas), [i.key for i in ideas]
    assert any("kohi" in i.key for i in ideas)


# -- slugs -------------------------------------------------------------------------------------------


def nfkd_slug(text: str, max_length: int = 64) -> str:
    """The slug rule before transliteration (accent stripping only): the reference for unchanged slugs."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_length].rstrip("-")


@pytest.mark.parametrize(
    ("text", "language", "slug"),
    [
        ("コーヒーの淹れ方", None, "kohino-yan-re-fang"),
        ("コーヒーの淹れ方", "ja", "kohino-yan-re-fang"),
        ("Über Kaffee", None, "uber-kaffee"),
        ("Über Kaffee", "de", "ueber-kaffee"),
        ("Größe der Mühle", "de-AT", "groesse-der-muehle"),
        ("Straße", None, "strasse"),
        ("Кофе в турке", "ru", "kofe-v-turke"),
        ("Café crème: What’s “new” — ½ cup ☕", None, "cafe-creme-whats-new-12-cup"),
        ("Cold Brew: Guide", None, "cold-brew-guide"),
    ],
)
def test_slugs_transliterate_every_script(text, language, slug):
    assert slugify(text, language=language) == slug


def test_every_slug_of_the_sample_data_is_unchanged(env):
    texts = [row["keyword"] for row in csv.DictReader(SAMPLE_KEYWORDS.open(encoding="utf-8"))]
    site = clustered(env)
    with offline_engine(env) as engine:
        generate_ideas(env.store, engine, "sample")
    texts += [c.name or c.key for c in env.store.clusters(site.id)]
    ideas = env.store.ideas(site.id)
    texts += [i.title for i in ideas] + [h for i in ideas for h in i.outline]
    assert len(texts) > 500
    for text in texts:
        assert slugify(text) == nfkd_slug(text), text
        assert slugify(text, 120, "en") == nfkd_slug(text, 120), text
    assert all(i.key == nfkd_slug(i.title, 120) for i in ideas)


def test_ideas_asset_metadata_lists_the_decisions_as_markdown(env, monkeypatch):
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters"]).success
    first = env.store.plannable_clusters(env.store.site("sample").id)[0]
    FixedIdeas.titles = {first.name: [("Kept Idea", (0,)), ("Dropped Idea", (0,))]}
    monkeypatch.setitem(resources.llm.PROVIDERS, "fixed-ideas", lambda _resource, _endpoint: FixedIdeas())
    env.resources["llm"] = LLMResource(provider="fixed-ideas", image_size="256x256")

    result = env.materialize(selection=["ideas"])

    [materialization] = result.asset_materializations_for_node("ideas")
    metadata = materialization.metadata
    assert metadata["ideas_dropped_duplicate_keyword"].value == 1
    assert metadata["ideas_dropped_similar"].value == 0
    assert isinstance(metadata["cannibalisation_decisions"], dg.MarkdownMetadataValue)
    assert metadata["cannibalisation_decisions"].value.startswith(f"- dropped 'Dropped Idea' (cluster {first.name})")


def test_a_cluster_whose_every_idea_repeats_another_is_reported_and_left_unplanned(env):
    site = clustered(env)
    first, second = env.store.plannable_clusters(site.id)[:2]
    one, two = (env.store.cluster_keywords(c.id)[0].keyword.title() for c in (first, second))
    # Each targets its own cluster's top keyword, but the two ideas are about the same pair of things.
    FixedIdeas.titles = {first.name: [(f"{one} and {two}", (0,))], second.name: [(f"{two} With {one}", (0,))]}
    with offline_engine(env, FixedIdeas()) as engine:
        report = generate_ideas(env.store, engine, "sample")
    assert report.counts["ideas_dropped_similar"] == 1
    assert f"ideas for cluster {second.key}: every idea repeats another idea of the site" in report.degraded
    assert second.id in {c.id for c in env.store.clusters_without_ideas(site.id)}
