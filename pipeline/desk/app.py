"""The desk as an ASGI app: routes, sessions, security headers, and the answers to a signed-out request."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.middleware.sessions import SessionMiddleware
from starlette.status import HTTP_303_SEE_OTHER
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import review
from pipeline.desk import api, ideas, pages
from pipeline.desk.auth import SignInRequired
from pipeline.desk.config import DeskConfig
from pipeline.experiments import decision_line
from pipeline.review import format_slot
from pipeline.store import IdeaReviewError, Store, UnknownSite

HERE = Path(__file__).parent
SESSION_COOKIE = "pipeline_desk"
# No script or style from anywhere but the desk itself, no inline script at all, no framing: even text that
# got past the sanitiser could not run in an editor's browser.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class Flashes:
    """What the last action did, kept in the app until the next page shows it (the cookie holds its key)."""

    def __init__(self, limit: int = 1000):
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._limit = limit
        self._lock = Lock()

    def put(self, value: Any) -> str:
        """Keep `value`; returns its key."""
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
        return key

    def take(self, key: object) -> Any:
        """The value kept under `key` (once), or None."""
        with self._lock:
            return self._items.pop(key, None) if isinstance(key, str) else None


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` to every response (files keep their own cache header)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(store: Store, config: DeskConfig | None = None) -> FastAPI:
    """The desk over `store`, with settings from the environment unless `config` is given."""
    config = config or DeskConfig.from_environment()
    app = FastAPI(
        title="Content pipeline review desk",
        summary=(
            "Approve ideas; read, compare, approve and publish articles; the same gates as `pipeline ideas` and "
            "`pipeline review`."
        ),
        version="1",
        docs_url=None,  # the schema is served behind the bearer token at /api/openapi.json
        redoc_url=None,
        openapi_url=None,
    )
    app.state.store = store
    app.state.config = config
    app.state.flashes = Flashes()
    app.state.templates = _templates()
    app.include_router(pages.public)
    app.include_router(pages.router)
    app.include_router(ideas.router)
    app.include_router(api.router)
    app.include_router(ideas.api)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(
        SessionMiddleware,
        secret_key=config.secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=config.session_max_age_s,
        same_site="lax",
        https_only=config.secure_cookies,
    )
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(SignInRequired)
    async def to_sign_in(request: Request, error: SignInRequired) -> Response:
        return RedirectResponse("/signin?" + urlencode({"next": error.next_path}), HTTP_303_SEE_OTHER)

    @app.exception_handler(review.ReviewError)
    @app.exception_handler(IdeaReviewError)
    @app.exception_handler(UnknownSite)
    async def review_error(request: Request, error: Exception) -> Response:
        code = 404 if isinstance(error, review.UnknownContent | UnknownSite) else 422
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(error)}, code)
        page: HTMLResponse = pages.render(request, "error.html", message=str(error))
        page.status_code = code
        return page

    return app


def _templates() -> Jinja2Templates:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
    )
    environment.filters["slot"] = lambda value, zone="UTC": format_slot(value, zone) if value else "-"
    environment.filters["when"] = lambda value: f"{value:%Y-%m-%d %H:%M}" if value else "-"
    environment.globals["decision_line"] = decision_line
    return Jinja2Templates(env=environment)
