"""The review desk in tests: an app over a test environment's store, editors who can sign in, a hostile B.

`desk_app` builds the app with named users (passwords known to the test, hashes in the config) and an API
token; `signed_in` signs a TestClient in through the real form; `add_hostile_variant_b` writes a second
variant whose text tries to run script, as a regeneration would store it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline import review
from pipeline.desk import create_app
from pipeline.desk.config import DeskConfig, hash_password
from tests.conftest import Env

PASSWORDS = {"ana": "ana-reads-everything", "ben": "ben-approves-fast"}
API_TOKEN = "test-token-0123456789abcdef"
HOSTILE_MARK = "window.__pwned"
HOSTILE_BODY = (
    "<h2>Brewing</h2><p>Better <script>window.__pwned = 1; alert('pwned')</script> coffee starts with "
    'fresh beans.</p><p><img src="x" onerror="window.__pwned = 2"> Grind just before brewing.</p>'
    '<p><a href="javascript:window.__pwned=3">click</a> and <a href="/espresso-basics/">espresso basics</a>.</p>'
)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def desk_config(**overrides: object) -> DeskConfig:
    """Settings with the test users and API token (hashes only, as production keeps them)."""
    values: dict[str, object] = {
        "users": {name: hash_password(password) for name, password in PASSWORDS.items()},
        "secret_key": "test-secret-key",
        "api_token_sha256": hashlib.sha256(API_TOKEN.encode()).hexdigest(),
        **overrides,
    }
    return DeskConfig(**values)  # type: ignore[arg-type]


def desk_app(env: Env, monkeypatch: pytest.MonkeyPatch, publish_dir: Path | None = None) -> FastAPI:
    """The desk over `env`'s store; media and publish folders of the test in the environment."""
    monkeypatch.setenv("PIPELINE_MEDIA_DIR", str(env.media))
    monkeypatch.setenv("PIPELINE_PUBLISH_DIR", str(publish_dir or env.root / "publish"))
    return create_app(env.store, desk_config())


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def signed_in(app: FastAPI, user: str = "ana") -> TestClient:
    """A client signed in through the sign-in form (its CSRF token first, then the password)."""
    client = TestClient(app, base_url="http://127.0.0.1:3001")
    form = client.get("/signin")
    response = client.post(
        "/signin",
        data={"csrf_token": csrf_of(form.text), "username": user, "password": PASSWORDS[user], "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


def add_hostile_variant_b(env: Env, content_id: int) -> None:
    """A regeneration's next version: A as it was, B with script in its body and title (stored unsanitised)."""
    article = review.load_article(env.store, content_id)
    current = article.variant("A")
    fields = {
        "title": current.title,
        "body_html": current.body_html,
        "meta_title": current.meta_title,
        "meta_description": current.meta_description,
        "primary_keyword": current.primary_keyword,
        "secondary_keywords": list(current.secondary_keywords),
        "tags": list(current.tags),
        "categories": list(current.categories),
        "word_count": current.word_count,
        "provider": "offline",
        "model": "offline-test",
        "prompt_version": "test",
    }
    hostile = {
        **fields,
        "variant": "B",
        "title": current.title + " <script>window.__pwned = 4</script>",
        "meta_title": "Fresher <b>coffee</b> tonight",
        "body_html": HOSTILE_BODY,
    }
    written = env.store.add_next_version(
        content_id, article.version, [{**fields, "variant": "A"}, hostile], actor="test:regeneration", note="A/B"
    )
    assert written is not None
