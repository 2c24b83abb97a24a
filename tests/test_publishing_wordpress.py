"""Publishing to a real WordPress (Debian's package, `tests/wordpress_server.py`) through the `publications`
asset and `pipeline.publishing`: posts, media, terms and status read back through the REST API; re-runs,
WordPress going down halfway, posts deleted in WordPress, a new version, and the password kept secret.

Each test builds its own small site (a slice of the sample keywords, offline provider) in one shared store,
so the tests do not depend on each other's order; they share one WordPress per module.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx2
import pytest
from sqlalchemy import text

from pipeline import models, publishing, review
from pipeline.models import Content, Publication
from pipeline.publishing.wordpress_api import WordPressAPI
from tests.conftest import SAMPLE_KEYWORDS, Env
from tests.test_review import regenerate
from tests.wordpress_server import LocalWordPress

PASSWORD_ENV = "TEST_WP_APP_PASSWORD"
CATEGORIES = ["Espresso", "Brewing"]
_sites = itertools.count(1)


@pytest.fixture(scope="module")
def wp_env(tmp_path_factory: pytest.TempPathFactory, wordpress: LocalWordPress) -> Iterator[Env]:
    """One store and Dagster instance for the module, with the WordPress password in the environment."""
    root = tmp_path_factory.mktemp("wp_env")
    env = Env(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PASSWORD_ENV, wordpress.password)
        patch.setenv("PIPELINE_PUBLISH_DIR", str(root / "publish"))
        yield env
    env.close()


def wordpress_settings(wordpress: LocalWordPress, **overrides: Any) -> dict[str, Any]:
    return {"url": wordpress.url, "username": wordpress.username, "password_env": PASSWORD_ENV} | overrides


def new_site(env: Env, wordpress: LocalWordPress, *, keywords: int = 24, **settings: Any) -> tuple[str, list[int]]:
    """A fresh site of `keywords` sample keywords through the six chain assets, every article approved
    (in one command, as a team would); returns its slug and article ids."""
    number = next(_sites)
    slug = f"wp-{number}"
    # Each site its own slice of the sample keywords, so article slugs differ between the sites in WordPress.
    header, *rows = SAMPLE_KEYWORDS.read_text(encoding="utf-8").splitlines()
    start = (number - 1) * 30 % max(len(rows) - keywords, 1)
    path = env.root / f"{slug}.csv"
    path.write_text("\n".join([header, *rows[start : start + keywords]]) + "\n", encoding="utf-8")
    site = env.add_site(slug, path, name=f"Site {slug}")
    values = {
        "ideas_per_cluster": 1,
        "in_article_images": 1,
        "target_cluster_size": 4,
        "taxonomy": {"categories": CATEGORIES, "tags": []},
        "publishing": {"wordpress": wordpress_settings(wordpress)},
    } | settings
    env.store.update_site_settings(site.id, values)
    assert env.materialize(slug).success
    results = review.approve_many(env.store, site=slug, all_drafts=True, actor="editor:test")
    ids = [result.content_id for result in results]
    assert ids and len(env.store.review_events(ids[0])) == 1
    return slug, ids


def publications(env: Env, slug: str) -> dg.ExecuteInProcessResult:
    return env.materialize(slug, selection=["publications"], raise_on_error=False)


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node("publications")
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def posts(wordpress: LocalWordPress, status: str = "publish,future,draft,pending,private") -> list[dict[str, Any]]:
    return list(wordpress.rest("GET", "/wp/v2/posts", params={"status": status, "context": "edit", "per_page": 100}))


def media(wordpress: LocalWordPress) -> list[dict[str, Any]]:
    return list(wordpress.rest("GET", "/wp/v2/media", params={"context": "edit", "per_page": 100}))


def site_posts(wordpress: LocalWordPress, env: Env, slug: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every WordPress post carrying the slug of one of the site's articles (WordPress appends `-2` to a
    slug it has already: those count too, so a post sent twice shows)."""
    slugs = {
        review.load_article(env.store, c.id).slug for c, _, _ in env.store.review_queue(site_id=site_id(env, slug))
    }
    return [
        post
        for post in posts(wordpress, **kwargs)
        if re.sub(r"-\d+$", "", post["slug"]) in slugs or post["slug"] in slugs
    ]


def site_id(env: Env, slug: str) -> int:
    return env.store.site(slug).id


def content(env: Env, content_id: int) -> Content:
    with env.store.transaction() as session:
        row = session.get(Content, content_id)
    assert row is not None
    return row


def wordpress_row(env: Env, content_id: int) -> Publication:
    row = env.store.publication(content_id, "wordpress")
    assert row is not None, content_id
    return row


def test_publications_puts_approved_articles_in_wordpress_with_images_terms_and_featured_image(wp_env, wordpress):
    slug, ids = new_site(wp_env, wordpress)

    result = publications(wp_env, slug)

    assert result.success
    shown = metadata(result)
    assert shown["articles_published"] == len(ids) and shown["articles_failed"] == 0
    assert str(wordpress.url) in shown["published"]  # the links table
    live = {post["id"]: post for post in site_posts(wordpress, wp_env, slug)}
    assert len(live) == len(ids)
    uploads = {item["id"]: item for item in media(wordpress)}
    for content_id in ids:
        row, article = wordpress_row(wp_env, content_id), review.load_article(wp_env.store, content_id)
        variant = article.variant("A")
        post = live[int(row.remote_id or 0)]
        assert content(wp_env, content_id).status == "published" and row.state == "done"
        assert (post["status"], post["slug"], post["title"]["raw"]) == ("publish", article.slug, variant.title)
        assert post["excerpt"]["raw"] == variant.meta_description
        assert row.url == post["link"]
        images = wp_env.store.variant_images(variant.id)
        featured = uploads[post["featured_media"]]
        [featured_prompt] = [prompt for prompt, _ in images if prompt.kind == "featured"]
        assert featured["alt_text"] == featured_prompt.alt_text
        assert Path(featured["source_url"]).name == f"{article.slug}.png"  # an SEO name, never featured.png
        for prompt, image in images:
            assert image is not None
            if prompt.kind == "featured":
                continue
            [upload] = [m for m in uploads.values() if m["alt_text"] == prompt.alt_text and m["id"] != featured["id"]]
            assert Path(upload["source_url"]).name.startswith(f"{article.slug}-")
            assert f'src="{upload["source_url"]}"' in post["content"]["raw"]
            assert httpx2.get(upload["source_url"]).content == Path(image.path).read_bytes()
        terms = {t["id"]: t["name"] for t in wordpress.rest("GET", "/wp/v2/categories", params={"per_page": 100})}
        listed = [name for name in variant.categories if name in CATEGORIES]
        assert sorted(terms[term] for term in post["categories"] if terms[term] != "Uncategorized") == sorted(listed)


def test_a_second_materialization_changes_nothing_in_wordpress_or_the_store(wp_env, wordpress):
    slug, ids = new_site(wp_env, wordpress, keywords=24)
    assert publications(wp_env, slug).success
    before_posts = {p["id"]: p["modified_gmt"] for p in site_posts(wordpress, wp_env, slug)}
    before_media = {m["id"] for m in media(wordpress)}
    before_rows = [(r.remote_id, r.updated_at) for r in wp_env.store.publication_rows(site_id=site_id(wp_env, slug))]

    again = publications(wp_env, slug)

    assert again.success
    shown = metadata(again)
    assert (shown["articles_published"], shown["articles_updated"], shown["articles_failed"]) == (0, 0, 0)
    assert {p["id"]: p["modified_gmt"] for p in site_posts(wordpress, wp_env, slug)} == before_posts
    assert {m["id"] for m in media(wordpress)} == before_media
    rows = [(r.remote_id, r.updated_at) for r in wp_env.store.publication_rows(site_id=site_id(wp_env, slug))]
    assert rows == before_rows and len(before_posts) == len(ids)


def go_down_after(
    monkeypatch: pytest.MonkeyPatch, wordpress: LocalWordPress, when: Callable[[str, str], bool], skip: int = 0
) -> list[str]:
    """WordPress stops (its server process ends) right after the `skip`+1-th request matching `when`."""
    seen: list[str] = []
    real = WordPressAPI.request

    def request(self: WordPressAPI, method: str, route: str, **kwargs: Any) -> Any:
        answer = real(self, method, route, **kwargs)
        if when(method, route):
            seen.append(f"{method} {route}")
            if len(seen) == skip + 1:
                wordpress.down()
        return answer

    monkeypatch.setattr(WordPressAPI, "request", request)
    return seen


def test_wordpress_stopping_between_creating_a_post_and_publishing_it_leaves_a_draft_the_next_run_finishes(
    wp_env, wordpress, monkeypatch
):
    slug, ids = new_site(wp_env, wordpress, keywords=24)
    creates = go_down_after(monkeypatch, wordpress, lambda m, r: (m, r) == ("POST", "/wp/v2/posts"), skip=1)
    try:
        first = publications(wp_env, slug)
    finally:
        monkeypatch.undo()
        wordpress.up()

    shown = metadata(first)
    assert len(creates) == 2 and shown["articles_published"] == 1 and shown["articles_failed"] == len(ids) - 1
    [check] = first.get_asset_check_evaluations()
    assert not check.passed
    statuses = {c: content(wp_env, c).status for c in ids}
    assert list(statuses.values()).count("published") == 1
    # The second article's post exists as an invisible draft, its id on record; nothing else is visible.
    visible = site_posts(wordpress, wp_env, slug, status="publish")
    assert len(visible) == 1 and all(p["featured_media"] for p in visible)
    [halfway] = [c for c in ids if statuses[c] == "approved" and wp_env.store.publication(c, "wordpress")]
    assert wordpress_row(wp_env, halfway).state == "failed" and wordpress_row(wp_env, halfway).remote_id
    drafts = site_posts(wordpress, wp_env, slug, status="draft")
    assert [p["id"] for p in drafts] == [int(wordpress_row(wp_env, halfway).remote_id or 0)]

    second = publications(wp_env, slug)

    assert second.success and metadata(second)["articles_failed"] == 0
    assert all(content(wp_env, c).status == "published" for c in ids)
    every = site_posts(wordpress, wp_env, slug)
    assert len(every) == len(ids) and {p["status"] for p in every} == {"publish"}  # nothing posted twice
    assert {wordpress_row(wp_env, c).remote_id for c in ids} == {str(p["id"]) for p in every}


def test_wordpress_down_at_the_start_fails_fast_keeps_articles_approved_and_their_slots(wp_env, wordpress):
    slug, ids = new_site(wp_env, wordpress, keywords=24)
    wordpress.down()
    try:
        first = publications(wp_env, slug)
    finally:
        wordpress.up()
    shown = metadata(first)
    assert shown["articles_failed"] == len(ids) and shown["articles_published"] == 0
    assert all(content(wp_env, c).status == "approved" and content(wp_env, c).publish_slot for c in ids)
    assert "not attempted" in shown["failures"]
    assert site_posts(wordpress, wp_env, slug) == []

    assert publications(wp_env, slug).success
    assert len(site_posts(wordpress, wp_env, slug, status="publish")) == len(ids)


def test_a_post_deleted_in_wordpress_is_recreated_on_republish_and_the_new_id_recorded(wp_env, wordpress):
    slug, ids = new_site(wp_env, wordpress, keywords=24)
    assert publications(wp_env, slug).success
    gone, trashed = ids[0], ids[1]
    gone_id, trashed_id = wordpress_row(wp_env, gone).remote_id, wordpress_row(wp_env, trashed).remote_id
    wordpress.rest("DELETE", f"/wp/v2/posts/{gone_id}", params={"force": "true"})
    wordpress.rest("DELETE", f"/wp/v2/posts/{trashed_id}")  # to the trash

    for content_id in (gone, trashed):
        done = publishing.publish(wp_env.store, content_id, wp_env.root / "publish", actor="editor:test")
        placed = done.on("wordpress")
        assert done.republished and placed is not None and placed.action == "recreated"

    for content_id, old in ((gone, gone_id), (trashed, trashed_id)):
        row = wordpress_row(wp_env, content_id)
        assert row.remote_id != old
        post = wordpress.rest("GET", f"/wp/v2/posts/{row.remote_id}", params={"context": "edit"})
        assert post["status"] == "publish" and post["slug"].startswith(
            review.load_article(wp_env.store, content_id).slug
        )
    assert content(wp_env, gone).status == "published"


def test_a_new_version_updates_the_same_post_in_place(wp_env, wordpress):
    slug, ids = new_site(wp_env, wordpress, keywords=24)
    assert publications(wp_env, slug).success
    content_id = ids[0]
    post_id = wordpress_row(wp_env, content_id).remote_id
    version = regenerate(wp_env, content_id, in_article=1)
    review.approve(wp_env.store, content_id, variant="B", actor="editor:test")

    result = publications(wp_env, slug)

    assert result.success and metadata(result)["articles_updated"] == 1
    row = wordpress_row(wp_env, content_id)
    post = wordpress.rest("GET", f"/wp/v2/posts/{post_id}", params={"context": "edit"})
    assert (row.remote_id, row.version, row.variant) == (post_id, version, "B")
    assert post["title"]["raw"].endswith(f"(v{version}B)")
    assert len(site_posts(wordpress, wp_env, slug)) == len(ids)


def test_a_calendar_with_future_status_sends_scheduled_posts_dated_at_their_slots(wp_env, wordpress):
    slug, ids = new_site(
        wp_env,
        wordpress,
        keywords=24,
        schedule={"per_day": 2, "times": ["09:00", "15:00"], "timezone": "Europe/Berlin"},
        publishing={"wordpress": wordpress_settings(wordpress, status="future")},
    )
    result = publications(wp_env, slug)

    assert result.success and metadata(result)["articles_published"] == len(ids)
    slots = sorted(slot for c in ids if (slot := content(wp_env, c).publish_slot) is not None)
    assert len(set(slots)) == len(ids)  # one article per slot
    scheduled = site_posts(wordpress, wp_env, slug)
    assert {p["status"] for p in scheduled} == {"future"}
    dates = sorted(p["date_gmt"] for p in scheduled)
    assert dates == [models.as_utc(s).replace(tzinfo=None).isoformat(timespec="seconds") for s in slots]


def test_the_application_password_appears_in_no_log_row_metadata_or_error(wp_env, wordpress, monkeypatch):
    slug, _ = new_site(wp_env, wordpress, keywords=16)
    good = publications(wp_env, slug)
    # A wrong password: WordPress refuses it, and the error says so without echoing the password.
    wrong = "abcd efgh ijkl mnop qrst uvwx"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    other, _ = new_site(wp_env, wordpress, keywords=16)
    refused = publications(wp_env, other)
    shown = metadata(refused)
    assert (
        shown["articles_failed"] > 0 and "refused" in shown["failures"] and "application password" in shown["failures"]
    )

    texts = [json.dumps(metadata(run), default=str) for run in (good, refused)]
    for run in (good, refused):
        texts += [
            str(record.dagster_event or "") + (record.user_message or "")
            for record in wp_env.instance.all_logs(run.run_id)
        ]
    with wp_env.store.transaction() as session:
        for table in models.Base.metadata.sorted_tables:
            texts += [str(tuple(row)) for row in session.execute(text(f"SELECT * FROM {table.name}"))]
    dump = "\n".join(texts)
    for secret in (wordpress.password, wordpress.password.replace(" ", ""), wrong, wrong.replace(" ", "")):
        assert secret not in dump


def test_a_site_answering_only_under_wp_json_is_published_there(wp_env, wordpress):
    # Last in the module: WordPress stays in pretty-permalink mode afterwards.
    wordpress.enable_pretty_permalinks(only=True)
    slug, ids = new_site(wp_env, wordpress, keywords=16)
    assert publications(wp_env, slug).success
    assert len(site_posts(wordpress, wp_env, slug, status="publish")) == len(ids)
    # The REST root given directly works as well.
    other, more = new_site(
        wp_env,
        wordpress,
        keywords=16,
        publishing={"wordpress": wordpress_settings(wordpress, url=f"{wordpress.url}/wp-json/")},
    )
    assert publications(wp_env, other).success
    assert len(site_posts(wordpress, wp_env, other, status="publish")) == len(more)


def test_an_unset_password_variable_fails_the_run_naming_it_and_publishes_nothing(wp_env, wordpress, monkeypatch):
    slug, ids = new_site(wp_env, wordpress, keywords=16)
    monkeypatch.delenv(PASSWORD_ENV)

    result = publications(wp_env, slug)

    assert not result.success
    [failure] = result.get_step_failure_events()
    message = (
        failure.step_failure_data.user_failure_data.description if failure.step_failure_data.user_failure_data else ""
    )
    assert f"environment variable {PASSWORD_ENV}" in (message or "") and "not set" in (message or "")
    assert all(content(wp_env, c).status == "approved" for c in ids)
    assert site_posts(wordpress, wp_env, slug) == []
