"""The review gate: status transitions, the review history, and publishing a variant to a folder.

Most tests share the sample site's chain (`sample_run`, run once per module); each takes an article no
other test touched, so they stay independent.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from pipeline import cli, publishing, review
from pipeline.article_html import read_sections
from pipeline.models import Content, ContentVariant, Image, ImagePrompt
from tests.conftest import REPO, Env

BIN = Path(sys.executable).parent
FRONT_MATTER_FIELDS = [
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
SIDECAR = ".publication.json"
_taken: set[int] = set()


@pytest.fixture
def env(sample_run):
    """The module's shared sample environment (shadows the empty `env` fixture on purpose)."""
    return sample_run[0]


@pytest.fixture
def draft_id(env) -> int:
    """A draft article that no other test of this module has used."""
    for item in review.review_list(env.store, status="draft"):
        if item.id not in _taken:
            _taken.add(item.id)
            return item.id
    raise AssertionError("the sample site ran out of untouched drafts")


@pytest.fixture
def publish_root(tmp_path: Path) -> Path:
    return tmp_path / "publish"


def content_row(env: Env, content_id: int) -> Content:
    with env.store.transaction() as session:
        row = session.get(Content, content_id)
    assert row is not None, content_id
    return row


def state(env: Env, content_id: int) -> dict[str, Any]:
    """Everything a review action may change, to prove a refused one changed nothing."""
    row = content_row(env, content_id)
    return {
        "status": row.status,
        "review_note": row.review_note,
        "published_at": row.published_at,
        "published_version": row.published_version,
        "published_variant": row.published_variant,
        "updated_at": row.updated_at,
        "events": len(env.store.review_events(content_id)),
    }


def events(env: Env, content_id: int) -> list[tuple[Any, ...]]:
    return [
        (e.from_status, e.to_status, e.version, e.variant, e.note, e.actor) for e in env.store.review_events(content_id)
    ]


def current_a_images(env: Env, content_id: int) -> list[tuple[ImagePrompt, Image | None]]:
    article = review.load_article(env.store, content_id)
    return env.store.variant_images(article.variant("A").id)


def published(env: Env, content_id: int, publish_root: Path) -> Path:
    review.approve(env.store, content_id, actor="tester")
    folder = publishing.publish(env.store, content_id, publish_root, actor="tester").folder
    assert folder is not None  # the folder target is on by default
    return folder


def regenerate(env: Env, content_id: int, *, in_article: int, images: bool = True) -> int:
    """Stand-in for a regeneration run: the next version as A and B (copies of the current A with new titles),
    their image prompts (featured and the first `in_article`, unless `images` is False) with images, then the
    article back to draft."""
    with env.store.transaction() as session:
        current = session.scalars(
            select(ContentVariant)
            .where(ContentVariant.content_id == content_id)
            .order_by(ContentVariant.version.desc(), ContentVariant.variant)
        ).first()
        assert current is not None, content_id
        pairs = session.execute(
            select(ImagePrompt, Image)
            .join(Image, Image.image_prompt_id == ImagePrompt.id)
            .where(ImagePrompt.variant_id == current.id)
        ).all()
        version = current.version + 1
        for letter in "AB":
            variant = ContentVariant(**copy(current), version=version, variant=letter)
            variant.title = f"{current.title} (v{version}{letter})"
            session.add(variant)
            session.flush()
            for prompt, image in pairs if images else []:
                if prompt.kind == "in_article" and prompt.position > in_article:
                    continue
                new_prompt = ImagePrompt(**copy(prompt), variant_id=variant.id)
                session.add(new_prompt)
                session.flush()
                session.add(Image(**copy(image), image_prompt_id=new_prompt.id))
    status = content_row(env, content_id).status
    assert env.store.transition_content(content_id, status, "draft", actor="regeneration:test", version=version)
    return version


def copy(row: Any) -> dict[str, Any]:
    skip = {"id", "version", "variant", "variant_id", "image_prompt_id"}
    return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in skip}


class Page(HTMLParser):
    """The parts of an exported page the tests look at, in document order."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tokens: list[tuple[str | None, ...]] = []
        self.title = ""
        self.description: str | None = None
        self._open: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("title", "h1", "h2"):
            self._open, self._text = tag, []
        elif tag == "meta" and values.get("name") == "description":
            self.description = values["content"]
        elif tag == "img":
            self.tokens.append(("img", values["src"], values["alt"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            text = " ".join("".join(self._text).split())
            if tag == "title":
                self.title = text
            else:
                self.tokens.append((tag, text))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text.append(data)


def front_matter(markdown: str) -> tuple[dict[str, Any], str]:
    empty, matter, body = markdown.split("---\n", 2)
    assert empty == ""
    return yaml.safe_load(matter), body


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def leftovers(site_folder: Path) -> list[str]:
    """Hidden staging/backup folders an export left behind (there must be none)."""
    return sorted(path.name for path in site_folder.glob(".*")) if site_folder.exists() else []


# -- transitions --------------------------------------------------------------------------------------


def test_draft_is_approved_then_published_and_each_step_is_recorded(env, draft_id, publish_root, monkeypatch):
    monkeypatch.setenv("USER", "ana")

    approved = review.approve(env.store, draft_id)
    assert (approved.from_status, approved.to_status, approved.version, approved.variant) == (
        "draft",
        "approved",
        1,
        "A",
    )
    assert content_row(env, draft_id).status == "approved"

    publication = publishing.publish(env.store, draft_id, publish_root, actor="editor:bo")

    row = content_row(env, draft_id)
    assert (row.status, row.published_version, row.published_variant) == ("published", 1, "A")
    assert row.published_at is not None
    assert row.published_at.replace(tzinfo=None) == publication.published_at.replace(tzinfo=None)
    assert events(env, draft_id) == [
        ("draft", "approved", 1, "A", None, "cli:ana"),
        ("approved", "published", 1, "A", None, "editor:bo"),
    ]
    assert draft_id in {item.id for item in review.review_list(env.store, site="sample", status="published")}


def test_publishing_a_draft_is_refused_and_changes_nothing(env, draft_id, publish_root):
    before = state(env, draft_id)
    with pytest.raises(review.InvalidTransition) as refused:
        publishing.publish(env.store, draft_id, publish_root)
    assert str(refused.value) == f"content {draft_id} is 'draft': cannot publish; allowed: approve, reject"
    assert state(env, draft_id) == before
    assert not publish_root.exists()


def test_approving_a_published_article_is_refused_and_changes_nothing(env, draft_id, publish_root):
    published(env, draft_id, publish_root)
    before = state(env, draft_id)
    with pytest.raises(review.InvalidTransition) as refused:
        review.approve(env.store, draft_id)
    message = str(refused.value)
    assert f"content {draft_id} is 'published': cannot approve" in message
    assert "returns to draft only when it is regenerated" in message
    with pytest.raises(review.InvalidTransition):
        review.reject(env.store, draft_id, note="too late")
    assert state(env, draft_id) == before


def test_rejecting_without_a_note_is_refused_and_changes_nothing(env, draft_id):
    review.approve(env.store, draft_id)
    before = state(env, draft_id)
    for note in ("", "   "):
        with pytest.raises(review.InvalidTransition, match=f"content {draft_id}: a rejection needs a note"):
            review.reject(env.store, draft_id, note=note)
    assert state(env, draft_id) == before
    assert before["status"] == "approved"


def test_an_unknown_content_id_is_refused_by_every_action(env, publish_root):
    missing = 10_000_000
    for action in (
        lambda: review.approve(env.store, missing),
        lambda: review.reject(env.store, missing, note="x"),
        lambda: publishing.publish(env.store, missing, publish_root),
        lambda: review.show(env.store, missing),
    ):
        with pytest.raises(review.UnknownContent, match=f"content {missing} does not exist"):
            action()
    assert not publish_root.exists()


def test_reject_returns_an_approved_article_to_draft_with_the_note_and_approval_clears_it(env, draft_id):
    review.approve(env.store, draft_id, actor="ana")
    review.reject(env.store, draft_id, note="  Intro repeats the keyword; tighten it.  ", actor="bo")

    row = content_row(env, draft_id)
    assert (row.status, row.review_note) == ("draft", "Intro repeats the keyword; tighten it.")
    assert events(env, draft_id)[-1] == ("approved", "draft", 1, None, "Intro repeats the keyword; tighten it.", "bo")
    assert [item.note for item in review.review_list(env.store) if item.id == draft_id] == [row.review_note]

    review.reject(env.store, draft_id, note="Still too long.", actor="bo")  # a draft can be sent back again
    assert content_row(env, draft_id).review_note == "Still too long."

    review.approve(env.store, draft_id, actor="ana")
    assert content_row(env, draft_id).review_note is None
    assert [e[:2] for e in events(env, draft_id)] == [
        ("draft", "approved"),
        ("approved", "draft"),
        ("draft", "draft"),
        ("draft", "approved"),
    ]


def test_variant_b_cannot_be_approved_or_published_when_only_a_exists(env, draft_id, publish_root):
    before = state(env, draft_id)
    with pytest.raises(review.PublishError, match=f"content {draft_id} version 1 has no variant B .variants: A."):
        review.approve(env.store, draft_id, variant="B")
    assert state(env, draft_id) == before

    review.approve(env.store, draft_id)
    before = state(env, draft_id)
    with pytest.raises(review.PublishError, match="approved as variant A, not B"):
        publishing.publish(env.store, draft_id, publish_root, variant="B")
    assert state(env, draft_id) == before
    assert not publish_root.exists()


# -- publishing ---------------------------------------------------------------------------------------


def test_publish_writes_a_complete_html_page_with_each_image_after_its_heading(env, draft_id, publish_root):
    folder = published(env, draft_id, publish_root)
    article = review.load_article(env.store, draft_id)
    variant = article.variant("A")
    images = current_a_images(env, draft_id)

    assert folder == publish_root / "sample" / article.slug
    html = (folder / "index.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    page = Page(html)
    assert page.title == variant.meta_title
    assert page.description == variant.meta_description
    assert page.tokens[0] == ("h1", variant.title)
    assert page.tokens[1] == ("img", "images/featured.png", images[0][0].alt_text)

    imgs = [token for token in page.tokens if token[0] == "img"]
    assert len(imgs) == len(images) >= 2  # featured + the sample's in-article images
    headings = [token[1] for token in page.tokens if token[0] == "h2"]
    assert headings == [heading for heading, _ in read_sections(variant.body_html)]
    for number, (prompt, _) in enumerate(images[1:], start=1):
        at = page.tokens.index(("img", f"images/section-{number}.png", prompt.alt_text))
        assert page.tokens[at - 1] == ("h2", prompt.anchor_heading)


def test_publish_writes_markdown_with_front_matter_headings_and_image_links(env, draft_id, publish_root):
    folder = published(env, draft_id, publish_root)
    article = review.load_article(env.store, draft_id)
    variant = article.variant("A")
    row = content_row(env, draft_id)

    matter, body = front_matter((folder / "index.md").read_text(encoding="utf-8"))
    assert list(matter) == FRONT_MATTER_FIELDS
    assert matter["title"] == variant.title
    assert matter["meta_title"] == variant.meta_title
    assert matter["description"] == variant.meta_description
    assert matter["slug"] == article.slug
    assert (matter["tags"], matter["categories"]) == (variant.tags, variant.categories)
    assert row.published_at is not None
    assert matter["date"] == matter["lastmod"] == f"{row.published_at:%Y-%m-%dT%H:%M:%S}+00:00"
    images = current_a_images(env, draft_id)
    assert matter["images"] == ["images/featured.png"] + [f"images/section-{n}.png" for n in range(1, len(images))]
    assert matter["draft"] is False

    lines = body.splitlines()
    assert body.lstrip().startswith(f"![{images[0][0].alt_text}](images/featured.png)")
    for heading, _ in read_sections(variant.body_html):
        assert f"## {heading}" in lines
    for number, (prompt, _) in enumerate(images[1:], start=1):
        at = lines.index(f"## {prompt.anchor_heading}")
        assert lines[at + 2] == f"![{prompt.alt_text}](images/section-{number}.png)"
    assert "<p>" not in body and "<h2>" not in body


def test_publish_copies_the_variant_images_byte_for_byte_and_nothing_else(env, draft_id, publish_root):
    folder = published(env, draft_id, publish_root)
    images = current_a_images(env, draft_id)
    names = ["featured.png"] + [f"section-{n}.png" for n in range(1, len(images))]

    assert files_under(folder) == {"index.html", "index.md", SIDECAR, *(f"images/{name}" for name in names)}
    for name, (_, image) in zip(names, images, strict=True):
        data = (folder / "images" / name).read_bytes()
        assert image is not None, name
        assert hashlib.sha256(data).hexdigest() == image.checksum
        assert data == Path(image.path).read_bytes()
    assert oct((folder).stat().st_mode & 0o777) == oct(0o755)
    assert leftovers(folder.parent) == []


def test_publish_with_a_missing_image_file_fails_leaving_it_approved_and_no_folder(env, draft_id, publish_root):
    review.approve(env.store, draft_id)
    _, image = current_a_images(env, draft_id)[1]
    assert image is not None
    hidden = Path(image.path).with_suffix(".away")
    os.replace(image.path, hidden)
    try:
        before = state(env, draft_id)
        with pytest.raises(review.PublishError) as failed:
            publishing.publish(env.store, draft_id, publish_root)
    finally:
        os.replace(hidden, image.path)
    message = str(failed.value)
    assert f"content {draft_id} version 1 variant A: 1 of" in message and "images are missing" in message
    assert "materialize image_prompts and images for site 'sample' first" in message
    assert state(env, draft_id) == before and before["status"] == "approved"
    assert not (publish_root / "sample").exists()


def test_publish_before_image_prompts_exist_fails_and_says_to_materialize_them(env, draft_id, publish_root):
    version = regenerate(env, draft_id, in_article=0, images=False)
    review.approve(env.store, draft_id)
    before = state(env, draft_id)
    with pytest.raises(review.PublishError) as failed:
        publishing.publish(env.store, draft_id, publish_root)
    assert str(failed.value).startswith(f"content {draft_id} version {version} variant A has no image prompts yet; ")
    assert "--select image_prompts,images --partition sample" in str(failed.value)
    assert state(env, draft_id) == before
    assert not publish_root.exists()


def test_an_export_that_fails_midway_leaves_no_partial_folder_and_keeps_it_approved(env, draft_id, publish_root):
    review.approve(env.store, draft_id)
    _, image = current_a_images(env, draft_id)[-1]
    assert image is not None
    original = Path(image.path).read_bytes()
    Path(image.path).write_bytes(original + b"tampered")  # caught while copying, after the export has begun
    try:
        before = state(env, draft_id)
        with pytest.raises(review.PublishError, match="does not match its recorded checksum"):
            publishing.publish(env.store, draft_id, publish_root)
    finally:
        Path(image.path).write_bytes(original)
    assert state(env, draft_id) == before
    site_folder = publish_root / "sample"
    assert list(site_folder.iterdir()) == []  # no target, no staging folder


def test_republishing_after_regeneration_replaces_the_folder_without_stale_files(env, draft_id, publish_root):
    folder = published(env, draft_id, publish_root)
    assert "images/section-2.png" in files_under(folder)

    version = regenerate(env, draft_id, in_article=1)
    assert content_row(env, draft_id).status == "draft"
    review.approve(env.store, draft_id, variant="B", actor="ana")
    republished = publishing.publish(env.store, draft_id, publish_root, actor="ana")  # defaults to the approved B

    assert republished.folder == folder
    assert files_under(folder) == {"index.html", "index.md", SIDECAR, "images/featured.png", "images/section-1.png"}
    matter, _ = front_matter((folder / "index.md").read_text(encoding="utf-8"))
    record = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    assert (record["version"], record["variant"]) == (version, "B")
    assert matter["title"].endswith(f"(v{version}B)")
    assert Page((folder / "index.html").read_text(encoding="utf-8")).tokens[0] == ("h1", matter["title"])
    row = content_row(env, draft_id)
    assert (row.status, row.published_version, row.published_variant) == ("published", version, "B")
    assert events(env, draft_id)[-2:] == [
        ("draft", "approved", version, "B", None, "ana"),
        ("approved", "published", version, "B", None, "ana"),
    ]
    assert leftovers(folder.parent) == []


def test_a_failed_republish_keeps_the_previous_export_and_status(env, draft_id, publish_root):
    folder = published(env, draft_id, publish_root)
    before_files = {name: (folder / name).read_bytes() for name in files_under(folder)}
    regenerate(env, draft_id, in_article=2)
    review.approve(env.store, draft_id)
    _, image = current_a_images(env, draft_id)[0]
    assert image is not None
    original = Path(image.path).read_bytes()
    Path(image.path).write_bytes(b"not the recorded image")
    try:
        with pytest.raises(review.PublishError):
            publishing.publish(env.store, draft_id, publish_root)
    finally:
        Path(image.path).write_bytes(original)
    assert {name: (folder / name).read_bytes() for name in files_under(folder)} == before_files
    assert content_row(env, draft_id).status == "approved"
    assert leftovers(folder.parent) == []


def test_publishing_a_variant_other_than_the_approved_one_is_refused(env, draft_id, publish_root):
    regenerate(env, draft_id, in_article=1)
    review.approve(env.store, draft_id, variant="B")
    before = state(env, draft_id)
    with pytest.raises(review.PublishError, match="approved as variant B, not A; publish variant B"):
        publishing.publish(env.store, draft_id, publish_root, variant="A")
    assert state(env, draft_id) == before


# -- command line -------------------------------------------------------------------------------------


def test_cli_lists_as_json_and_publishes_to_the_publish_dir(env, draft_id, tmp_path):
    cli_env = {
        **os.environ,
        "DATABASE_URL": env.url,
        "PIPELINE_MEDIA_DIR": str(env.media),
        "PIPELINE_PUBLISH_DIR": str(tmp_path / "published"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "USER": "cli-tester",
    }

    def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "pipeline"), "review", *args], cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=120
        )

    listed = pipeline("list", "--site", "sample", "--status", "draft", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert {item["status"] for item in items} == {"draft"}
    ours = next(item for item in items if item["id"] == draft_id)
    assert list(ours) == [
        "id",
        "site",
        "title",
        "status",
        "version",
        "variants",
        "updated",
        "note",
        "approved_at",
        "slot",
    ]
    assert (ours["site"], ours["version"], ours["variants"]) == ("sample", 1, ["A"])

    assert pipeline("approve", str(draft_id)).returncode == 0
    done = pipeline("publish", str(draft_id))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "published" / "sample" / review.load_article(env.store, draft_id).slug
    assert f"folder: published {folder}" in done.stdout
    assert "index.html" in done.stdout and "images/featured.png" in done.stdout
    assert (folder / "index.html").is_file() and (folder / "index.md").is_file()
    assert events(env, draft_id)[-1][1:] == ("published", 1, "A", None, "cli:cli-tester")


def test_cli_errors_go_to_stderr_with_exit_code_2_and_show_prints_the_article(env, draft_id, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", env.url)
    monkeypatch.setenv("PIPELINE_PUBLISH_DIR", str(env.root / "cli-publish"))

    assert cli.main(["review", "publish", str(draft_id)]) == 2
    assert (
        capsys.readouterr().err == f"error: content {draft_id} is 'draft': cannot publish; allowed: approve, reject\n"
    )
    assert cli.main(["review", "approve", "999999"]) == 2
    assert "error: content 999999 does not exist" in capsys.readouterr().err
    assert cli.main(["review", "reject", str(draft_id), "--note", " "]) == 2
    assert "a rejection needs a note" in capsys.readouterr().err
    assert state(env, draft_id)["events"] == 0

    assert cli.main(["review", "reject", str(draft_id), "--note", "Needs a better intro.", "--actor", "ed"]) == 0
    capsys.readouterr()
    assert cli.main(["review", "show", str(draft_id)]) == 0
    shown = capsys.readouterr().out
    variant = review.load_article(env.store, draft_id).variant("A")
    assert f"Content {draft_id}  site sample  status draft" in shown
    assert "Review note: Needs a better intro." in shown
    assert "draft -> draft  v1  ed  Needs a better intro." in shown
    assert f"# {variant.title}" in shown
    for heading, _ in read_sections(variant.body_html):
        assert f"\n## {heading}\n" in shown
