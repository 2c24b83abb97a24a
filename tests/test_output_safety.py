"""Output safety: model text is shown as text wherever it goes (exports, metadata previews, the terminal).

The store keeps hostile text harmless (nh3 keeps `&lt;script&gt;` as escaped text); these tests run the
chain with a model that writes such text everywhere it can, then render what the pipeline writes out with
a real CommonMark renderer (markdown-it-py, raw HTML enabled as CommonMark specifies) and check that none
of it became HTML, a script link or a foreign image, and that the text still says what the model wrote.
The renderer's own link filter is switched off, so the checks see what the pipeline wrote, not what
markdown-it happens to refuse.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown_it import MarkdownIt
from sqlalchemy import select

import resources.llm
from assets.reporting import markdown_table
from pipeline import cli, publishing, review
from pipeline.article_html import read_sections, sanitize_fragment
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.wire import Completion, CompletionRequest
from pipeline.models import ContentVariant
from pipeline.output_safety import link_url, markdown_text, terminal_text
from pipeline.prompts.schemas import ArticleDraft, ArticleSection, ImagePromptSet
from pipeline.stages.content import article_markdown
from resources import LLMResource
from tests.conftest import Env

KEYWORDS = [
    "cold brew coffee",
    "cold brew ratio",
    "cold brew concentrate",
    "cold brew at home",
    "cold brew recipe",
    "cold brew maker",
    "cold brew steep time",
    "cold brew grind size",
    "cold brew vs iced coffee",
    "cold brew caffeine",
    "nitro cold brew",
    "cold brew filter",
]

ESCAPES = "\x1b[31mred\x1b[0m \x1b]8;;https://evil.example/\x07click\x1b]8;;\x07 \x9b2J \u202egnp.exe\u202c"
TITLE = f'Cold brew <script>alert("title")</script> [x](javascript:alert(0)) {ESCAPES}'
META_TITLE = "Title: with a colon\n---\nlayout: evil\n# not a comment \"double\" 'single' [x](javascript:alert(0))"
DESCRIPTION = '---\n...\nkey: value\n<script>alert("description")</script> <img src=x onerror=alert(0)> end'
HEADING_1 = '<script>alert("h2")</script> Grind size'
HEADING_2 = "Water & temperature\n<img src=x onerror=alert(9)> [x](javascript:alert(10)) #"
INTRO = (
    "<p>Intro &lt;script&gt;alert(1)&lt;/script&gt; then &lt;img src=x onerror=alert(2)&gt; then "
    f"[click me](javascript:alert(3)) then ![pic](javascript:alert(4)) and {ESCAPES} in the body.</p>"
)
# Links outside the site's link plan: the content stage unlinks them (text kept); the first article gets them
# back in the `hostile_ids` fixture, as a store written before the link plan holds them, for the exports.
LINKS = (
    '<p><a href="javascript&amp;#58;alert(5)">entity link</a>, '
    '<a href="x) &lt;script&gt;alert(6)&lt;/script&gt;">breakout link</a>, '
    '<a href="https://example.com/a?b=1&amp;c=2" title="t&quot; onmouseover=&quot;alert(7)">good link</a>, '
    '<a href="javascript:alert(8)">script link</a>, <a href="/relative/page">relative link</a>, '
    '<a href="mailto:ed@example.com">mail link</a>.</p>'
)
SECTION_EXTRA = (
    "<p># not a heading</p><p>&lt;/p&gt;&lt;svg onload=alert(11)&gt; \\&lt;b&gt; back\\slash `tick`</p>"
    "<p><code>a`b\n&lt;script&gt;alert(12)&lt;/script&gt;</code></p>"
    "<ul><li>&lt;iframe src=javascript:alert(13)&gt;</li><li>- dash</li></ul>"
)
FEATURED_ALT = (
    'x](javascript:alert(14)) <img src=x onerror=alert(15)> "quoted"\n\nnew paragraph <script>alert(16)</script>'
)
SECTION_ALT = '{heading}"](javascript:alert(17))\n<img src=x onerror=alert(18)> ' + ESCAPES
IMAGE_PROMPT = "Photo | with pipe <script>alert(19)</script> [x](javascript:alert(20))"
TAGS = ["<b>bold</b>", "tag: value", "---", "[x](javascript:alert(21))"]

# What the rendered Markdown may contain: the export's own structure, nothing a model could smuggle in.
RENDERED_TAGS = {"p", "h1", "h2", "h3", "em", "strong", "a", "img", "ul", "ol", "li", "code", "pre", "br", "hr"}
TABLE_TAGS = {"table", "thead", "tbody", "tr", "th", "td"}
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class HostileModel(OfflineProvider):
    """The offline composer, except that it writes hostile text into every article field and image prompt."""

    name = "hostile"

    async def complete(self, request: CompletionRequest) -> Completion:
        completion = await super().complete(request)
        answer = completion.answer
        if isinstance(answer, ArticleDraft):
            answer = hostile_article(answer)
        elif isinstance(answer, ImagePromptSet):
            answer = hostile_image_prompts(answer)
        return dataclasses.replace(completion, answer=answer)


def hostile_article(draft: ArticleDraft) -> ArticleDraft:
    first, second, *rest = draft.sections
    sections = [
        ArticleSection(heading=HEADING_1, html=first.html + SECTION_EXTRA),
        ArticleSection(heading=HEADING_2, html=second.html),
        *rest,
    ]
    return draft.model_copy(
        update={
            "title": TITLE,
            "meta_title": META_TITLE,
            "meta_description": DESCRIPTION,
            "intro_html": INTRO + LINKS + draft.intro_html,
            "sections": sections,
            "conclusion_html": draft.conclusion_html + "<p>&lt;/p&gt;&lt;svg onload=alert(22)&gt; done</p>",
            "tags": TAGS,
        }
    )


def hostile_image_prompts(answer: ImagePromptSet) -> ImagePromptSet:
    featured = answer.featured.model_copy(update={"alt_text": FEATURED_ALT, "prompt": IMAGE_PROMPT})
    in_article = [
        item.model_copy(update={"alt_text": SECTION_ALT.format(heading=item.heading), "prompt": IMAGE_PROMPT})
        for item in answer.in_article
    ]
    return answer.model_copy(update={"featured": featured, "in_article": in_article})


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, dict[str, Mapping[str, Any]]]]:
    """A small site whose whole chain ran with `HostileModel`, and each asset's materialization metadata."""
    root = tmp_path_factory.mktemp("hostile")
    keywords = root / "keywords.csv"
    keywords.write_text("keyword\n" + "\n".join(KEYWORDS) + "\n", encoding="utf-8")
    env = Env(root)
    env.add_site("hostile", keywords=keywords, name="Hostile Site")
    resources.llm.PROVIDERS["hostile"] = lambda *_args: HostileModel()
    try:
        env.resources["llm"] = LLMResource(provider="hostile", image_size="256x256")
        result = env.materialize("hostile")
    finally:
        del resources.llm.PROVIDERS["hostile"]
    assert result.success
    metadata: dict[str, Mapping[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        assert event.asset_key is not None
        metadata[event.asset_key.to_user_string()] = event.materialization.metadata
    yield env, metadata
    env.close()


@pytest.fixture(scope="module")
def hostile_ids(hostile) -> list[int]:
    env, _ = hostile
    ids = [item.id for item in review.review_list(env.store, site="hostile")]
    assert len(ids) >= 2
    # Meta fields with their line breaks, as a store written by an earlier version (or another writer)
    # holds them: exports and the CLI must cope whatever the current stage keeps.
    with env.store.transaction() as session:
        for variant in session.scalars(select(ContentVariant).where(ContentVariant.content_id.in_(ids))):
            variant.meta_title, variant.meta_description = META_TITLE, DESCRIPTION
            if variant.content_id == ids[0]:
                variant.body_html = sanitize_fragment(LINKS) + "\n" + variant.body_html
    return ids


@pytest.fixture(scope="module")
def published(hostile, hostile_ids, tmp_path_factory) -> Path:
    """The export folder of the first hostile article, approved and published."""
    env, _ = hostile
    review.approve(env.store, hostile_ids[0], actor="tester")
    folder = publishing.publish(env.store, hostile_ids[0], tmp_path_factory.mktemp("publish"), actor="tester").folder
    assert folder is not None  # the folder target is on by default
    return folder


class Rendered(HTMLParser):
    """What a browser would get from rendered Markdown: elements with their attributes, and the text."""

    TRACKED = ("p", "h1", "h2", "em", "code", "a", "li", "th", "td")

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {tag: [] for tag in self.TRACKED}
        self._open: list[str] = []
        self._chunks: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag in self.TRACKED:
            self._open.append(tag)
            self.texts[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        self._chunks.append(data)
        for tag in set(self._open):
            self.texts[tag][-1] += data

    @property
    def text(self) -> str:
        """All the visible text, whitespace collapsed."""
        return one_line("".join(self._chunks))

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.elements if name == tag]

    def strings(self, tag: str) -> list[str]:
        """The text of each `tag` element (a tracked one), whitespace collapsed."""
        return [one_line(text) for text in self.texts[tag]]


class _NoLinkValidation(MarkdownIt):
    """Renders any link: the tests check what the pipeline let through, not markdown-it's own filter."""

    def validateLink(self, url: str) -> bool:
        return True


def render(markdown: str, *, tables: bool = False) -> Rendered:
    """CommonMark with raw HTML on (its default) and no link validation of its own."""
    renderer = _NoLinkValidation("commonmark")
    if tables:
        renderer.enable("table")
    return Rendered(renderer.render(markdown))


def scheme(url: str) -> str | None:
    """The scheme a browser would read (it ignores leading controls and spaces, tabs and newlines)."""
    found = re.match(r"([a-z][a-z0-9+.\-]*):", re.sub(r"[\x00-\x20]", "", url).lower())
    return found.group(1) if found else None


def assert_inert(
    page: Rendered, *, tags: AbstractSet[str] = RENDERED_TAGS, images: AbstractSet[str] = frozenset()
) -> None:
    """No script, no event handler, no link or image outside http(s)/mailto/relative, no foreign image."""
    assert {name for name, _ in page.elements} <= tags
    for name, attrs in page.elements:
        assert not [attr for attr in attrs if attr.startswith("on")], (name, attrs)
        for attr in ("href", "src"):
            if (url := attrs.get(attr)) is not None:
                assert scheme(url) in (None, "http", "https", "mailto"), (name, attrs)
    assert {attrs["src"] for attrs in page.all("img")} <= images


def one_line(text: str) -> str:
    return " ".join(text.split())


def split_front_matter(markdown: str) -> tuple[list[str], str]:
    """The front matter lines between the first two lines that are exactly `---`, and the rest."""
    lines = markdown.split("\n")
    assert lines[0] == "---"
    end = lines.index("---", 1)
    return lines[1:end], "\n".join(lines[end + 1 :])


def variant_of(env: Env, content_id: int):
    return review.load_article(env.store, content_id).variant("A")


# -- published Markdown -------------------------------------------------------------------------------


def test_the_store_holds_the_hostile_text_as_the_pipeline_stores_it(hostile, hostile_ids):
    env, metadata = hostile
    variant = variant_of(env, hostile_ids[1])  # as the content stage stored it (the first was edited)
    assert variant.title == one_line(TITLE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in variant.body_html  # kept by nh3 as escaped text
    # None of the model's links is in the site's link plan: all unlinked, their text kept, and counted.
    assert "href" not in variant.body_html.split("<h2>", 1)[0]
    assert "entity link" in variant.body_html and "good link" in variant.body_html
    assert metadata["content"]["invented_links_removed"].value >= 6 * len(hostile_ids)
    assert [heading for heading, _ in read_sections(variant.body_html)][:2] == [HEADING_1, one_line(HEADING_2)]


def test_published_markdown_renders_hostile_body_text_as_text_not_html(published):
    _, body = split_front_matter((published / "index.md").read_text(encoding="utf-8"))
    page = render(body)

    images = {f"images/{path.name}" for path in (published / "images").iterdir()}
    assert_inert(page, images=images)
    for written in (
        "Intro <script>alert(1)</script> then <img src=x onerror=alert(2)> then [click me](javascript:alert(3))",
        "then ![pic](javascript:alert(4)) and",
        "</p><svg onload=alert(11)> \\<b> back\\slash `tick`",
        "a`b <script>alert(12)</script>",
        "<iframe src=javascript:alert(13)>",
        "</p><svg onload=alert(22)> done",
        "# not a heading",
        "- dash",
    ):
        assert written in page.text
    assert "a`b <script>alert(12)</script>" in page.strings("code")


def test_published_markdown_headings_keep_their_hostile_text(hostile, hostile_ids, published):
    env, _ = hostile
    variant = variant_of(env, hostile_ids[0])
    _, body = split_front_matter((published / "index.md").read_text(encoding="utf-8"))
    page = render(body)

    assert page.strings("h2") == [heading for heading, _ in read_sections(variant.body_html)]
    assert page.strings("h2")[:2] == [HEADING_1, one_line(HEADING_2)]


def test_published_markdown_keeps_only_http_relative_and_mailto_links_with_all_link_text(
    hostile, hostile_ids, published
):
    _, body = split_front_matter((published / "index.md").read_text(encoding="utf-8"))
    page = render(body)

    links = dict(zip(page.strings("a"), (attrs["href"] for attrs in page.all("a")), strict=True))
    assert links["good link"] == "https://example.com/a?b=1&c=2"
    assert links["relative link"] == "/relative/page"
    assert links["mail link"] == "mailto:ed@example.com"
    # Relative links in the store stay relative: their characters cannot be decoded into `javascript:`
    # or close the link early.
    entity, breakout = links["entity link"], links["breakout link"]
    assert entity is not None and breakout is not None
    assert scheme(entity) is None and ":" not in entity
    assert scheme(breakout) is None and "<" not in breakout
    assert "script link" not in links and "script link" in page.text  # nh3 dropped its href; text stays
    [good] = [attrs for attrs in page.all("a") if attrs["href"] == links["good link"]]
    assert good["title"] == 't" onmouseover="alert(7)'  # a title, not an attribute of its own


def test_published_markdown_image_alt_text_cannot_break_out_of_its_image(hostile, hostile_ids, published):
    env, _ = hostile
    variant = variant_of(env, hostile_ids[0])
    _, body = split_front_matter((published / "index.md").read_text(encoding="utf-8"))
    page = render(body)

    expected = [
        (f"images/{'featured' if prompt.kind == 'featured' else f'section-{n}'}.png", one_line(prompt.alt_text))
        for n, (prompt, _) in enumerate(env.store.variant_images(variant.id))
    ]
    assert [(attrs["src"], attrs["alt"]) for attrs in page.all("img")] == expected
    assert expected[0][1] == one_line(FEATURED_ALT) and len(expected) >= 2


def test_published_front_matter_values_cannot_break_out_of_the_yaml(hostile, hostile_ids, published):
    env, _ = hostile
    variant = variant_of(env, hostile_ids[0])
    markdown = (published / "index.md").read_text(encoding="utf-8")
    lines, _ = split_front_matter(markdown)

    matter = yaml.safe_load("\n".join(lines))
    assert (matter["title"], matter["meta_title"], matter["description"]) == (one_line(TITLE), META_TITLE, DESCRIPTION)
    assert (matter["title"], matter["tags"]) == (variant.title, TAGS)
    assert (matter["images"][0], matter["draft"]) == ("images/featured.png", False)
    # One line per key or list item: no value starts a line of its own (`---`, `...`, `key:`).
    assert all(re.match(r"([a-z_]+:( |$)|- )", line) for line in lines), lines
    assert len(matter) == len([line for line in lines if not line.startswith("- ")])
    # The front matter is inert even where a renderer without front-matter support shows it as Markdown.
    assert_inert(render(markdown), images={f"images/{p.name}" for p in (published / "images").iterdir()})


def test_published_html_page_still_escapes_the_same_hostile_text(published):
    html = (published / "index.html").read_text(encoding="utf-8")
    page = Rendered(html)
    # The one script is the page's own JSON-LD (tests/test_structured_data.py shows model text cannot end it).
    assert [attrs for name, attrs in page.elements if name == "script"] == [{"type": "application/ld+json"}]
    assert not [name for name, _ in page.elements if name in ("svg", "iframe")]
    assert "<script>alert(1)</script>" in page.text


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " \tjava\nscript:alert(1)",
        "\x01javascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "ftp://example.com/file",
    ],
)
def test_article_markdown_drops_links_with_other_schemes_and_keeps_their_text(href):
    # Bodies written before sanitising (or by another writer) are not trusted either.
    body = f'<p>See <a href="{href.replace("<", "&lt;")}">the link text</a> now.</p>'
    page = render(publishing.article_markdown(body))
    assert page.all("a") == []
    assert page.text == "See the link text now."


@pytest.mark.parametrize(
    "href",
    ["http://example.com/x", "https://example.com/a?b=1&c=2#f", "mailto:ed@example.com", "/x", "../x", "#f", "x.html"],
)
def test_article_markdown_keeps_http_mailto_and_relative_links(href):
    page = render(publishing.article_markdown(f'<p><a href="{href.replace("&", "&amp;")}">text</a></p>'))
    assert [attrs["href"] for attrs in page.all("a")] == [href]


def test_link_urls_are_percent_encoded_so_they_cannot_end_early_or_decode_into_a_scheme():
    assert link_url("x) <b>") == "x%29%20%3Cb%3E"
    assert link_url("javascript&#58;alert(1)") == "javascript&amp;#58;alert%281%29"
    assert link_url("javascript\\:alert(1)") == "javascript%5C:alert%281%29"
    assert link_url("  ") is None and link_url(None) is None


# -- metadata previews in the Dagster UI -------------------------------------------------------------


def test_asset_preview_tables_show_hostile_model_text_as_text(hostile, hostile_ids):
    env, metadata = hostile
    variant = variant_of(env, hostile_ids[0])

    content = render(metadata["content"]["preview"].value, tables=True)
    assert_inert(content, tags=RENDERED_TAGS | TABLE_TAGS)
    assert content.strings("th") == ["title", "words", "primary_keyword", "tags"]
    assert variant.title in content.strings("td")
    assert ", ".join(TAGS) in content.strings("td")

    prompts = render(metadata["image_prompts"]["preview"].value, tables=True)
    assert_inert(prompts, tags=RENDERED_TAGS | TABLE_TAGS)
    assert IMAGE_PROMPT in prompts.strings("td")
    assert HEADING_1 in prompts.strings("td")
    assert len(prompts.strings("td")) == 3 * len(prompts.all("tr")[1:])  # pipes did not add cells


def test_article_preview_metadata_shows_hostile_model_text_as_text(hostile):
    _, metadata = hostile
    markdown = metadata["content"]["article_preview"].value
    page = render(markdown)

    assert_inert(page)
    [title] = page.strings("h1")
    assert title == one_line(TITLE)
    assert page.strings("em") == [one_line(DESCRIPTION)]
    assert page.strings("h2")[:2] == [HEADING_1, one_line(HEADING_2)]


def test_article_markdown_preview_escapes_every_field_it_is_given():
    body = "<h2>## &lt;b&gt;x&lt;/b&gt; #</h2><p>1. &lt;script&gt;x&lt;/script&gt; [a](javascript:b)</p>"
    page = render(article_markdown("# <i>t</i> #", "*<em>d</em>*\n---", body))
    assert_inert(page)
    assert page.strings("h1") == ["# <i>t</i> #"]
    assert page.strings("em") == ["*<em>d</em>* ---"]
    assert page.strings("h2") == ["## <b>x</b> #"]
    assert "1. <script>x</script> [a](javascript:b)" in page.text


def test_markdown_table_keeps_pipes_backslashes_and_line_breaks_inside_their_cell():
    values = [
        "a | b",
        "back\\slash \\| pipe",
        "line\nbreak",
        "`code | span`",
        "<script>x</script>",
        "[x](javascript:y)",
    ]
    page = render(markdown_table([{"value": value, "n": 1} for value in values]), tables=True)
    assert_inert(page, tags=RENDERED_TAGS | TABLE_TAGS)
    assert page.strings("td") == [cell for value in values for cell in (one_line(value), "1")]


def test_markdown_text_renders_as_exactly_the_text():
    text = "*a* _b_ `c` \\d [e](f) ![g](h) <i>j</i> &amp; &lt; &#60; k < l > m"
    page = render(markdown_text(text))
    assert_inert(page)
    assert page.strings("p") == [text]


# -- the terminal ------------------------------------------------------------------------------------


def test_review_show_prints_model_text_with_control_characters_escaped(hostile, hostile_ids, monkeypatch, capsys):
    env, _ = hostile
    monkeypatch.setenv("DATABASE_URL", env.url)
    assert cli.main(["review", "show", str(hostile_ids[1])]) == 0
    shown = capsys.readouterr().out

    assert not CONTROLS.findall(shown)
    assert "\\x1b[31mred\\x1b[0m \\x1b]8;;https://evil.example/\\x07click" in shown
    assert "\\x9b2J \\u202egnp.exe\\u202c" in shown
    lines = shown.splitlines()
    assert f"# {terminal_text(one_line(TITLE))}" in lines
    # A multi-line value stays on its own line, its line breaks shown as `\n`.
    assert f"Meta title:  {META_TITLE}".replace("\n", "\\n") in lines
    assert f"Description: {DESCRIPTION}".replace("\n", "\\n") in lines
    assert sum(1 for line in lines if "after '" in line) >= 1
    assert not [line for line in lines if line.startswith("layout:") or line == "---"]


def test_review_list_prints_titles_with_control_characters_escaped(hostile, monkeypatch, capsys):
    env, _ = hostile
    monkeypatch.setenv("DATABASE_URL", env.url)
    assert cli.main(["review", "list", "--site", "hostile"]) == 0
    table = capsys.readouterr().out
    assert not CONTROLS.findall(table)
    assert terminal_text(one_line(TITLE)) in table

    assert cli.main(["review", "list", "--site", "hostile", "--json"]) == 0
    listed = capsys.readouterr().out
    assert not CONTROLS.findall(listed)  # JSON escapes them (\u001b)
    assert one_line(TITLE) in [item["title"] for item in json.loads(listed)]


def test_terminal_text_shows_every_control_character_as_an_escape():
    assert terminal_text("a\x1b[2Jb\x07c\x9bd\x00e\x7ff\u202eg\rh\ti\nj") == (
        "a\\x1b[2Jb\\x07c\\x9bd\\x00e\\x7ff\\u202eg\\rh\\ti\\nj"
    )
    assert terminal_text("a\r\nb\tc\x1b", multiline=True) == "a\nb\tc\\x1b"
    assert terminal_text("plain text, é ü — “quotes”") == "plain text, é ü — “quotes”"
