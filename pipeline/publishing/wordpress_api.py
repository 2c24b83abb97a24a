"""A small client for the WordPress REST API (`wp/v2`): posts, media and terms, signed in with an
application password.

Sites answer either under `/wp-json/` (pretty permalinks) or, on any install, under `?rest_route=`; the
client takes the site URL or either REST root and finds which one the site answers. The password is held
only by the HTTP session's auth: it is never part of a URL, and every error message this module raises
is passed through `redact` so that no text the server or the HTTP library echoes can carry it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from pipeline.review import PublishError

DEFAULT_TIMEOUT_S = 30.0
_BODY_EXCERPT = 300


class WordPressError(PublishError):
    """A WordPress request that failed; the message names the request and what WordPress said."""


class WordPressUnavailable(WordPressError):
    """WordPress could not be reached or answered with a server error: retry on the next run."""


class WordPressAuthError(WordPressError):
    """WordPress refused the user name or application password."""


class WordPressNotFound(WordPressError):
    """The post, media or route does not exist (deleted in WordPress)."""


class WordPressAPI:
    """`wp/v2` requests against one site as one user; `root` is found on the first request."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self._secret = password
        self.timeout = timeout
        self._session = session or requests.Session()
        self._session.auth = (username, password)
        self._session.headers["User-Agent"] = "content-pipeline (WordPress REST client)"
        self._style: str | None = None  # "pretty": <root>/wp-json/<route>; "query": <root>/?rest_route=<route>
        self._root = self.url

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    # -- addressing -----------------------------------------------------------------------------------

    def endpoint(self, route: str, params: Mapping[str, Any] | None = None) -> str:
        """The URL of a REST `route` (`/wp/v2/posts`) with query `params`, in the style the site answers."""
        self._discover()
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        if self._style == "pretty":
            base = f"{self._root}/wp-json{route}"
            return base + ("?" + urlencode(query) if query else "")
        return f"{self._root}/?" + urlencode({"rest_route": route, **query})

    def _discover(self) -> None:
        if self._style is not None:
            return
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        if "rest_route" in query:  # given as https://site/?rest_route=/ (or index.php?rest_route=)
            path = parts.path.removesuffix("index.php").rstrip("/")
            self._root, self._style = urlunsplit((parts.scheme, parts.netloc, path, "", "")), "query"
            return
        path = parts.path.rstrip("/")
        if path.endswith("/wp-json") or path == "/wp-json":
            self._root, self._style = (
                urlunsplit((parts.scheme, parts.netloc, path.removesuffix("/wp-json"), "", "")),
                ("pretty"),
            )
            return
        self._root = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        # Pretty URLs when the site serves them (a JSON index under /wp-json/), else the query form every
        # install answers.
        try:
            answer = self._session.get(f"{self._root}/wp-json/", timeout=self.timeout, allow_redirects=False)
            pretty = answer.status_code == 200 and isinstance(_json(answer), dict) and "namespaces" in _json(answer)
        except requests.RequestException:
            pretty = False
        self._style = "pretty" if pretty else "query"

    # -- requests -------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        route: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One REST call; its decoded JSON answer, or a `WordPressError` subclass saying what went wrong."""
        what = f"{method} {route}"
        try:
            url = self.endpoint(route, params)
            answer = self._session.request(
                method, url, json=json_body, data=data, headers=dict(headers or {}), timeout=self.timeout
            )
        except requests.RequestException as error:
            raise WordPressUnavailable(
                self.redact(f"WordPress at {self.url} did not answer {what}: {type(error).__name__}: {error}")
            ) from None
        if answer.status_code in (401, 403):
            detail = _wp_message(answer)
            raise WordPressAuthError(
                self.redact(
                    f"WordPress at {self.url} refused {what} for user '{self.username}' (HTTP {answer.status_code}"
                    f"{': ' + detail if detail else ''}); check the user name and the application password"
                )
            )
        if answer.status_code == 404 or (answer.status_code == 410):
            raise WordPressNotFound(self.redact(f"WordPress at {self.url}: {what} not found ({_wp_message(answer)})"))
        if answer.status_code >= 500 or answer.status_code == 429:
            raise WordPressUnavailable(
                self.redact(f"WordPress at {self.url} failed {what}: HTTP {answer.status_code} {_wp_message(answer)}")
            )
        if answer.status_code >= 400:
            raise WordPressError(
                self.redact(f"WordPress at {self.url} rejected {what}: HTTP {answer.status_code} {_wp_message(answer)}")
            )
        decoded = _json(answer)
        if decoded is None:
            raise WordPressUnavailable(
                self.redact(
                    f"WordPress at {self.url} answered {what} with something that is not JSON "
                    f"(HTTP {answer.status_code}, {answer.headers.get('Content-Type', 'no content type')}): "
                    f"{answer.text[:_BODY_EXCERPT]!r}"
                )
            )
        return decoded

    def redact(self, text: str) -> str:
        """`text` with the password (and its space-free form) replaced, wherever a server echoed it."""
        for secret in {self._secret, self._secret.replace(" ", "")}:
            if len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        return text

    # -- resources ------------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """The signed-in user (proves the credentials)."""
        return dict(self.request("GET", "/wp/v2/users/me", params={"context": "edit"}))

    def post(self, post_id: str) -> dict[str, Any] | None:
        """A post in any status (`context=edit`), or None if WordPress no longer has it."""
        try:
            return dict(self.request("GET", f"/wp/v2/posts/{post_id}", params={"context": "edit"}))
        except WordPressNotFound:
            return None

    def posts_with_slug(self, slug: str) -> list[dict[str, Any]]:
        """Posts of any status but trash whose slug is `slug`."""
        found = self.request(
            "GET",
            "/wp/v2/posts",
            params={"slug": slug, "status": "publish,future,draft,pending,private", "context": "edit"},
        )
        return [dict(post) for post in found] if isinstance(found, list) else []

    def create_post(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A new post with `fields`."""
        return dict(self.request("POST", "/wp/v2/posts", json_body=fields))

    def update_post(self, post_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Update a post in place; `WordPressNotFound` if it was deleted."""
        return dict(self.request("POST", f"/wp/v2/posts/{post_id}", json_body=fields))

    def media(self, media_id: str) -> dict[str, Any] | None:
        """A media item, or None if WordPress no longer has it."""
        try:
            return dict(self.request("GET", f"/wp/v2/media/{media_id}", params={"context": "edit"}))
        except WordPressNotFound:
            return None

    def upload_media(self, data: bytes, file_name: str, mime_type: str, *, alt_text: str, title: str) -> dict[str, Any]:
        """Upload a file, then set its alt text and title; the media item as WordPress describes it."""
        created = dict(
            self.request(
                "POST",
                "/wp/v2/media",
                data=data,
                headers={"Content-Type": mime_type, "Content-Disposition": f'attachment; filename="{file_name}"'},
            )
        )
        return dict(
            self.request("POST", f"/wp/v2/media/{created['id']}", json_body={"alt_text": alt_text, "title": title})
        )

    def terms(self, taxonomy: str, name: str) -> list[dict[str, Any]]:
        """Terms of `taxonomy` (`categories`, `tags`) matching `name` (WordPress searches names and slugs)."""
        found = self.request("GET", f"/wp/v2/{taxonomy}", params={"search": name, "per_page": 100})
        return [dict(term) for term in found] if isinstance(found, list) else []

    def create_term(self, taxonomy: str, name: str) -> dict[str, Any]:
        """A new term; when WordPress says it exists already, that term."""
        try:
            return dict(self.request("POST", f"/wp/v2/{taxonomy}", json_body={"name": name}))
        except WordPressError as error:
            if "term_exists" not in str(error):
                raise
            existing = [t for t in self.terms(taxonomy, name) if str(t.get("name", "")).casefold() == name.casefold()]
            if not existing:
                raise
            return existing[0]


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except (ValueError, json.JSONDecodeError):
        return None


def _wp_message(answer: requests.Response) -> str:
    """WordPress's own error code and message (`rest_post_invalid_id: Invalid post ID.`), else a body excerpt."""
    decoded = _json(answer)
    if isinstance(decoded, dict) and ("code" in decoded or "message" in decoded):
        return f"{decoded.get('code', '')}: {decoded.get('message', '')}".strip(": ")
    return repr(answer.text[:_BODY_EXCERPT]) if answer.text else ""
