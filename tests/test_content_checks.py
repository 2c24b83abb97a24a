"""Content checks: each SEO and quality check fails and passes on crafted articles, and the `content`
asset reports one asset check evaluation per check, listing the failing articles by number."""

from __future__ import annotations

import random
import time
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import event

from pipeline.content_checks import (
    CHECKS,
    CheckOutcome,
    near_duplicate_pairs,
    readability_score,
    run_checks,
)
from pipeline.definitions import defs
from pipeline.models import Cluster, Content, ContentVariant, Idea, Image, ImagePrompt
from pipeline.sites import site_settings
from pipeline.urls import article_url
from tests.conftest import Env

BASE_URL = "https://brew.example"
GENERATED = {"provider": "offline", "model": "offline-test", "prompt_version": "test"}
TOPICS = {
    "cold-brew": (
        "cold brew",
        "Steeping coarse grounds in cold water overnight gives a smooth, sweet concentrate with little acidity. "
        "Use one part coffee to eight parts water and strain it twice through a paper filter.",
    ),
    "milk-frothing": (
        "milk frothing",
        "Whole milk holds microfoam best because its fat and protein trap tiny bubbles. Keep the steam wand "
        "tip just below the surface until the jug feels warm, then sink it to spin the milk.",
    ),
    "grinder-burrs": (
        "grinder burrs",
        "Flat burrs give an even particle size that suits espresso, while conical burrs run cooler and quieter. "
        "Replace steel burrs after roughly five hundred kilograms of beans have passed through them.",
    ),
}


def words(n: int, seed: int) -> str:
    """`n` pseudo-random plain words (distinct per seed), so bodies do not overlap by accident."""
    rng = random.Random(seed)
    vocabulary = [f"{a}{b}" for a in ("ba", "ke", "lo", "mi", "nu", "ro", "si", "tu") for b in ("n", "t", "r", "")]
    return " ".join(rng.choice(vocabulary) + rng.choice("aeiou") for _ in range(n))


def good_article(key: str, others: list[str], *, seed: int) -> dict[str, Any]:
    """A variant that passes every check: keyword placed, meta within limits, links to `others`."""
    keyword, text = TOPICS.get(key, (key.replace("-", " "), "Plain sentences about the topic."))
    links = " ".join(f'<a href="{article_url(BASE_URL, other)}">{other}</a>' for other in others)
    body = (
        f"<p>This {keyword} guide explains the basics. {text}</p>\n<h2>How it works</h2>\n<p>{text} {links}</p>\n"
        f"<h2>Notes</h2>\n<p>{words(700, seed)}.</p>"
    )
    return {
        "title": f"The {keyword.title()} Guide",
        "body_html": body,
        "meta_title": f"{keyword.title()}: a practical guide",
        "meta_description": (f"Everything about {keyword} for the home barista: " + "tips and gear " * 20)[:140],
        "primary_keyword": keyword,
        "word_count": 800,
    }


class Site:
    """A site of crafted articles written straight into the store (partition registered in the instance)."""

    def __init__(self, env: Env, slug: str = "brew", settings: dict[str, Any] | None = None):
        self.env = env
        self.row = env.store.upsert_site(slug, slug.title(), None)
        env.store.update_site_settings(self.row.id, {"base_url": BASE_URL, **(settings or {})})
        env.instance.add_dynamic_partitions("sites", [slug])
        self.slug = slug
        with env.store.transaction() as session:
            cluster = Cluster(site_id=self.row.id, key="coffee", name="Coffee")
            session.add(cluster)
            session.flush()
            self.cluster_id = cluster.id

    @property
    def settings(self):
        return site_settings(self.env.store.site(self.slug).settings)

    def article(self, key: str, *, estimate: int = 800, variants: dict[str, dict[str, Any]]) -> int:
        """An article from idea `key` with `variants` (letter -> fields over `good_article` defaults)."""
        with self.env.store.transaction() as session:
            idea = Idea(
                site_id=self.row.id,
                cluster_id=self.cluster_id,
                key=key,
                title=key,
                angle="",
                content_type="guide",
                outline=[],
                target_keywords=[],
                estimated_word_count=estimate,
                **GENERATED,
            )
            session.add(idea)
            session.flush()
            content = Content(site_id=self.row.id, idea_id=idea.id, status="draft")
            session.add(content)
            session.flush()
            for letter, fields in variants.items():
                values = {"secondary_keywords": [], "tags": [], "categories": [], **fields}
                session.add(ContentVariant(content_id=content.id, version=1, variant=letter, **values, **GENERATED))
            return content.id

    def images(self, content_id: int, alts: list[str], *, files: bool = True) -> None:
        """Image prompts with `alts` for every variant of an article, each with an image file (or none)."""
        self.env.media.mkdir(parents=True, exist_ok=True)
        with self.env.store.transaction() as session:
            variants = session.query(ContentVariant).filter_by(content_id=content_id).all()
            for variant in variants:
                for position, alt in enumerate(alts):
                    kind = "featured" if position == 0 else "in_article"
                    prompt = ImagePrompt(
                        site_id=self.row.id,
                        variant_id=variant.id,
                        kind=kind,
                        position=position,
                        prompt="a photo",
                        alt_text=alt,
                        **GENERATED,
                    )
                    session.add(prompt)
                    session.flush()
                    if files:
                        path = self.env.media / f"{variant.id}-{position}.png"
                        path.write_bytes(b"png")
                        session.add(
                            Image(
                                site_id=self.row.id,
                                image_prompt_id=prompt.id,
                                path=str(path),
                                provider="offline",
                                model="m",
                                size="1x1",
                                width=1,
                                height=1,
                                bytes=3,
                                checksum="0" * 64,
                            )
                        )

    def outcomes(self) -> dict[str, CheckOutcome]:
        return {o.name: o for o in run_checks(self.env.store, self.row.id, self.settings)}


def three_good_articles(site: Site) -> list[int]:
    keys = list(TOPICS)
    ids = []
    for seed, key in enumerate(keys):
        others = [k for k in keys if k != key]
        ids.append(site.article(key, variants={"A": good_article(key, others, seed=seed)}))
        site.images(ids[-1], ["A jug of milk", "Coffee grounds"])
    return ids


def failures(outcome: CheckOutcome) -> list[str]:
    return [f.line() for f in outcome.failures]


def test_a_well_formed_site_passes_every_check(env):
    site = Site(env)
    three_good_articles(site)
    outcomes = site.outcomes()
    assert list(outcomes) == list(CHECKS)
    for name, outcome in outcomes.items():
        assert outcome.passed, (name, failures(outcome))
        assert (outcome.pass_count, outcome.total) == (3, 3), name


def test_keyword_placement_names_each_place_the_primary_keyword_is_missing_from(env):
    site = Site(env)
    fields = good_article("cold-brew", [], seed=1)
    fields |= {"meta_title": "Iced coffee at home", "body_html": "<p>Start here.</p><h2>Cold  Brew</h2><p>x</p>"}
    bad = site.article("cold-brew", variants={"A": fields})
    # Normalised matching: case and spacing of the keyword do not matter.
    site.article("iced", variants={"A": good_article("cold-brew", [], seed=2) | {"primary_keyword": " COLD   brew"}})
    outcome = site.outcomes()["keyword_placement"]
    assert not outcome.passed and (outcome.pass_count, outcome.total) == (1, 2)
    [failure] = outcome.failures
    assert failure.content_id == bad
    assert failure.detail == "primary keyword 'cold brew' missing from first paragraph, meta title"


def test_meta_lengths_report_the_measured_length_and_the_limit(env):
    site = Site(env)
    long_title = "Cold brew " + "x" * 62  # 72 characters
    short = site.article(
        "cold-brew", variants={"A": good_article("cold-brew", [], seed=1) | {"meta_title": long_title}}
    )
    fields = good_article("milk-frothing", [], seed=2) | {"meta_description": "y" * 98}
    described = site.article("milk-frothing", variants={"A": fields, "B": good_article("milk-frothing", [], seed=3)})
    outcome = site.outcomes()["meta_lengths"]
    assert {(f.content_id, f.variant, f.detail) for f in outcome.failures} == {
        (short, "A", "meta title 72 > 60 chars"),
        (described, "A", "meta description 98 < 120 chars"),
    }
    assert (outcome.pass_count, outcome.total) == (1, 3)


def test_word_count_band_compares_with_the_ideas_estimate_and_the_tolerance(env):
    site = Site(env, settings={"checks": {"word_count_tolerance": 0.25}})
    within = site.article("a", estimate=1000, variants={"A": good_article("a", [], seed=1) | {"word_count": 1200}})
    over = site.article("b", estimate=1000, variants={"A": good_article("b", [], seed=2) | {"word_count": 1300}})
    under = site.article("c", estimate=1000, variants={"A": good_article("c", [], seed=3) | {"word_count": 700}})
    outcome = site.outcomes()["word_count_band"]
    assert {f.content_id: f.detail for f in outcome.failures} == {
        over: "1300 words > 1250 (estimate 1000 ± 25%)",
        under: "700 words < 750 (estimate 1000 ± 25%)",
    }
    assert within not in {f.content_id for f in outcome.failures} and outcome.pass_count == 1


HARD = (
    "<p>Notwithstanding considerable organisational heterogeneity, institutional stakeholders systematically "
    "underestimate the multidimensional ramifications of infrastructural modernisation initiatives.</p>"
)
EASY = "<p>The cat sat on the mat. It was a warm day. We had tea and cake. The sun was out.</p>"


def test_readability_reports_scores_without_a_minimum_and_fails_hard_text_below_it(env):
    site = Site(env)
    easy = site.article("easy", variants={"A": good_article("easy", [], seed=1) | {"body_html": EASY}})
    hard = site.article("hard", variants={"A": good_article("hard", [], seed=2) | {"body_html": HARD}})
    outcome = site.outcomes()["readability"]
    assert outcome.passed and outcome.notes["scored"] == 2 and outcome.notes["formula"] == "flesch_reading_ease (en)"
    assert outcome.notes["lowest_score"] < 30 and (readability_score(EASY, "en") or 0) > 80

    env.store.update_site_settings(site.row.id, {"base_url": BASE_URL, "checks": {"min_readability": 50}})
    outcome = site.outcomes()["readability"]
    [failure] = outcome.failures
    assert failure.content_id == hard and failure.content_id != easy
    assert failure.detail.startswith("readability ") and failure.detail.endswith(" < 50")
    assert failure.measured is not None and failure.measured < 50


GERMAN = (
    "Der Kaffee wird frisch gemahlen. Danach fließt heißes Wasser langsam durch das Pulver. "
    "Die Bohnen stammen aus kleinen Röstereien in Norddeutschland."
)


def test_german_text_is_scored_with_the_german_formula():
    from textstat.textstat import textstatistics

    scorer = textstatistics()
    scorer.set_lang("de")
    # Amstad's Flesch for German: 180 - words per sentence - 58.5 x syllables per word.
    amstad = 180 - scorer.avg_sentence_length(GERMAN) - 58.5 * scorer.avg_syllables_per_word(GERMAN)
    assert readability_score(GERMAN, "de") == pytest.approx(amstad, abs=0.01)
    assert readability_score(GERMAN, "de-AT") == readability_score(GERMAN, "de")
    assert readability_score(GERMAN, "en") != readability_score(GERMAN, "de")
    assert readability_score(GERMAN, "ja") is None  # no formula: not scored with the English one


def test_readability_on_a_german_site_uses_the_german_formula_and_skips_unsupported_languages(env):
    site = Site(env, settings={"language": "de"})
    site.article("kaffee", variants={"A": good_article("kaffee", [], seed=1) | {"body_html": f"<p>{GERMAN}</p>"}})
    outcome = site.outcomes()["readability"]
    assert outcome.notes["formula"] == "flesch_reading_ease (de)"
    assert outcome.notes["mean_score"] == pytest.approx(round(readability_score(GERMAN, "de") or 0, 1))

    env.store.update_site_settings(site.row.id, {"language": "ja", "checks": {"min_readability": 90}})
    outcome = site.outcomes()["readability"]
    assert outcome.passed and outcome.notes["scored"] == 0 and "'ja'" in outcome.notes["not_scored"]


def test_internal_links_need_the_plans_minimum_and_none_broken(env):
    site = Site(env, settings={"links": {"min_siblings": 2}})
    ids = three_good_articles(site)
    body = (
        f'<p>cold brew <a href="{article_url(BASE_URL, "cold-brew")}">ok</a> '
        '<a href="/milk-frothing/#steam">root-relative, with a fragment</a> '
        f'<a href="{BASE_URL}/no-such-article/">gone</a> <a href="https://other.example/x/">external</a></p>'
    )
    few = site.article("lonely", variants={"A": good_article("lonely", [], seed=9) | {"body_html": "<p>No links.</p>"}})
    broken = site.article("broken", variants={"A": good_article("broken", [], seed=8) | {"body_html": body}})
    outcome = site.outcomes()["internal_links"]
    assert {(f.content_id, f.detail) for f in outcome.failures} == {
        (few, "0 internal links < 2"),
        (broken, f"1 broken internal links: {BASE_URL}/no-such-article/"),
    }
    assert outcome.pass_count == len(ids) and outcome.notes["required_links"] == 2


def test_internal_links_ask_for_no_more_siblings_than_the_site_has(env):
    site = Site(env, settings={"links": {"min_siblings": 3}})
    site.article("only", variants={"A": good_article("only", [], seed=1)})
    outcome = site.outcomes()["internal_links"]
    assert outcome.passed and outcome.notes["required_links"] == 0


def test_image_alt_text_fails_empty_alt_and_missing_files_and_waits_for_unillustrated_articles(env):
    site = Site(env)
    good, no_alt, no_file, waiting = (
        site.article(k, variants={"A": good_article(k, [], seed=i)}) for i, k in enumerate("abcd")
    )
    site.images(good, ["A cup", "A jug"])
    site.images(no_alt, ["A cup", "  "])
    site.images(no_file, ["A cup"], files=False)
    outcome = site.outcomes()["image_alt_text"]
    assert {(f.content_id, f.detail) for f in outcome.failures} == {
        (no_alt, "1 of 2 images without alt text"),
        (no_file, "1 of 1 images missing"),
    }
    assert waiting not in {f.content_id for f in outcome.failures}
    assert outcome.notes["not_illustrated"] == 1 and outcome.pass_count == 2


def test_banned_phrases_match_whole_phrases_case_insensitively_in_title_meta_and_body(env):
    site = Site(env, settings={"banned_phrases": ["game changer", "In today's fast-paced world"]})
    in_body = good_article("a", [], seed=1)
    in_body["body_html"] += "<p>In Today's   fast-paced world, this grinder is a GAME changer.</p>"
    in_meta = good_article("b", [], seed=2) | {"meta_description": "A real game changer. " + "x" * 120}
    plural = good_article("c", [], seed=3)
    plural["body_html"] += "<p>Two game changers.</p>"  # a different word: not the banned phrase
    ids = [site.article(k, variants={"A": v}) for k, v in zip("abc", [in_body, in_meta, plural], strict=True)]
    outcome = site.outcomes()["banned_phrases"]
    assert {f.content_id: f.detail for f in outcome.failures} == {
        ids[0]: "banned phrases: 'game changer' ×1, 'in today's fast-paced world' ×1",
        ids[1]: "banned phrases: 'game changer' ×1",
    }


def test_near_duplicates_find_a_copied_article_and_not_distinct_ones(env):
    site = Site(env)
    original, *_ = three_good_articles(site)
    copied = good_article("cold-brew", [], seed=0)
    copied["body_html"] = copied["body_html"].replace("explains the basics", "covers the basics")
    copy = site.article("cold-brew-copy", variants={"A": copied})
    # A and B of one article are alike by design: never compared with each other.
    site.article("ab", variants={"A": good_article("ab", [], seed=50), "B": good_article("ab", [], seed=50)})
    outcome = site.outcomes()["near_duplicates"]
    assert {f.content_id for f in outcome.failures} == {original, copy}
    assert outcome.notes["pairs"] == 1
    [one, _] = outcome.failures
    assert one.measured is not None and 0.8 <= one.measured < 1
    assert f'with #{copy if one.content_id == original else original} A "The Cold Brew Guide"' in one.detail


def test_near_duplicate_pairs_scale_to_thousands_of_articles():
    texts = {i: words(600, seed=i) for i in range(2000)}
    texts[2000] = texts[7].replace("ba", "ke", 3)  # a light edit of article 7
    started = time.perf_counter()
    pairs = near_duplicate_pairs(texts, 0.8)
    elapsed = time.perf_counter() - started
    assert [(a, b) for a, b, _ in pairs] == [(7, 2000)]
    assert elapsed < 30, f"{elapsed:.1f}s for 2,001 articles"


def test_run_checks_reads_the_site_in_two_queries_whatever_its_size(env):
    site = Site(env)
    three_good_articles(site)
    settings = site.settings
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(env.store.engine, "before_cursor_execute", count)
    try:
        run_checks(env.store, site.row.id, settings)
        small = len(statements)
        for i in range(10):
            site.article(f"more-{i}", variants={"A": good_article(f"more-{i}", [], seed=100 + i)})
        statements.clear()
        run_checks(env.store, site.row.id, settings)
    finally:
        event.remove(env.store.engine, "before_cursor_execute", count)
    assert small == len(statements) == 2


def test_content_declares_one_asset_check_per_content_check():
    specs = {spec.name: spec for spec in defs.resolve_assets_def("content").check_specs}
    assert sorted(specs) == sorted(["items_ok", *CHECKS])
    for name in CHECKS:
        assert specs[name].description == CHECKS[name].description and len(specs[name].description or "") > 40


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    found = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("content")}
    assert sorted(found) == sorted(["items_ok", *CHECKS])
    return found


@pytest.mark.parametrize("dry_run", [False, True])
def test_content_reports_every_check_over_all_current_articles_even_when_it_wrote_nothing(env, dry_run):
    site = Site(env)
    ids = three_good_articles(site)
    long_title = "bad " + "x" * 68
    fields = {"meta_title": long_title, "title": "The [bad](https://evil.example) *guide*"}
    bad = site.article("bad", variants={"A": good_article("bad", [], seed=7) | fields})
    config = {"ops": {"content": {"config": {"dry_run": dry_run}}}}
    result = env.materialize(site.slug, selection=["content"], run_config=config)
    assert result.success
    found = evaluations(result)
    meta = found["meta_lengths"]
    assert not meta.passed and meta.severity == dg.AssetCheckSeverity.WARN
    assert meta.metadata["passed"].value == len(ids) and meta.metadata["total"].value == len(ids) + 1
    listing = meta.metadata["failing"].value
    assert f"#{bad} A" in listing and "meta title 72 > 60 chars" in listing
    assert "\\[bad\\](https://evil.example) \\*guide\\*" in listing  # model text escaped: no link, no emphasis
    assert found["banned_phrases"].passed and found["banned_phrases"].metadata["failing"].value == "none"


def test_a_check_that_raises_fails_alone_naming_the_error(env, monkeypatch):
    site = Site(env)
    three_good_articles(site)

    def broken(text: str, language: str) -> float:
        raise ImportError("No module named 'pkg_resources'")

    monkeypatch.setattr("pipeline.content_checks.text.readability_score", broken)
    outcomes = site.outcomes()
    assert not outcomes["readability"].passed
    assert (
        outcomes["readability"].summary() == "readability: could not run (ImportError: No module named 'pkg_resources')"
    )
    assert all(o.passed for name, o in outcomes.items() if name != "readability")


def test_article_urls_follow_the_review_slug_rule_for_repeated_idea_keys(env):
    from pipeline.content_checks import article_slugs
    from pipeline.review import load_article

    site = Site(env)
    first = site.article("cold-brew", variants={"A": good_article("cold-brew", [], seed=1)})
    with env.store.transaction() as session:
        other = Cluster(site_id=site.row.id, key="tea", name="Tea")
        session.add(other)
        session.flush()
        site.cluster_id = other.id
    second = site.article("cold-brew", variants={"A": good_article("cold-brew", [], seed=2)})
    slugs = article_slugs(env.store.variants_for_checks(site.row.id))
    assert slugs == {cid: load_article(env.store, cid).slug for cid in (first, second)}
    assert slugs[second] == f"cold-brew-{second}"


def test_links_to_the_home_page_are_not_broken(env):
    site = Site(env, settings={"links": {"min_siblings": 0}})
    body = f'<p>cold brew <a href="{BASE_URL}/">home</a> <a href="/">home</a></p>'
    site.article("a", variants={"A": good_article("a", [], seed=1) | {"body_html": body}})
    assert site.outcomes()["internal_links"].passed
