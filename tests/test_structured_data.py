"""Structured data and page basics of published articles (`pipeline.publishing.structured_data`).

Each test publishes a sample article through the chain and reads the exported `index.html` with an HTML
parser, as a crawler would: `lang`, the canonical link, Open Graph and Twitter tags, the table of contents,
and the JSON-LD, which is expanded by a JSON-LD processor and checked against schema.org's own vocabulary
(`tests/schema_org.py`): every type and property exists, every property belongs to its node's type.
"""

from __future__ import annotations

import json
from datetime import UTC
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy import update

from pipeline import publishing, review
from pipeline.keywords import normalize_keyword
from pipeline.language import labels
from pipeline.models import Content, ContentVariant, Idea, Keyword
from pipeline.publishing import structured_data
from pipeline.publishing.render import table_of_contents
from pipeline.urls import article_url
from tests import schema_org, test_static_site
from tests.conftest import Env
from tests.test_static_site import build_with_hugo, page

BASE_URL = "https://coffee.example/guide/"
AUTHOR = {"name": "Mara Lind", "url": "https://coffee.example/about/mara/"}
PUBLISHER = {
    "name": "Home Barista Media",
    "url": "https://coffee.example/",
    "logo_url": "https://coffee.example/logo.png",
}
HOSTILE = "</script><script>alert(1)</script>"
_taken: set[int] = set()
hugo = test_static_site.hugo  # the fixture: the `hugo` binary (a skip without it, unless required)


@pytest.fixture
def env(sample_run) -> Env:
    """The module's shared sample environment (shadows the empty `env` fixture on purpose)."""
    shared: Env = sample_run[0]
    return shared


@pytest.fixture
def publish_root(tmp_path: Path) -> Path:
    return tmp_path / "publish"


def draft(env: Env, *, not_in: set[int] | None = None) -> int:
    """A draft article that no other test of this module has used."""
    for item in review.review_list(env.store, status="draft"):
        if item.id not in _taken and item.id not in (not_in or set()):
            _taken.add(item.id)
            return item.id
    raise AssertionError("the sample site ran out of untouched drafts")


def configure(env: Env, **settings: Any) -> None:
    """Replace the sample site's settings."""
    env.store.update_site_settings(env.store.site("sample").id, settings)


def edit_variant(env: Env, content_id: int, **values: Any) -> ContentVariant:
    """Change the article's current variant A in place (a stand-in for what the model wrote)."""
    variant = review.load_article(env.store, content_id).variant("A")
    with env.store.transaction() as session:
        session.execute(update(ContentVariant).where(ContentVariant.id == variant.id).values(**values))
    return review.load_article(env.store, content_id).variant("A")


def with_faq(body_html: str, language: str = "en") -> str:
    """The body ending in an FAQ section as article generation writes it."""
    return body_html + (
        f"<h2>{labels(language).faq}</h2>"
        "<h3>How long does cold brew keep?</h3><p>Up to two weeks in the fridge.</p><p>Keep it sealed.</p>"
        "<h3>Is cold brew stronger?</h3><p>Only as a concentrate.</p>"
    )


def publish(env: Env, content_id: int, publish_root: Path) -> Path:
    review.approve(env.store, content_id, actor="tester")
    folder = publishing.publish(env.store, content_id, publish_root, actor="tester").folder
    assert folder is not None  # the folder target is on by default
    return folder


class Page(HTMLParser):
    """The exported page as a browser parses it: `lang`, head links and metas, scripts, headings, the nav."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.canonical: list[str | None] = []
        self.meta: dict[str, list[str | None]] = {}
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.h2: list[tuple[str | None, str]] = []  # (id, text) of every H2 outside the nav
        self.nav_links: list[tuple[str | None, str]] = []  # (href, text)
        self.navs: list[dict[str, str | None]] = []
        self._open: list[str] = []
        self._text: list[str] = []
        self._h2_id: str | None = None
        self._href: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.lang = found.get("lang")
        elif tag == "link" and found.get("rel") == "canonical":
            self.canonical.append(found.get("href"))
        elif tag == "meta" and (key := found.get("property") or found.get("name")):
            self.meta.setdefault(key, []).append(found.get("content"))
        elif tag == "nav":
            self.navs.append(found)
        if tag in ("script", "h2", "a"):
            self._text = []
            self._h2_id, self._href = found.get("id"), found.get("href")
            self._script = found
        if tag in ("nav", "h2", "a", "script"):
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        text = " ".join("".join(self._text).split())
        if tag == "script":
            self.scripts.append((self._script, "".join(self._text)))
        elif tag == "h2" and "nav" not in self._open:
            self.h2.append((self._h2_id, text))
        elif tag == "a" and "nav" in self._open:
            self.nav_links.append((self._href, text))
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def json_ld(self) -> dict[str, Any]:
        """The page's one JSON-LD document."""
        assert [attrs for attrs, _ in self.scripts] == [{"type": "application/ld+json"}], self.scripts
        document: dict[str, Any] = json.loads(self.scripts[0][1])
        return document

    def content(self, key: str) -> str | None:
        values = self.meta.get(key, [])
        assert len(values) <= 1, (key, values)
        return values[0] if values else None


def read_page(folder: Path) -> Page:
    return Page((folder / "index.html").read_text(encoding="utf-8"))


def by_type(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The graph's top-level nodes by their type (one each)."""
    nodes = {node["@type"]: node for node in document["@graph"]}
    assert len(nodes) == len(document["@graph"]), document
    return nodes


def front_matter(folder: Path) -> dict[str, Any]:
    _, matter, _ = (folder / "index.md").read_text(encoding="utf-8").split("---\n", 2)
    loaded: dict[str, Any] = yaml.safe_load(matter)
    return loaded


def published_at(env: Env, content_id: int) -> str:
    with env.store.transaction() as session:
        row = session.get(Content, content_id)
        assert row is not None and row.published_at is not None
        return row.published_at.replace(tzinfo=UTC).isoformat()


# -- the exported page ----------------------------------------------------------------------------------


def test_exported_article_has_schema_org_valid_article_and_breadcrumb_json_ld(env, publish_root):
    configure(env, base_url=BASE_URL, author=AUTHOR, publisher=PUBLISHER)
    content_id = draft(env)
    folder = publish(env, content_id, publish_root)
    article = review.load_article(env.store, content_id)
    variant = article.variant("A")
    canonical = article_url(BASE_URL, article.slug)

    document = read_page(folder).json_ld()
    assert schema_org.problems(document) == []
    assert document["@context"] == "https://schema.org"
    nodes = by_type(document)
    assert set(nodes) == {"Article", "BreadcrumbList"}  # no FAQ section in the body, so no FAQPage
    node = nodes["Article"]
    assert node["headline"] == variant.title and len(node["headline"]) <= 110
    assert node["description"] == variant.meta_description
    assert node["mainEntityOfPage"] == {"@type": "WebPage", "@id": canonical}
    assert node["inLanguage"] == "en"
    assert node["datePublished"] == node["dateModified"] == published_at(env, content_id)
    assert node["image"][0] == f"{canonical}images/featured.png"
    assert all(url.startswith(canonical + "images/") for url in node["image"])
    assert len(node["image"]) == len(list((folder / "images").iterdir()))
    assert node["author"] == {"@type": "Person", **AUTHOR}
    assert node["publisher"] == {
        "@type": "Organization",
        "name": PUBLISHER["name"],
        "url": PUBLISHER["url"],
        "logo": {"@type": "ImageObject", "url": PUBLISHER["logo_url"]},
    }


def test_exported_page_has_lang_canonical_open_graph_and_twitter_tags(env, publish_root):
    configure(env, base_url=BASE_URL)
    content_id = draft(env)
    folder = publish(env, content_id, publish_root)
    article = review.load_article(env.store, content_id)
    variant = article.variant("A")
    canonical = article_url(BASE_URL, article.slug)

    page = read_page(folder)
    assert page.lang == "en"
    assert page.canonical == [canonical]
    assert page.content("og:type") == "article"
    assert (page.content("og:title"), page.content("og:description")) == (variant.title, variant.meta_description)
    assert page.content("og:url") == canonical
    assert page.content("og:image") == page.content("twitter:image") == f"{canonical}images/featured.png"
    assert page.content("og:locale") == "en_US"
    assert page.content("og:site_name") == article.site.name
    assert page.content("article:published_time") == published_at(env, content_id)
    assert page.content("twitter:card") == "summary_large_image"
    assert page.content("twitter:title") == variant.title
    # Without a Person in the settings the author is the site, as an Organization.
    author = by_type(page.json_ld())["Article"]["author"]
    assert author == {"@type": "Organization", "name": article.site.name, "url": BASE_URL}
    matter = front_matter(folder)
    assert (matter["lang"], matter["canonical"], matter["url"]) == ("en", canonical, f"/{article.slug}/")


def test_without_a_base_url_there_is_no_canonical_url_and_no_breadcrumb_but_valid_json_ld(env, publish_root):
    configure(env)
    folder = publish(env, draft(env), publish_root)

    page = read_page(folder)
    assert page.lang == "en" and page.canonical == []
    assert page.content("og:url") is None and page.content("og:image") is None  # Open Graph needs absolute URLs
    document = page.json_ld()
    assert schema_org.problems(document) == []
    assert set(by_type(document)) == {"Article"}
    assert "mainEntityOfPage" not in document["@graph"][0]
    assert document["@graph"][0]["image"][0] == "images/featured.png"  # relative to the page
    matter = front_matter(folder)
    assert matter["lang"] == "en" and not {"canonical", "url"} & set(matter)


def test_hugo_builds_the_page_at_its_canonical_url(env, publish_root, tmp_path, hugo):
    configure(env, base_url=BASE_URL)
    content_id = draft(env)
    folder = publish(env, content_id, publish_root)
    path = urlsplit(article_url(BASE_URL, review.load_article(env.store, content_id).slug)).path

    public = build_with_hugo(hugo, publish_root, tmp_path / "hugo-site", base_url=BASE_URL)

    # Hugo writes under the public dir without the base URL's path, and links with it.
    built = page(public, path.removeprefix(urlsplit(BASE_URL).path.rstrip("/")))
    resolved = [attrs["src"] for attrs in built.elements["img"] if attrs.get("class") == "front-matter"]
    assert resolved == [f"{path}{src}" for src in front_matter(folder)["images"]]


# -- FAQ ------------------------------------------------------------------------------------------------


def test_faq_section_in_the_body_gives_a_valid_faq_page(env, publish_root):
    configure(env, base_url=BASE_URL, faq=True)
    content_id = draft(env)
    variant = review.load_article(env.store, content_id).variant("A")
    edit_variant(env, content_id, body_html=with_faq(variant.body_html))
    folder = publish(env, content_id, publish_root)

    document = read_page(folder).json_ld()
    assert schema_org.problems(document) == []
    faq = by_type(document)["FAQPage"]
    assert faq["mainEntity"] == [
        {
            "@type": "Question",
            "name": "How long does cold brew keep?",
            "acceptedAnswer": {"@type": "Answer", "text": "Up to two weeks in the fridge. Keep it sealed."},
        },
        {
            "@type": "Question",
            "name": "Is cold brew stronger?",
            "acceptedAnswer": {"@type": "Answer", "text": "Only as a concentrate."},
        },
    ]
    assert faq["inLanguage"] == "en"


def test_an_h2_titled_otherwise_is_not_read_as_an_faq():
    body = "<h2>Questions and more</h2><h3>Q?</h3><p>A.</p>"
    assert structured_data.faq_entries(body, "en") == []
    assert structured_data.faq_entries(with_faq("<p>Intro</p>", "de"), "en") == []  # another language's heading
    assert [e.question for e in structured_data.faq_entries(with_faq("<p>Intro</p>", "de"), "de")] == [
        "How long does cold brew keep?",
        "Is cold brew stronger?",
    ]
    # The section ends at the next H2; a question without an answer is left out.
    body = with_faq("") + "<h3>Unanswered?</h3><h2>After</h2><h3>Not a question</h3><p>x</p>"
    assert [e.question for e in structured_data.faq_entries(body, "en")] == [
        "How long does cold brew keep?",
        "Is cold brew stronger?",
    ]


# -- hostile text ---------------------------------------------------------------------------------------


def test_hostile_title_and_description_cannot_end_the_json_ld_script(env, publish_root):
    configure(env, base_url=BASE_URL)
    content_id = draft(env)
    title = f"Cold brew {HOSTILE} <!-- & guide"
    description = f"{HOSTILE}<script>alert(2)</script> ]]> \u2028 end"
    variant = review.load_article(env.store, content_id).variant("A")
    # In a stored (sanitised) body hostile text is escaped text, which the FAQ answer's plain text decodes.
    question = "<h3>Is &lt;/script&gt;&lt;script&gt;alert(3)&lt;/script&gt; safe?</h3><p>No &amp; never.</p>"
    body = with_faq(variant.body_html) + question
    edit_variant(env, content_id, title=title, meta_description=description, body_html=body)
    folder = publish(env, content_id, publish_root)

    html = (folder / "index.html").read_text(encoding="utf-8")
    page = Page(html)
    document = page.json_ld()  # exactly one script, the JSON-LD, and it parses
    article = by_type(document)["Article"]
    assert (article["name"], article["description"]) == (title, description)
    last = by_type(document)["FAQPage"]["mainEntity"][-1]
    assert (last["name"], last["acceptedAnswer"]["text"]) == (f"Is {HOSTILE.replace('1', '3')} safe?", "No & never.")
    assert schema_org.problems(document) == []
    script = html[html.index('<script type="application/ld+json">') : html.index("</script>") + len("</script>")]
    assert script.count("<") == 2 and script.count(">") == 2  # its own two tags, nothing from the model
    assert "&" not in script
    assert page.content("og:title") == page.content("twitter:title") == title  # escaped, read back whole
    assert page.content("og:description") == description


# -- table of contents ----------------------------------------------------------------------------------


def test_table_of_contents_links_every_h2_by_a_unique_id_when_on(env, publish_root):
    configure(env, base_url=BASE_URL, table_of_contents=True)
    content_id = draft(env)
    variant = review.load_article(env.store, content_id).variant("A")
    edit_variant(env, content_id, body_html=variant.body_html + "<h2>Tips &amp; tricks</h2><h2>Tips &amp; tricks</h2>")
    folder = publish(env, content_id, publish_root)

    page = read_page(folder)
    assert page.navs == [{"class": "table-of-contents", "aria-label": "Contents"}]
    ids = [anchor for anchor, _ in page.h2]
    assert all(ids) and len(set(ids)) == len(ids)
    assert ids[-2:] == ["tips-tricks", "tips-tricks-2"]
    assert page.nav_links == [(f"#{anchor}", text) for anchor, text in page.h2]
    assert page.nav_links[-1] == ("#tips-tricks-2", "Tips & tricks")


def test_table_of_contents_keeps_ids_the_body_has_and_never_repeats_one():
    body = '<h2>Grind</h2><h2 class="x" data-id="a">Grind</h2><h2 id="grind-2">Later</h2>'
    nav, with_ids = table_of_contents(body, "Contents")
    assert (
        with_ids
        == '<h2 id="grind">Grind</h2><h2 class="x" data-id="a" id="grind-3">Grind</h2><h2 id="grind-2">Later</h2>'
    )
    assert [href for href, _ in Page(nav).nav_links] == ["#grind", "#grind-3", "#grind-2"]


def test_no_table_of_contents_when_off(env, publish_root):
    configure(env, base_url=BASE_URL)
    page = read_page(publish(env, draft(env), publish_root))
    assert page.navs == [] and page.nav_links == []
    assert all(anchor is None for anchor, _ in page.h2)


# -- language -------------------------------------------------------------------------------------------


def test_german_site_gives_lang_in_language_og_locale_german_labels_and_faq(env, publish_root):
    configure(env, base_url=BASE_URL, language="de", faq=True, table_of_contents=True)
    content_id = draft(env)
    variant = review.load_article(env.store, content_id).variant("A")
    edit_variant(env, content_id, body_html=with_faq(variant.body_html, "de"))
    folder = publish(env, content_id, publish_root)

    page = read_page(folder)
    assert page.lang == "de"
    assert page.content("og:locale") == "de_DE"
    assert page.navs[0]["aria-label"] == "Inhalt"
    document = page.json_ld()
    assert schema_org.problems(document) == []
    nodes = by_type(document)
    assert nodes["Article"]["inLanguage"] == nodes["FAQPage"]["inLanguage"] == "de"
    assert len(nodes["FAQPage"]["mainEntity"]) == 2
    assert nodes["BreadcrumbList"]["itemListElement"][0]["name"] == "Startseite"
    assert front_matter(folder)["lang"] == "de"


@pytest.mark.parametrize(
    ("language", "locale"), [("en", "en_US"), ("de", "de_DE"), ("de-AT", "de_AT"), ("pt-BR", "pt_BR"), ("xx", None)]
)
def test_open_graph_locale_from_the_site_language(language, locale):
    assert structured_data.og_locale(language) == locale


# -- breadcrumb and the cluster pillar ------------------------------------------------------------------


def cluster_drafts(env: Env) -> tuple[Idea, list[int]]:
    """A cluster's pillar idea and the untouched drafts of its cluster, pillar first."""
    site = env.store.site("sample")
    contents = env.store.content_ids_by_idea(site.id)
    untouched = {item.id for item in review.review_list(env.store, status="draft")} - _taken
    for idea in env.store.ideas(site.id):
        pillar = structured_data.cluster_pillar(env.store, idea)
        ids = [
            contents[other.id]
            for other in env.store.ideas(site.id)
            if other.cluster_id == pillar.cluster_id and contents.get(other.id) in untouched
        ]
        if contents.get(pillar.id) in untouched and len(ids) >= 2:
            rest = [content_id for content_id in ids if content_id != contents[pillar.id]]
            return pillar, [contents[pillar.id], *rest]
    raise AssertionError("no cluster with an untouched pillar and another untouched draft")


def test_breadcrumb_goes_site_then_cluster_pillar_then_article(env, publish_root):
    configure(env, base_url=BASE_URL)
    pillar, (pillar_id, other_id, *_) = cluster_drafts(env)
    _taken.update({pillar_id, other_id})
    pillar_folder = publish(env, pillar_id, publish_root)
    folder = publish(env, other_id, publish_root)
    pillar_article = review.load_article(env.store, pillar_id)
    article = review.load_article(env.store, other_id)

    document = read_page(folder).json_ld()
    assert schema_org.problems(document) == []
    items = by_type(document)["BreadcrumbList"]["itemListElement"]
    assert [(item["position"], item["name"], item["item"]["@id"]) for item in items] == [
        (1, "Home", BASE_URL),
        (2, pillar_article.variant("A").title, article_url(BASE_URL, pillar_article.slug)),
        (3, article.variant("A").title, article_url(BASE_URL, article.slug)),
    ]
    # The pillar itself: site, then the pillar.
    pillar_items = by_type(read_page(pillar_folder).json_ld())["BreadcrumbList"]["itemListElement"]
    assert [item["item"]["@id"] for item in pillar_items] == [BASE_URL, article_url(BASE_URL, pillar_article.slug)]
    assert pillar.id == pillar_article.idea.id


def test_cluster_pillar_is_the_pillar_idea_else_the_highest_volume_first_keyword(env):
    site = env.store.site("sample")
    ideas = env.store.ideas(site.id)
    cluster = [idea for idea in ideas if idea.cluster_id == ideas[-1].cluster_id]
    assert len(cluster) >= 2
    first, last = cluster[0], cluster[-1]
    keywords = {keyword.normalized: keyword for keyword in env.store.keywords(site.id)}
    lead = keywords[normalize_keyword(last.target_keywords[0])]
    with env.store.transaction() as session:
        session.execute(update(Keyword).where(Keyword.id == lead.id).values(volume=10_000_000))
    assert structured_data.cluster_pillar(env.store, first).id == last.id  # the highest volume
    with env.store.transaction() as session:
        session.execute(update(Idea).where(Idea.id == first.id).values(content_type="pillar"))
    assert structured_data.cluster_pillar(env.store, last).id == first.id  # a pillar beats any volume


def test_headline_is_cut_at_a_word_to_110_characters():
    title = "Cold brew " * 20
    cut = structured_data.headline(title)
    assert len(cut) <= 110 and cut.endswith("brew…")
    assert structured_data.headline("Short title") == "Short title"
