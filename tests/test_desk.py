"""The review desk over HTTP (FastAPI's TestClient): access, CSRF, actions with their actor, the API, safety.

The browser tests (`test_desk_browser.py`) drive the same pages in Chromium; these prove the rules on
every route and on the stored data, quickly, on both backends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from pipeline import review
from pipeline.cli import main as pipeline_main
from pipeline.desk.config import DeskConfig, DeskConfigError, hash_password, parse_users
from pipeline.desk.diff import text_words, word_diff
from pipeline.models import ContentStatus
from tests.desk_data import (
    API_TOKEN,
    HOSTILE_MARK,
    PASSWORDS,
    add_hostile_variant_b,
    csrf_of,
    desk_app,
    desk_config,
    signed_in,
)
from tests.review_data import add_articles, content_row

CAFE = {"espresso": 3, "grinders": 2}
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every route of the app, looking inside included routers (FastAPI keeps them nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from api_routes(included.routes)


def events(env, content_id: int) -> list[tuple[str, str, str | None, str]]:
    return [(e.from_status, e.to_status, e.variant, e.actor) for e in env.store.review_events(content_id)]


def test_a_signed_out_request_to_any_page_or_api_route_gets_no_data(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    app = desk_app(env, monkeypatch)
    client = TestClient(app)
    content_id = ids["espresso"][0]
    public = {"/signin"}
    checked = 0
    for route in api_routes(app.routes):
        if route.path in public:
            continue
        path = route.path.format(content_id=content_id, action="approve", variant_id=1, prompt_id=1)
        for method in route.methods or ():
            response = client.request(method, path, follow_redirects=False)
            checked += 1
            assert response.status_code in (303, 401, 403), (method, path, response.status_code)
            if response.status_code == 303:
                assert response.headers["location"].startswith("/signin?next=")
            assert "Espresso article" not in response.text, (method, path)
    assert checked >= 12
    # Nothing changed: every article is still a draft with no review event.
    assert all(
        content_row(env, i).status == ContentStatus.DRAFT and not events(env, i) for v in ids.values() for i in v
    )


def test_sign_in_checks_the_hash_and_answers_the_same_for_unknown_users_and_wrong_passwords(env, monkeypatch):
    app = desk_app(env, monkeypatch)
    client = TestClient(app)
    token = csrf_of(client.get("/signin").text)
    wrong = client.post("/signin", data={"csrf_token": token, "username": "ana", "password": "nope-nope"})
    unknown = client.post("/signin", data={"csrf_token": token, "username": "eve", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert "Unknown user or wrong password." in wrong.text and "Unknown user or wrong password." in unknown.text
    assert client.get("/articles", follow_redirects=False).status_code == 303
    ok = client.post(
        "/signin", data={"csrf_token": token, "username": "ana", "password": PASSWORDS["ana"]}, follow_redirects=False
    )
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert PASSWORDS["ana"] not in ok.headers["set-cookie"]
    assert client.get("/articles").status_code == 200


def test_session_cookies_are_secure_when_configured(env, monkeypatch):
    from pipeline.desk import create_app

    monkeypatch.setenv("PIPELINE_MEDIA_DIR", str(env.media))
    client = TestClient(create_app(env.store, desk_config(secure_cookies=True)), base_url="https://desk.example")
    assert "secure" in client.get("/signin").headers["set-cookie"].lower()


def test_a_post_without_the_csrf_token_or_from_another_site_changes_nothing(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    client = signed_in(desk_app(env, monkeypatch))
    content_id = ids["espresso"][0]
    token = csrf_of(client.get(f"/articles/{content_id}").text)
    assert client.post(f"/articles/{content_id}/approve", data={}).status_code == 403
    assert client.post(f"/articles/{content_id}/approve", data={"csrf_token": "forged"}).status_code == 403
    cross = client.post(
        f"/articles/{content_id}/approve", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    referred = client.post(
        "/articles/bulk",
        data={"csrf_token": token, "action": "approve", "ids": [str(content_id)]},
        headers={"Referer": "http://evil.example/page"},
    )
    assert referred.status_code == 403
    assert content_row(env, content_id).status == ContentStatus.DRAFT
    assert events(env, content_id) == []


def test_approving_from_the_article_page_records_the_signed_in_editor_once(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    client = signed_in(desk_app(env, monkeypatch), "ben")
    content_id = ids["grinders"][1]
    token = csrf_of(client.get(f"/articles/{content_id}").text)
    first = client.post(f"/articles/{content_id}/approve", data={"csrf_token": token, "variant": "A"})
    assert first.status_code == 200 and "Approve: 1 of 1 done" in first.text
    again = client.post(f"/articles/{content_id}/approve", data={"csrf_token": token, "variant": "A"})
    assert "Approve: 0 of 1 done" in again.text and "cannot approve" in again.text
    assert content_row(env, content_id).status == ContentStatus.APPROVED
    assert events(env, content_id) == [("draft", "approved", "A", "desk:ben")]
    assert "desk:ben" in client.get(f"/articles/{content_id}").text


def test_bulk_approve_of_all_articles_matching_a_filter_acts_on_exactly_those(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    add_articles(env, "tea", {"green": 2})
    client = signed_in(desk_app(env, monkeypatch))
    cluster = next(c for c in env.store.clusters(env.store.site("cafe").id) if c.key == "espresso")
    listing = client.get(f"/articles?site=cafe&cluster={cluster.id}&status=draft")
    assert re.search(r"3 matching", listing.text)
    shown = set(map(int, re.findall(r'name="ids" value="(\d+)"', listing.text)))
    assert shown == set(ids["espresso"])
    response = client.post(
        "/articles/bulk",
        data={
            "csrf_token": csrf_of(listing.text),
            "action": "approve",
            "all_matching": "true",
            "filter_query": f"site=cafe&cluster={cluster.id}&status=draft",
        },
    )
    assert "Approve: 3 of 3 done" in response.text
    for content_id in ids["espresso"]:
        assert events(env, content_id) == [("draft", "approved", "A", "desk:ana")]
    untouched = ids["grinders"] + [i.id for i in review.review_list(env.store, site="tea")]
    assert all(content_row(env, i).status == ContentStatus.DRAFT for i in untouched)


def test_bulk_reject_needs_a_note_and_stores_it_on_each_article(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    client = signed_in(desk_app(env, monkeypatch))
    token = csrf_of(client.get("/articles").text)
    selected = [str(i) for i in ids["grinders"]]
    refused = client.post("/articles/bulk", data={"csrf_token": token, "action": "reject", "ids": selected})
    assert "a rejection needs a note" in refused.text
    assert all(not events(env, int(i)) for i in selected)
    done = client.post(
        "/articles/bulk", data={"csrf_token": token, "action": "reject", "ids": selected, "note": "Cite a source."}
    )
    assert "Reject: 2 of 2 done" in done.text
    for content_id in ids["grinders"]:
        assert content_row(env, content_id).review_note == "Cite a source."
        assert events(env, content_id) == [("draft", "draft", None, "desk:ana")]


def test_the_list_filters_and_pages_without_losing_or_repeating_articles(env, monkeypatch):
    ids = add_articles(env, "cafe", {"espresso": 60, "grinders": 5})
    client = signed_in(desk_app(env, monkeypatch))
    first = client.get("/articles?site=cafe")
    second = client.get("/articles?site=cafe&page=2")
    page_ids = [set(map(int, re.findall(r'name="ids" value="(\d+)"', r.text))) for r in (first, second)]
    assert len(page_ids[0]) == 50 and len(page_ids[1]) == 15 and not page_ids[0] & page_ids[1]
    assert page_ids[0] | page_ids[1] == {i for v in ids.values() for i in v}
    assert "page 1 of 2" in first.text and 'id="page-next"' in first.text
    matched = client.get("/articles?site=cafe&q=grinders+article")
    assert set(map(int, re.findall(r'name="ids" value="(\d+)"', matched.text))) == set(ids["grinders"])
    assert client.get("/articles?status=nonsense").status_code == 422


def test_approve_and_publish_puts_the_article_in_the_folder_and_the_page_links_it(sample_run, monkeypatch, tmp_path):
    env = sample_run[0]
    publish_dir = tmp_path / "site-export"
    client = signed_in(desk_app(env, monkeypatch, publish_dir=publish_dir))
    content_id = review.review_list(env.store, site="sample", status="draft")[-1].id
    token = csrf_of(client.get(f"/articles/{content_id}").text)
    response = client.post(f"/articles/{content_id}/approve_publish", data={"csrf_token": token, "variant": "A"})
    assert "Approve and publish: 1 of 1 done" in response.text, response.text
    assert content_row(env, content_id).status == ContentStatus.PUBLISHED
    assert [e[1] for e in events(env, content_id)] == ["approved", "published"]
    assert {e[3] for e in events(env, content_id)} == {"desk:ana"}
    slug = review.load_article(env.store, content_id).slug
    assert (publish_dir / "sample" / slug / "index.html").is_file()
    page = client.get(f"/articles/{content_id}").text
    assert 'id="publications"' in page and "folder: done" in page
    # Publishing again from a stale form is refused: the article is not pushed twice.
    again = client.post(f"/articles/{content_id}/publish", data={"csrf_token": token})
    assert "already published" in again.text
    assert len(env.store.review_events(content_id)) == 2


def test_an_article_without_images_is_not_published_and_says_what_to_run(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    client = signed_in(desk_app(env, monkeypatch))
    content_id = ids["espresso"][2]
    token = csrf_of(client.get(f"/articles/{content_id}").text)
    response = client.post(f"/articles/{content_id}/approve_publish", data={"csrf_token": token, "variant": "A"})
    assert "Approve and publish: 0 of 1 done" in response.text
    assert "materialize image_prompts and images for site" in response.text
    assert content_row(env, content_id).status == ContentStatus.APPROVED, "the approval stands, publishing waits"


def test_the_api_needs_the_bearer_token_and_acts_as_its_named_actor(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    client = TestClient(desk_app(env, monkeypatch))
    content_id = ids["espresso"][1]
    assert client.get("/api/articles").status_code == 401
    assert client.get("/api/articles", headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 401
    assert client.post(f"/api/articles/{content_id}/approve").status_code == 401
    listing = client.get("/api/articles?site=cafe&status=draft", headers=BEARER).json()
    assert listing["total"] == 5 and {row["id"] for row in listing["items"]} == {i for v in ids.values() for i in v}
    done = client.post(f"/api/articles/{content_id}/approve", json={"variant": "A"}, headers=BEARER).json()
    assert done == [{"content_id": content_id, "done": True, "message": done[0]["message"], "url": None}]
    bulk = client.post("/api/review", json={"action": "reject", "ids": ids["grinders"]}, headers=BEARER)
    assert bulk.status_code == 422 and "note" in bulk.json()["detail"]
    assert events(env, content_id) == [("draft", "approved", "A", "api")]
    detail = client.get(f"/api/articles/{content_id}", headers=BEARER).json()
    assert detail["status"] == "approved" and detail["events"][0]["actor"] == "api"
    schema = client.get("/api/openapi.json", headers=BEARER).json()
    assert {"/api/articles", "/api/review", "/api/articles/{content_id}/{action}"} <= set(schema["paths"])
    assert client.get("/api/openapi.json").status_code == 401


def test_script_in_a_model_answer_never_reaches_the_page_as_markup(env, monkeypatch):
    ids = add_articles(env, "cafe", CAFE)
    content_id = ids["espresso"][0]
    add_hostile_variant_b(env, content_id)
    client = signed_in(desk_app(env, monkeypatch))
    response = client.get(f"/articles/{content_id}?variant=B")
    page = response.text
    assert response.status_code == 200
    assert "<script>" not in page.replace('<script src="/static/desk.js" defer></script>', "")
    assert "onerror" not in page and "javascript:" not in page
    assert "&lt;script&gt;window.__pwned = 4&lt;/script&gt;" in page, "the title is shown as text"
    assert "<b>coffee</b>" not in page and "&lt;b&gt;coffee&lt;/b&gt;" in page
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # The A/B comparison: both sides and a word diff naming what B changed.
    assert 'id="side-by-side"' in page and 'id="diff"' in page
    assert "<ins>" in page and "<del>" in page
    api = TestClient(desk_app(env, monkeypatch)).get(f"/api/articles/{content_id}", headers=BEARER).json()
    assert all(HOSTILE_MARK not in v["body_html"] for v in api["variants"])


def test_images_are_served_only_for_their_variant_and_only_from_the_media_folder(sample_run, monkeypatch):
    env = sample_run[0]
    client = signed_in(desk_app(env, monkeypatch))
    item = review.review_list(env.store, site="sample")[0]
    variant = review.load_article(env.store, item.id).variant("A")
    prompts = env.store.variant_images(variant.id)
    assert prompts, "the sample chain made images"
    prompt, image = prompts[0]
    assert image is not None
    served = client.get(f"/variants/{variant.id}/images/{prompt.id}")
    assert served.status_code == 200 and served.content == Path(image.path).read_bytes()
    assert client.get(f"/variants/{variant.id + 1}/images/{prompt.id}").status_code == 404
    page = client.get(f"/articles/{item.id}").text
    assert f"/variants/{variant.id}/images/{prompt.id}" in page
    # An image row pointing outside the media folder is never served.
    monkeypatch.setenv("PIPELINE_MEDIA_DIR", str(env.root / "elsewhere"))
    assert client.get(f"/variants/{variant.id}/images/{prompt.id}").status_code == 404


def test_the_sites_page_shows_each_stage_with_links_into_the_dagster_ui(sample_run, monkeypatch):
    env = sample_run[0]
    client = signed_in(desk_app(env, monkeypatch))
    page = client.get("/").text
    counts = env.store.counts(env.store.site("sample").id)
    assert f"<td>{counts.keywords}</td><td>{counts.clusters}</td><td>{counts.ideas}</td>" in page
    assert "http://127.0.0.1:3000/assets/content?view=partitions&amp;partition=sample" in page
    assert "drafts waiting" in page


def test_user_entries_are_hashes_and_a_bad_entry_is_named_without_echoing_it(tmp_path, monkeypatch, capsys):
    encoded = hash_password("long enough password")
    assert parse_users(f"ana:{encoded}\n# a comment\nben:{encoded}", source="users") == {"ana": encoded, "ben": encoded}
    with pytest.raises(DeskConfigError, match="users line 1") as error:
        parse_users("ana:hunter2-plain-password", source="users")
    assert "hunter2" not in str(error.value)
    users_file = tmp_path / "desk-users"
    monkeypatch.setenv("PIPELINE_DESK_USERS_FILE", str(users_file))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("a fine password\n"))
    assert pipeline_main(["desk", "add-user", "cleo", "--password-stdin"]) == 0
    assert "a fine password" not in users_file.read_text()
    config = DeskConfig.from_environment()
    assert config.check_password("cleo", "a fine password") and not config.check_password("cleo", "wrong")
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(DeskConfigError, match="at least 16"):
        DeskConfig.from_environment({"PIPELINE_DESK_API_TOKEN": "short"})


def test_the_word_diff_marks_changed_words_and_escapes_every_word():
    diff = word_diff(
        "<h2>Intro</h2><p>The quick fox &amp; co</p>", "<h2>Intro</h2><p>The slow <b>fox</b> &lt;i&gt;</p>"
    )
    assert (
        str(diff.html) == "Intro <br> The <del>quick</del> <ins>slow</ins> fox <del>&amp; co</del> <ins>&lt;i&gt;</ins>"
    )
    assert (diff.removed, diff.added) == (3, 2)
    assert text_words("<p>a</p><p>b</p>") == ["a", "\n", "b"]
