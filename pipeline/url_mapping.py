"""Which article a URL in an analytics export is: canonical and published URLs, compared as the tools write them.

Search Console reports full URLs, GA4 reports paths, and both write the same page in several ways. Two
addresses are the same page when they differ only by: the scheme (`http`/`https`) or its case, the
host's case, a leading `www.`, a default port, a trailing slash, a fragment, percent-encoding of
characters that need none, or tracking query parameters (`utm_*`, `gclid`, `fbclid`, ...). Other query
parameters are kept and compared in sorted order, so a WordPress `?p=123` link names that post only.

An article's addresses: its canonical URL (the site's `base_url` + slug + `/`, `pipeline.urls`) and every
http(s) URL its publishing targets reported (a WordPress permalink or `?p=` link). A path (GA4) is
matched against the paths (and kept query) of those same addresses, within the sites looked at.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pipeline.store.automation import ArticleAddress
from pipeline.urls import article_slug, article_url

# Added by campaigns, ads, newsletters and analytics tools; they never select another page.
TRACKING_PARAMETERS = frozenset(
    {
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "fbclid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "ref",
        "ref_src",
        "srsltid",
    }
)
TRACKING_PREFIXES = ("utm_",)
_DEFAULT_PORTS = {"80", "443"}
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class AmbiguousUrl(ValueError):
    """An address that names more than one article."""

    def __init__(self, address: str, content_ids: Iterable[int]):
        self.address, self.content_ids = address, sorted(content_ids)
        named = ", ".join(str(i) for i in self.content_ids)
        super().__init__(f"{address!r} is the address of more than one article ({named}); it cannot be attributed")


def url_key(url: str) -> str | None:
    """The comparable form of a full URL (`host/path?kept-query`), or None if `url` is not an http(s) URL."""
    text = url.strip()
    if text.startswith("//"):
        text = "https:" + text
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    host = host.removeprefix("www.")
    if port is not None and str(port) not in _DEFAULT_PORTS:
        host = f"{host}:{port}"
    return host + _path_and_query(parts.path, parts.query)


def path_key(path_or_url: str) -> str:
    """The comparable form of the path (and kept query) of a path such as GA4 reports, or of a full URL."""
    text = path_or_url.strip()
    if url_key(text) is not None:
        parts = urlsplit(text if not text.startswith("//") else "https:" + text)
        return _path_and_query(parts.path, parts.query)
    path, _, query = text.partition("#")[0].partition("?")
    return _path_and_query(path, query)


def _path_and_query(path: str, query: str) -> str:
    path = quote(unquote(path), safe=_PATH_SAFE).rstrip("/")
    if path and not path.startswith("/"):
        path = "/" + path
    kept = sorted(
        (name, value)
        for name, value in parse_qsl(query, keep_blank_values=True)
        if name.lower() not in TRACKING_PARAMETERS and not name.lower().startswith(TRACKING_PREFIXES)
    )
    return path + ("?" + urlencode(kept) if kept else "")


@dataclass
class UrlIndex:
    """The addresses of a set of articles: comparable URL -> articles, comparable path -> articles."""

    by_url: dict[str, set[int]] = field(default_factory=dict)
    by_path: dict[str, set[int]] = field(default_factory=dict)
    site_of: dict[int, int] = field(default_factory=dict)

    def add(self, content_id: int, site_id: int, url: str) -> None:
        """Record that `url` is an address of the article (ignored unless an http(s) URL)."""
        key = url_key(url)
        if key is None:
            return
        self.site_of[content_id] = site_id
        self.by_url.setdefault(key, set()).add(content_id)
        self.by_path.setdefault(path_key(url), set()).add(content_id)

    def article(self, address: str) -> int | None:
        """The article a full URL or a path names, None if none; `AmbiguousUrl` if several."""
        key = url_key(address)
        found = self.by_url.get(key, set()) if key is not None else self.by_path.get(path_key(address), set())
        if len(found) > 1:
            raise AmbiguousUrl(address, found)
        return next(iter(found), None)


def url_index(articles: Iterable[ArticleAddress], base_urls: Mapping[int, str | None]) -> UrlIndex:
    """The index of these articles' canonical URLs (`base_urls`: site id -> base URL) and published URLs."""
    index = UrlIndex()
    for article in articles:
        base = base_urls.get(article.site_id)
        if base:
            slug = article_slug(article.idea_key, article.idea_id, clashes=article.key_clashes)
            index.add(article.content_id, article.site_id, article_url(base, slug))
        for url in article.published_urls:
            index.add(article.content_id, article.site_id, url)
    return index
