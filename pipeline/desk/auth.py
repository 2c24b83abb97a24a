"""Signing in, and the guards every route stands behind.

Pages need a signed-in editor: the session cookie (signed by Starlette's `SessionMiddleware`, `HttpOnly`,
`SameSite=Lax`, `Secure` when configured) holds the user's name and a CSRF token. Every state change is a
POST that must carry that token (form field `csrf_token` or header `X-CSRF-Token`) and, when the browser
says where it comes from (`Origin`, else `Referer`), come from the desk's own origin. The JSON API needs
the bearer token instead; it has no cookies, so a cross-site page cannot borrow it.

A signed-out request gets no data: a page redirects to the sign-in form, anything else gets 401/403.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status

from pipeline.desk.config import DeskConfig

SESSION_USER = "user"
SESSION_CSRF = "csrf"


@dataclass(frozen=True)
class Editor:
    """Who is acting: the signed-in user (or the API token's name) and how the review history records it."""

    name: str
    actor: str


class SignInRequired(Exception):
    """A page was asked for without a session: the app answers with a redirect to the sign-in form."""

    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


def desk_config(request: Request) -> DeskConfig:
    """The app's settings (set on `app.state` when the app is built)."""
    config: DeskConfig = request.app.state.config
    return config


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (the sign-in form gets one before anyone signs in)."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


def sign_in(request: Request, name: str) -> None:
    """Start a fresh session for `name` (a new CSRF token too: nothing from before sign-in carries over)."""
    request.session.clear()
    request.session[SESSION_USER] = name
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    """End the session."""
    request.session.clear()


def current_editor(request: Request) -> Editor | None:
    """The signed-in editor, if the session names a user the settings still know."""
    name = request.session.get(SESSION_USER)
    if isinstance(name, str) and name in desk_config(request).users:
        return Editor(name=name, actor=f"desk:{name}")
    return None


def page_editor(request: Request) -> Editor:
    """Dependency of every page: the editor, or a redirect to sign in (then back here)."""
    editor = current_editor(request)
    if editor is None:
        if request.method == "GET":
            raise SignInRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        raise HTTPException(status.HTTP_403_FORBIDDEN, "sign in first")
    return editor


async def checked_form(request: Request) -> None:
    """Dependency of every state-changing form: same origin and the session's CSRF token, or 403."""
    require_same_origin(request)
    form = await request.form()  # Starlette caches it: `Form()` parameters read the same parsed body
    sent = form.get("csrf_token") or request.headers.get("x-csrf-token")
    expected = request.session.get(SESSION_CSRF)
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form has expired or did not come from the desk; reload it")


def require_same_origin(request: Request) -> None:
    """Refuse a request whose `Origin` (or `Referer`) names another site than the desk itself."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return  # old clients send neither; the CSRF token still has to match
    parts = urlsplit(claimed)
    own = urlsplit(str(request.base_url))
    if (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")


def api_editor(request: Request) -> Editor:
    """Dependency of every API route: `Authorization: Bearer <PIPELINE_DESK_API_TOKEN>`, or 401."""
    config = desk_config(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token or not config.check_api_token(token.strip()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return Editor(name=config.api_actor, actor=config.api_actor)


PageEditor = Annotated[Editor, Depends(page_editor)]
ApiEditor = Annotated[Editor, Depends(api_editor)]
