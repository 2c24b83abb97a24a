"""The browser test infrastructure itself (tests/browser.py): a real Chromium against an app served by uvicorn.

A tiny Starlette app sets a cookie and serves a page whose button changes a text by inline JavaScript and then
calls the app back; the test clicks it and checks what the page shows and what the server saw.
"""

from __future__ import annotations

import http.client
import threading
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from tests.browser import artifacts_dir, screenshot, serve_asgi

pytestmark = pytest.mark.backend_independent

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Infra</title></head>
<body>
  <p id="status">not clicked</p>
  <button id="go" type="button">Click me</button>
  <script>
    document.getElementById("go").addEventListener("click", async () => {
      document.getElementById("status").textContent = "clicked";
      const answer = await fetch("/ping", {method: "POST"});
      const body = await answer.json();
      document.getElementById("status").textContent = "clicked, server saw cookie " + body.cookie;
    });
  </script>
</body></html>
"""


class CountingApp:
    """The app and what it saw: requests per path, and the cookie each `/ping` carried."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.ping_cookies: list[str | None] = []
        self.app = Starlette(routes=[Route("/", self.home), Route("/ping", self.ping, methods=["POST"])])

    def count(self, request: Request) -> None:
        with self.lock:
            self.requests[request.url.path] = self.requests.get(request.url.path, 0) + 1

    async def home(self, request: Request) -> HTMLResponse:
        self.count(request)
        response = HTMLResponse(PAGE)
        response.set_cookie("visitor", "v-123", httponly=True, samesite="lax")
        return response

    async def ping(self, request: Request) -> JSONResponse:
        self.count(request)
        cookie = request.cookies.get("visitor")
        with self.lock:
            self.ping_cookies.append(cookie)
        return JSONResponse({"cookie": cookie})


def test_click_runs_inline_script_and_reaches_the_server(page: Page) -> None:
    counting = CountingApp()
    with serve_asgi(counting.app) as base_url:
        # serve_asgi waited for one answer (its readiness probe, a GET /) before yielding.
        assert counting.requests == {"/": 1}
        page.goto(f"{base_url}/")
        expect(page.locator("#status")).to_have_text("not clicked")
        cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
        assert cookies["visitor"]["value"] == "v-123" and cookies["visitor"]["httpOnly"]

        page.click("#go")
        expect(page.locator("#status")).to_have_text("clicked, server saw cookie v-123")
        path = screenshot(page, "browser-infra")
        assert path.parent == artifacts_dir() and path.stat().st_size > 0

        assert counting.requests == {"/": 2, "/ping": 1}
        assert counting.ping_cookies == ["v-123"]
        host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    # Shut down: nothing listens on the port any more.
    assert host == "127.0.0.1" and port
    connection = http.client.HTTPConnection(host, port, timeout=2)
    with pytest.raises(ConnectionRefusedError):
        connection.request("GET", "/")
    connection.close()


def test_serve_asgi_reports_an_app_that_cannot_start() -> None:
    async def broken_lifespan(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError, match="stopped before it answered"), serve_asgi(broken_lifespan):
        pass
