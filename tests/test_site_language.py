"""Site voice and language: prompt data, the offline provider's own words per language, the FAQ section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipeline import publishing, review
from pipeline.article_html import read_sections
from pipeline.faq import as_question, faq_questions, is_question
from pipeline.language import labels
from pipeline.linking import linked_urls
from pipeline.llm.offline import OfflineProvider, plan_ideas, write_article
from pipeline.llm.wire import Completion, CompletionRequest
from pipeline.stages.content import PageRules, variant_row, write_content
from tests.conftest import Env
from tests.test_engine import engine

GERMAN_KEYWORDS = [
    ("kaltbrühkaffee", 5400),
    ("kaltbrühkaffee rezept", 2900),
    ("wie lange muss cold brew ziehen", 1300),
    ("was ist cold brew", 2400),
    ("kann man cold brew erhitzen", 480),
    ("warum ist cold brew so stark", 390),
    ("cold brew verhältnis kaffee wasser", 880),
    ("cold brew selber machen", 3600),
    ("cold brew mahlgrad", 720),
    ("cold brew konzentrat", 1000),
    ("welcher kaffee für cold brew", 590),
    ("cold brew koffein", 1600),
]
FAQ_ENTRY = re.compile(r"<h3>([^<]+)</h3>\n<p>([^<]+)</p>")


# -- question keywords --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "language", "question"),
    [
        ("how long to steep cold brew", "en", True),
        ("can you heat cold brew", "en", True),
        ("cold brew ratio", "en", False),
        ("how", "en", False),
        ("wie lange muss cold brew ziehen", "de", True),
        ("warum ist cold brew so stark", "de-AT", True),
        ("kann man cold brew erhitzen", "de", True),
        ("kaltbrühkaffee rezept", "de", False),
        ("pourquoi le cold brew est fort", "fr", True),
        ("comment faire un cold brew", "fr", True),
        ("por qué el cold brew es fuerte", "es", True),
        ("¿cuánto tiempo reposa el cold brew", "es", True),
        ("café frío receta", "es", False),
        ("cold brew stronger than espresso?", "it", True),
    ],
)
def test_question_keywords_are_recognised_per_language(keyword, language, question):
    assert is_question(keyword, language) is question


def test_faq_questions_are_at_most_five_written_as_questions_without_repeats():
    keywords = ["what is cold brew", "What is cold brew?", "cold brew ratio", *(f"how to {n}" for n in "abcdef")]
    assert faq_questions(keywords) == ["What is cold brew?", "How to a?", "How to b?", "How to c?", "How to d?"]
    assert as_question("por qué el cold brew es fuerte", "es") == "¿Por qué el cold brew es fuerte?"


# -- the FAQ section ----------------------------------------------------------------------------------


class Recording(OfflineProvider):
    """The offline composer, recording the data of every article request."""

    name = "recording"
    seen: ClassVar[list[dict[str, Any]]] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.prompt.name == "article":
            self.seen.append(dict(request.data))
        return await super().complete(request)


def written_site(env: Env, settings: dict[str, Any]) -> dict[int, str]:
    """The sample site planned and written offline with `settings`; idea id -> stored body."""
    site = env.add_site()
    env.store.update_site_settings(site.id, settings)
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    Recording.seen.clear()
    with engine(env, Recording()) as recording:
        write_content(env.store, recording, "sample")
    idea_of = {content: idea for idea, content in env.store.content_ids_by_idea(site.id).items()}
    return {idea_of[v.content_id]: v.body_html for v in env.store.current_variants(site.id)}


def test_with_faq_on_the_body_ends_with_the_clusters_question_keywords_answered(env):
    bodies = written_site(env, {"faq": True})
    site_id = env.store.site("sample").id
    ideas = {i.id: i for i in env.store.ideas(site_id)}
    with_faq = 0
    for idea_id, body in bodies.items():
        cluster = ideas[idea_id].cluster_id
        expected = faq_questions(k.keyword for k in env.store.cluster_keywords(cluster))
        if not expected:
            assert "<h2>Frequently asked questions</h2>" not in body
            continue
        with_faq += 1
        _, faq = body.rsplit("\n<h2>Frequently asked questions</h2>\n", 1)
        entries = FAQ_ENTRY.findall(faq)
        assert [q for q, _ in entries] == expected and "\n".join(
            f"<h3>{q}</h3>\n<p>{a}</p>" for q, a in entries
        ) == faq, "exactly h2, then h3 + p per question, nothing after"
        assert all(answer.strip() for _, answer in entries)
        assert read_sections(body)[-1][0] == "Frequently asked questions"
    assert with_faq >= len(bodies) // 2, "the sample's clusters have question keywords"
    sent = [data["faq_questions"] for data in Recording.seen]
    assert any(sent) and all(len(questions) <= 5 for questions in sent)


def test_with_faq_off_no_questions_are_sent_and_no_faq_is_stored(env):
    bodies = written_site(env, {})
    assert all("Frequently asked questions" not in body for body in bodies.values())
    assert Recording.seen and all(data["faq_questions"] == [] for data in Recording.seen)


# -- voice and language -------------------------------------------------------------------------------


def test_the_article_prompt_gets_the_sites_language_voice_author_and_banned_phrases(env):
    settings = {
        "language": "en-GB",
        "audience": "home baristas",
        "voice": "Friendly, concrete, no hype.",
        "author": {"name": "Ada Crema"},
        "banned_phrases": ["comes down to", "Start with"],
    }
    bodies = written_site(env, settings)
    assert Recording.seen
    for data in Recording.seen:
        assert data["site"] == {
            "name": "Home Barista Guide",
            "language": "en-GB",
            "audience": "home baristas",
            "voice": "Friendly, concrete, no hype.",
            "author": "Ada Crema",
            "banned_phrases": ["comes down to", "Start with"],
        }
    for body in bodies.values():
        assert "comes down to" not in body.lower() and "start with" not in body.lower()


def test_japanese_offline_articles_use_japanese_phrases_and_are_long_enough():
    targets = ["コールドブリュー 作り方", "コールドブリュー 時間"]
    idea: dict[str, Any] = {
        "title": "コールドブリューの作り方",
        "angle": "初心者向けのガイドです。",
        "content_type": "how-to",
        "outline": ["準備するもの", "抽出時間", "よくある失敗"],
        "target_keywords": targets,
        "estimated_word_count": 1200,
    }
    data = {
        "site": {"name": "珈琲", "language": "ja", "banned_phrases": []},
        "idea": idea,
        "cluster": {"name": "コールドブリュー"},
        "links": [{"url": "/a/", "anchor": "抽出", "title": "A", "kind": "pillar"}],
        "faq_questions": ["コールドブリューとは?"],
    }
    draft = write_article(data)
    assert "この記事では" in draft.intro_html and "記事" in draft.conclusion_html
    assert "This article" not in draft.intro_html
    row = variant_row(
        draft, idea["target_keywords"], None, PageRules({"/a/"}, labels("ja").faq, ["コールドブリューとは?"])
    )
    assert row["internal_links"] == 1 and "<h2>よくある質問</h2>" in row["body_html"]


@pytest.fixture(scope="module")
def german_site(tmp_path_factory: pytest.TempPathFactory):
    """A German site (`language: de`, FAQ on, `base_url` set) run through the whole chain offline."""
    root = tmp_path_factory.mktemp("german")
    keywords = root / "keywords.csv"
    keywords.write_text("keyword,volume\n" + "".join(f"{k},{v}\n" for k, v in GERMAN_KEYWORDS), encoding="utf-8")
    env = Env(root)
    site = env.add_site("kaffee", keywords=Path(keywords), name="Kaffee zu Hause")
    settings = {"language": "de", "faq": True, "base_url": "https://kaffee.example", "ideas_per_cluster": 4}
    env.store.update_site_settings(site.id, settings)
    result = env.materialize("kaffee")
    yield env, result
    env.close()


def test_a_german_site_runs_the_whole_chain_offline(german_site):
    env, result = german_site
    assert result.success
    site_id = env.store.site("kaffee").id
    assert env.store.images(site_id), "image prompts anchored and images rendered"


def test_a_german_sites_articles_carry_german_labels_and_offline_phrases(german_site):
    env, _ = german_site
    site_id = env.store.site("kaffee").id
    variants = env.store.current_variants(site_id)
    assert variants
    faq_bodies = [v.body_html for v in variants if "<h2>Häufig gestellte Fragen</h2>" in v.body_html]
    assert faq_bodies, "the FAQ heading is German"
    questions = {q for body in faq_bodies for q, _ in FAQ_ENTRY.findall(body.rsplit("<h2>", 1)[1])}
    assert {"Wie lange muss cold brew ziehen?", "Was ist cold brew?"} & questions
    for variant in variants:
        body = variant.body_html
        assert "Dieser Artikel führt durch" in body and "This article walks through" not in body
        assert "Frequently asked questions" not in body and "For more, see" not in body
        assert linked_urls(body) and all(url.startswith("https://kaffee.example/") for url in linked_urls(body))
    prompts = env.store.image_prompts(site_id)
    headings = {h for v in variants for h, _ in read_sections(v.body_html)}
    assert {p.anchor_heading for p in prompts if p.kind != "featured"} <= headings


def test_the_offline_composer_keeps_banned_phrases_out_of_every_field():
    idea = {
        "title": "Cold Brew: The Complete Guide",
        "angle": "A guide that comes down to practice.",
        "content_type": "guide",
        "outline": ["Basics", "Ratio", "Mistakes"],
        "target_keywords": ["cold brew", "cold brew ratio"],
        "estimated_word_count": 1000,
    }
    data = {"site": {"banned_phrases": ["Complete Guide", "comes down to"]}, "idea": idea, "cluster": {"name": "C"}}
    draft = write_article(data)
    text = draft.model_dump_json().lower()
    assert "complete guide" not in text and "comes down to" not in text


def test_offline_ideas_follow_the_site_language_when_the_data_names_it():
    data = {
        "site": {"name": "Kaffee", "language": "de"},
        "count": 2,
        "cluster": {"name": "Cold Brew"},
        "keywords": [{"keyword": k} for k, _ in GERMAN_KEYWORDS[:6]],
    }
    ideas = plan_ideas(data).ideas
    assert ideas[0].title == "Kaltbrühkaffee: Der umfassende Ratgeber"
    assert "Häufige Fehler vermeiden" in ideas[0].outline or "Cold Brew: Die Grundlagen" in ideas[0].outline
    assert all("„" in idea.angle for idea in ideas)
    english = plan_ideas({**data, "site": "Kaffee"}).ideas
    assert english[0].title == "Kaltbrühkaffee: The Complete Guide", "a bare site name keeps English"


JAPANESE_KEYWORDS = [
    ("コーヒーの淹れ方", 9900),
    ("コーヒー 淹れ方 初心者", 2400),
    ("ハンドドリップ コツ", 3600),
    ("ハンドドリップ 温度", 1300),
    ("コールドブリュー 作り方", 4400),
    ("コールドブリュー 時間", 1000),
    ("エスプレッソとは", 2900),
    ("エスプレッソ 淹れ方", 1900),
    ("コーヒー豆 保存方法", 5400),
    ("コーヒー豆 挽き方", 2200),
]


def test_a_japanese_site_runs_the_whole_chain_offline_and_exports_japanese_pages(tmp_path):
    keywords = tmp_path / "keywords.csv"
    keywords.write_text("keyword,volume\n" + "".join(f"{k},{v}\n" for k, v in JAPANESE_KEYWORDS), encoding="utf-8")
    env = Env(tmp_path)
    try:
        site = env.add_site("kohi", keywords=keywords, name="コーヒーの時間")
        env.store.update_site_settings(
            site.id, {"language": "ja", "faq": True, "base_url": "https://kohi.example", "target_cluster_size": 4}
        )
        assert env.materialize("kohi").success
        items = review.review_list(env.store, site="kohi")
        assert items and env.store.images(site.id), "articles with their images"
        review.approve(env.store, items[0].id, actor="ana")
        folder = publishing.publish(env.store, items[0].id, tmp_path / "publish", actor="ana").folder
        assert folder is not None and folder.name.isascii() and len(folder.name) > 3, "a readable ASCII slug"
        page = (folder / "index.html").read_text(encoding="utf-8")
        assert '<html lang="ja">' in page and '"inLanguage": "ja"' in page.replace("\\u003c", "<")
        variant = review.load_article(env.store, items[0].id).variant("A")
        assert "この記事では" in variant.body_html, "the offline provider's own phrases are Japanese"
    finally:
        env.close()
