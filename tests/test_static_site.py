"""Static-site exports: the folder target's `index.md` is a page bundle Hugo builds as it is.

The public front matter says what the page is (`date`, `lastmod`, `slug`, `description`, `tags`,
`categories`, `images`, `draft`); which model wrote it and the pipeline's ids live in the private
`.publication.json` beside it, which no build publishes. The Hugo test builds a real export with the
`hugo` binary (skipped without it, unless `PIPELINE_REQUIRE_HUGO=1`, as in CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import update

from pipeline import publishing, review
from pipeline.models import Content, Publication
from tests.conftest import Env
from tests.test_review import current_a_images, regenerate

SIDECAR = ".publication.json"
INTERNAL_KEYS = {"model", "provider", "prompt_version", "content_id", "version", "variant", "site"}
INTERNAL_KEYS |= {"primary_keyword", "secondary_keywords", "published_at", "featured_image"}
_taken: set[int] = set()


@pytest.fixture
def env(sample_run) -> Env:
    """The module's shared sample environment (shadows the empty `env` fixture on purpose)."""
    shared: Env = sample_run[0]
    return shared


@pytest.fixture
def draft_id(env: Env) -> int:
    """A draft article that no other test of this module has used."""
    for item in review.review_list(env.store, status="draft"):
        if item.id not in _taken:
            _taken.add(item.id)
            return item.id
    raise AssertionError("the sample site ran out of untouched drafts")


@pytest.fixture
def publish_root(tmp_path: Path) -> Path:
    return tmp_path / "publish"


@pytest.fixture
def hugo() -> str:
    """The `hugo` binary; the test is skipped without it, or fails if `PIPELINE_REQUIRE_HUGO=1`."""
    found = shutil.which("hugo")
    if found is None:
        message = "the hugo binary is not on PATH (Debian: apt-get install hugo)"
        if os.environ.get("PIPELINE_REQUIRE_HUGO") == "1":
            pytest.fail(f"PIPELINE_REQUIRE_HUGO=1 but {message}")
        pytest.skip(message)
    return found


def publish(env: Env, content_id: int, publish_root: Path) -> Path:
    review.approve(env.store, content_id, actor="tester")
    folder = publishing.publish(env.store, content_id, publish_root, actor="tester").folder
    assert folder is not None  # the folder target is on by default
    return folder


def read_front_matter(folder: Path) -> tuple[dict[str, Any], str]:
    """The parsed front matter of the exported `index.md`, and its raw text."""
    _, matter, _ = (folder / "index.md").read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(matter), matter


def read_sidecar(folder: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    return record


def stored_published_at(env: Env, content_id: int) -> datetime:
    with env.store.transaction() as session:
        row = session.get(Content, content_id)
        assert row is not None and row.published_at is not None, content_id
        return row.published_at.replace(tzinfo=UTC)


def move_first_publication(env: Env, content_id: int, to: datetime) -> None:
    """Make the article look first published at `to` (days ago), as a re-publish finds it: its status and
    its folder publication (which keeps the first time on that target)."""
    with env.store.transaction() as session:
        row = session.get(Content, content_id)
        assert row is not None, content_id
        row.published_at = to
        session.execute(update(Publication).where(Publication.content_id == content_id).values(published_at=to))


# -- front matter and sidecar -------------------------------------------------------------------------


def test_front_matter_has_the_static_site_keys_and_no_model_provider_or_pipeline_ids(env, draft_id, publish_root):
    folder = publish(env, draft_id, publish_root)
    article = review.load_article(env.store, draft_id)
    variant = article.variant("A")
    published_at = stored_published_at(env, draft_id)

    matter, raw = read_front_matter(folder)
    assert list(matter) == [
        "title",
        "meta_title",
        "description",
        "slug",
        "lang",
        "date",
        "lastmod",
        "tags",
        "categories",
        "images",
        "draft",
    ]
    assert (matter["title"], matter["description"]) == (variant.title, variant.meta_description)
    assert matter["slug"] == article.slug == folder.name
    assert datetime.fromisoformat(matter["date"]) == datetime.fromisoformat(matter["lastmod"]) == published_at
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", matter["date"])  # with its offset
    assert (matter["tags"], matter["categories"]) == (variant.tags, variant.categories)
    names = ["featured.png"] + [f"section-{n}.png" for n in range(1, len(current_a_images(env, draft_id)))]
    assert matter["images"] == [f"images/{name}" for name in names]
    assert all((folder / path).is_file() for path in matter["images"])  # relative to the page bundle
    assert matter["draft"] is False
    assert not INTERNAL_KEYS & set(matter)
    assert "offline" not in raw and variant.model not in raw


def test_sidecar_records_model_provider_ids_keywords_and_times(env, draft_id, publish_root):
    folder = publish(env, draft_id, publish_root)
    variant = review.load_article(env.store, draft_id).variant("A")
    matter, _ = read_front_matter(folder)

    record = read_sidecar(folder)
    assert record == {
        "content_id": draft_id,
        "site": "sample",
        "slug": folder.name,
        "version": 1,
        "variant": "A",
        "provider": "offline",
        "model": variant.model,
        "prompt_version": variant.prompt_version,
        "primary_keyword": variant.primary_keyword,
        "secondary_keywords": variant.secondary_keywords,
        "published_at": matter["date"],
        "exported_at": matter["lastmod"],
    }


def test_republishing_a_new_version_keeps_the_date_and_moves_lastmod(env, draft_id, publish_root):
    folder = publish(env, draft_id, publish_root)
    first = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
    move_first_publication(env, draft_id, first)
    version = regenerate(env, draft_id, in_article=1)

    republished = publish(env, draft_id, publish_root)

    assert republished == folder
    matter, _ = read_front_matter(folder)
    assert datetime.fromisoformat(matter["date"]) == first
    assert datetime.fromisoformat(matter["lastmod"]) == stored_published_at(env, draft_id) > first
    assert matter["images"] == ["images/featured.png", "images/section-1.png"]
    record = read_sidecar(folder)
    assert (record["version"], record["published_at"], record["exported_at"]) == (
        version,
        matter["date"],
        matter["lastmod"],
    )


# -- a Hugo build -------------------------------------------------------------------------------------

HUGO_CONFIG = """\
baseURL = {base_url}
title = "Export check"
disableKinds = ["RSS", "sitemap", "robotsTXT", "404"]
contentDir = {content}

[taxonomies]
tag = "tags"
category = "categories"
"""

LAYOUTS = {
    # The date as Hugo read it, each front-matter image as the page resource it resolves to, the content.
    "_default/single.html": (
        '<article><time datetime="{{ .Date.Format "2006-01-02T15:04:05Z07:00" }}"></time>'
        '<time class="lastmod" datetime="{{ .Lastmod.Format "2006-01-02T15:04:05Z07:00" }}"></time>\n'
        '{{ range .Params.images }}{{ with $.Resources.GetMatch . }}<img class="front-matter" '
        'src="{{ .RelPermalink }}">{{ end }}{{ end }}\n'
        "<h1>{{ .Title }}</h1>{{ .Content }}</article>\n"
    ),
    # Home, sections, the taxonomy's term list and each term's page.
    "_default/list.html": (
        '<h1>{{ .Title }}</h1>\n{{ range .Pages }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>\n{{ end }}'
    ),
}


class Links(HTMLParser):
    """The links of a built page as (text, href), and the attributes of its elements by tag."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.elements: dict[str, list[dict[str, str | None]]] = {}
        self._href: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.setdefault(tag, []).append(dict(attrs))
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((" ".join("".join(self._text).split()), self._href))
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)


def build_with_hugo(hugo: str, content: Path, site: Path, base_url: str = "https://example.org/") -> Path:
    """A minimal Hugo site whose content dir is `content` (the publish dir), built into `site/public`."""
    (site / "hugo.toml").parent.mkdir(parents=True, exist_ok=True)
    config = HUGO_CONFIG.format(content=json.dumps(str(content)), base_url=json.dumps(base_url))
    (site / "hugo.toml").write_text(config, encoding="utf-8")
    for name, template in LAYOUTS.items():
        (site / "layouts" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "layouts" / name).write_text(template, encoding="utf-8")
    built = subprocess.run(
        [hugo, "--source", str(site), "--minify=false", "-d", "public"],
        env={**os.environ, "HUGO_CACHEDIR": str(site / ".cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "ERROR" not in built.stderr, built.stderr
    return site / "public"


def page(public: Path, url: str) -> Links:
    """The built page at site-relative `url` (`/a/b/`)."""
    path = public / url.strip("/") / "index.html"
    assert path.is_file(), (
        f"{url} was not built; built: {sorted(str(p.relative_to(public)) for p in public.rglob('*'))}"
    )
    return Links(path.read_text(encoding="utf-8"))


def term_url(public: Path, taxonomy: str, term: str) -> str:
    """The URL of `term`'s page, as linked from the taxonomy's term list."""
    links = dict(page(public, f"/{taxonomy}/").links)
    assert term in links, (taxonomy, term, links)
    return links[term]


def test_hugo_builds_the_export_with_its_date_images_and_taxonomy_pages_and_no_sidecar(
    env, draft_id, publish_root, tmp_path, hugo
):
    folder = publish(env, draft_id, publish_root)
    matter, _ = read_front_matter(folder)
    variant = review.load_article(env.store, draft_id).variant("A")
    # What a publish interrupted mid-write leaves beside the article: a hidden staging copy.
    shutil.copytree(folder, folder.parent / f".{folder.name}.interrupted.tmp")

    public = build_with_hugo(hugo, publish_root, tmp_path / "hugo-site")

    url = f"/sample/{folder.name}/"  # the site folder is the Hugo section, the article folder a leaf bundle
    post = page(public, url)
    [date, lastmod] = [attrs["datetime"] for attrs in post.elements["time"]]
    published_at = stored_published_at(env, draft_id)
    assert date == lastmod == published_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not date.startswith("0001")
    resolved = [attrs["src"] for attrs in post.elements["img"] if attrs.get("class") == "front-matter"]
    assert resolved == [f"{url}{path}" for path in matter["images"]]  # every image is a resource of the bundle
    in_body = [attrs["src"] for attrs in post.elements["img"] if attrs.get("class") != "front-matter"]
    assert in_body == matter["images"]  # the Markdown links them relative to the page, next to it
    for path in matter["images"]:
        assert (public / url.strip("/") / path).read_bytes() == (folder / path).read_bytes()
    assert variant.title in (public / url.strip("/") / "index.html").read_text(encoding="utf-8")
    assert page(public, "/sample/").links == [(variant.title, url)]  # the staging copy is not a page

    for taxonomy, terms in (("tags", variant.tags), ("categories", variant.categories)):
        assert terms, taxonomy
        for term in terms:
            listed = page(public, term_url(public, taxonomy, term)).links
            assert (variant.title, url) in listed, (taxonomy, term, listed)

    built_files = [path for path in public.rglob("*") if path.is_file()]
    assert not [path for path in built_files if path.name == SIDECAR or "/." in f"/{path.relative_to(public)}"]
    for path in built_files:
        if path.suffix != ".png":  # the images are the exported bytes, compared above
            text = path.read_text(encoding="utf-8")
            assert "offline" not in text and "model" not in text, path
