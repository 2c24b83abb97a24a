"""The real-WordPress fixture (tests/wordpress_server.py) against Debian's WordPress: auth, posts, media, outages."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx2
import pytest
from PIL import Image

from tests.wordpress_server import LocalWordPress, WordPressError, running_wordpress, unavailable

pytestmark = pytest.mark.backend_independent


@pytest.fixture
def fresh_wordpress() -> Iterator[LocalWordPress]:
    """A WordPress of this test's own, for changes the module's shared one should not see."""
    yield from running_wordpress()


def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A small real PNG (WordPress checks that an upload is an image it can read)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_users_me_with_the_application_password(wordpress: LocalWordPress) -> None:
    me = wordpress.rest("GET", "/wp/v2/users/me", params={"context": "edit"})
    assert me["username"] == wordpress.username
    assert "administrator" in me["roles"]
    assert wordpress.url.startswith("http://127.0.0.1:")


def test_a_wrong_password_is_refused(wordpress: LocalWordPress) -> None:
    response = wordpress.request("GET", "/wp/v2/users/me", auth=(wordpress.username, "abcd efgh ijkl mnop qrst uvwx"))
    assert response.status_code == 401, response.text
    # WordPress 6.1 answers an unknown application password as not logged in (not `incorrect_password`).
    assert response.json()["code"] == "rest_not_logged_in"
    with pytest.raises(WordPressError) as refused:
        wordpress.rest("GET", "/wp/v2/users/me", auth=(wordpress.username, "wrong"))
    assert refused.value.status == 401


def test_a_post_is_created_and_read_back(wordpress: LocalWordPress) -> None:
    category = wordpress.rest("POST", "/wp/v2/categories", json={"name": "Espresso"})
    created = wordpress.rest(
        "POST",
        "/wp/v2/posts",
        json={
            "title": "Dialing in a grinder",
            "content": "<p>Start fine.</p>",
            "status": "draft",
            "slug": "dialing-in",
            "categories": [category["id"]],
        },
    )
    read = wordpress.rest("GET", f"/wp/v2/posts/{created['id']}", params={"context": "edit"})
    assert read["title"]["raw"] == "Dialing in a grinder"
    assert read["content"]["raw"] == "<p>Start fine.</p>"
    assert read["status"] == "draft" and read["slug"] == "dialing-in"
    assert read["categories"] == [category["id"]]
    drafts = wordpress.rest("GET", "/wp/v2/posts", params={"status": "any", "context": "edit", "search": "grinder"})
    assert [post["id"] for post in drafts] == [created["id"]]


def test_a_png_is_uploaded_with_alt_text_and_served(wordpress: LocalWordPress) -> None:
    png = png_bytes()
    media = wordpress.rest(
        "POST",
        "/wp/v2/media",
        content=png,
        headers={"Content-Type": "image/png", "Content-Disposition": 'attachment; filename="grinder.png"'},
    )
    wordpress.rest("POST", f"/wp/v2/media/{media['id']}", json={"alt_text": "A burr grinder"})
    read = wordpress.rest("GET", f"/wp/v2/media/{media['id']}", params={"context": "edit"})
    assert read["alt_text"] == "A burr grinder"
    assert read["mime_type"] == "image/png"
    assert read["source_url"].startswith(f"{wordpress.url}/wp-content/uploads/")
    # Stored in this instance's own content directory, and served from there by the PHP server.
    assert list(wordpress.content_dir.glob("uploads/*/*/grinder.png"))
    served = httpx2.get(read["source_url"], timeout=30)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.content == png


def test_down_refuses_connections_and_up_brings_the_same_posts_back(wordpress: LocalWordPress) -> None:
    post = wordpress.rest("POST", "/wp/v2/posts", json={"title": "Survives a restart", "status": "publish"})
    wordpress.down()
    try:
        with pytest.raises(httpx2.ConnectError):
            wordpress.request("GET", f"/wp/v2/posts/{post['id']}")
    finally:
        wordpress.up()
    read = wordpress.rest("GET", f"/wp/v2/posts/{post['id']}", params={"context": "edit"})
    assert read["title"]["raw"] == "Survives a restart"


def test_two_instances_have_their_own_databases(wordpress: LocalWordPress) -> None:
    wordpress.rest("POST", "/wp/v2/posts", json={"title": "Only on the first site", "status": "publish"})
    with LocalWordPress(title="Second") as other:
        assert other.port != wordpress.port
        assert other.rest("GET", "/")["name"] == "Second"
        assert other.rest("GET", "/wp/v2/posts", params={"search": "first site"}) == []
        root = other.root
        assert root is not None and root.exists()
    assert not root.exists()
    assert wordpress.rest("GET", "/")["name"] == "Pipeline Test Site"


def test_pretty_permalinks_serve_wp_json_only(fresh_wordpress: LocalWordPress) -> None:
    site = fresh_wordpress
    post = site.rest("POST", "/wp/v2/posts", json={"title": "Pretty", "status": "publish"})
    site.enable_pretty_permalinks()
    assert site.rest_url("/wp/v2/posts") == f"{site.url}/wp-json/wp/v2/posts"
    read = site.rest("GET", f"/wp/v2/posts/{post['id']}")
    assert read["link"] == f"{site.url}/pretty/"
    assert httpx2.get(f"{site.url}/?rest_route=/wp/v2/posts", timeout=30).status_code == 404
    discovery = httpx2.get(f"{site.url}/", timeout=30).headers["link"]
    assert f"<{site.url}/wp-json/>" in discovery


def test_a_missing_wordpress_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_REQUIRE_WORDPRESS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no php"):
        unavailable("no php")
    monkeypatch.setenv("PIPELINE_REQUIRE_WORDPRESS", "1")
    with pytest.raises(pytest.fail.Exception, match="fails instead of skipping"):
        unavailable("no php")
