"""The site link plan: which articles each article links to, with which anchor text and URL.

Each cluster has one pillar article (an idea of content type `pillar`, else the idea whose primary
keyword has the highest search volume) and its other articles. Before an article is written its idea
gets its link targets: its pillar, `min_siblings`..`max_siblings` siblings of the same cluster, and for a
pillar every article of its cluster (up to `MAX_PILLAR_LINKS`). A cluster too small to give
`min_siblings` siblings is topped up with the pillars of the clusters sharing most words with the idea
(kind `related`). The plan is computed from ideas and keywords only (slugs come from idea keys,
`pipeline.urls.article_slug`), so it exists before any article does, is the same for the same store,
and an article written later simply joins it.

After a model answer is parsed, every link whose href is not one of the idea's planned URLs is removed
(its text kept) and counted (`keep_planned_links`): the model cannot invent URLs.
"""

from __future__ import annotations

import bisect
import heapq
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape, unescape
from typing import TYPE_CHECKING, Any, Literal

from pipeline.keywords import normalize_keyword
from pipeline.models import Idea, IdeaStatus
from pipeline.sites import LinkSettings
from pipeline.urls import article_slug, site_link

if TYPE_CHECKING:
    from pipeline.sites import SiteSettings
    from pipeline.store import Store

# A pillar links to every article of its cluster, up to this many (a list of 200 links helps no reader);
# the siblings' ring (see `_sibling_ring`) keeps the rest reachable from it.
MAX_PILLAR_LINKS = 20
# The content type that makes an idea its cluster's pillar, whatever the volumes say.
PILLAR_TYPE = "pillar"

LinkKind = Literal["pillar", "sibling", "cluster", "related"]


@dataclass(frozen=True)
class LinkTarget:
    """One planned link of an article: the target idea, its URL, the anchor text and why it is linked."""

    idea_id: int
    url: str
    anchor: str
    title: str
    kind: LinkKind

    def as_data(self) -> dict[str, str]:
        """The link as the article prompts get it."""
        return {"url": self.url, "anchor": self.anchor, "title": self.title, "kind": self.kind}


@dataclass(frozen=True)
class LinkPlan:
    """A site's link plan: pillars per cluster, every idea's URL and its targets."""

    pillars: Mapping[int, int]  # cluster id -> pillar idea id
    urls: Mapping[int, str]  # idea id -> the href of its article
    targets: Mapping[int, tuple[LinkTarget, ...]] = field(default_factory=dict)  # idea id -> its links

    def links_of(self, idea_id: int) -> tuple[LinkTarget, ...]:
        """The planned links of an idea's article (none for an idea the plan does not know)."""
        return self.targets.get(idea_id, ())

    def allowed_urls(self, idea_id: int) -> frozenset[str]:
        """The hrefs an idea's article may contain."""
        return frozenset(target.url for target in self.links_of(idea_id))

    def is_pillar(self, idea: Idea) -> bool:
        """Whether the idea is its cluster's pillar."""
        return self.pillars.get(idea.cluster_id) == idea.id


def plan_links(
    ideas: Sequence[Idea],
    volumes: Mapping[str, int],
    settings: LinkSettings,
    base_url: str | None,
) -> LinkPlan:
    """The link plan of a site's ideas; `volumes` maps normalised keywords to search volume.

    Pure and deterministic: ideas are taken in id order and every choice breaks ties by id.
    """
    ordered = sorted(ideas, key=lambda idea: idea.id)
    by_cluster: dict[int, list[Idea]] = defaultdict(list)
    for idea in ordered:
        by_cluster[idea.cluster_id].append(idea)
    urls = _urls(ordered, base_url)
    pillars = {cluster_id: choose_pillar(members, volumes).id for cluster_id, members in by_cluster.items()}
    by_id = {idea.id: idea for idea in ordered}
    related = _RelatedPillars([by_id[pillar] for pillar in pillars.values()])

    def target(idea: Idea, kind: LinkKind) -> LinkTarget:
        return LinkTarget(idea.id, urls[idea.id], anchor_text(idea), idea.title, kind)

    targets: dict[int, tuple[LinkTarget, ...]] = {}
    for cluster_id, members in by_cluster.items():
        pillar = by_id[pillars[cluster_id]]
        others = [idea for idea in members if idea.id != pillar.id]
        ring = _sibling_ring(others, settings.max_siblings)
        for idea in others:
            links = [target(pillar, "pillar"), *(target(s, "sibling") for s in ring[idea.id])]
            shortfall = settings.min_siblings - len(ring[idea.id])
            links += [target(r, "related") for r in related.nearest(idea, shortfall)]
            targets[idea.id] = tuple(links)
        links = [target(idea, "cluster") for idea in others[:MAX_PILLAR_LINKS]]
        links += [target(r, "related") for r in related.nearest(pillar, settings.min_siblings - len(others))]
        targets[pillar.id] = tuple(links)
    return LinkPlan(pillars=pillars, urls=urls, targets=targets)


def site_link_plan(store: Store, site_id: int, settings: SiteSettings) -> LinkPlan:
    """The link plan of a site as its store holds it now (every approved idea, written or not: proposed and
    rejected ideas may never have an article to link to; once approved, `relinking` catches up)."""
    ideas = store.ideas(site_id, status=IdeaStatus.APPROVED.value)
    volumes = store.keyword_volumes(site_id, primary_keywords(ideas))
    return plan_links(ideas, volumes, settings.links, settings.base_url)


def anchor_text(idea: Idea) -> str:
    """The anchor of links to an idea's article: its primary keyword, else its title."""
    return idea.target_keywords[0] if idea.target_keywords else idea.title


def primary_keywords(ideas: Iterable[Idea]) -> set[str]:
    """The normalised primary keywords of ideas (what `plan_links` needs volumes of)."""
    return {normalize_keyword(idea.target_keywords[0]) for idea in ideas if idea.target_keywords}


def _urls(ideas: Sequence[Idea], base_url: str | None) -> dict[int, str]:
    """Each idea's article href, by the slug rule `pipeline.review.load_article` uses."""
    seen: set[str] = set()
    urls = {}
    for idea in ideas:  # id order: the first idea with a key owns the bare slug
        urls[idea.id] = site_link(base_url, article_slug(idea.key, idea.id, clashes=idea.key in seen))
        seen.add(idea.key)
    return urls


def choose_pillar(members: Sequence[Idea], volumes: Mapping[str, int]) -> Idea:
    """The cluster's pillar among `members`: an explicit `pillar` idea (the oldest), else the idea whose
    primary keyword has the highest search volume (`volumes`: normalised keyword -> volume), ties by id."""
    explicit = [idea for idea in members if idea.content_type == PILLAR_TYPE]
    if explicit:
        return min(explicit, key=lambda idea: idea.id)

    def volume(idea: Idea) -> int:
        return volumes.get(normalize_keyword(idea.target_keywords[0]), 0) if idea.target_keywords else 0

    return min(members, key=lambda idea: (-volume(idea), idea.id))


def _sibling_ring(others: Sequence[Idea], count: int) -> dict[int, list[Idea]]:
    """Each non-pillar article links to the next `count` articles around a ring of its cluster (id order).

    Every article then receives exactly as many sibling links as it gives (balanced), and following the
    ring from any article reaches all the others, so an article left out of a capped pillar's list is
    still reachable from the pillar.
    """
    size = len(others)
    step = min(count, size - 1) if size else 0
    return {idea.id: [others[(i + j) % size] for j in range(1, step + 1)] for i, idea in enumerate(others)}


_WORD = re.compile(r"\w+")


# Words shared by more pillars than this tell nothing about relatedness ("coffee" on a coffee site), and
# walking their long lists for every idea would make the plan quadratic on big sites.
MAX_WORD_PILLARS = 200


class _RelatedPillars:
    """Pillars of other clusters ranked by the words their keywords share with an idea's keywords."""

    def __init__(self, pillars: Sequence[Idea]):
        self.pillars = sorted(pillars, key=lambda idea: idea.id)
        # Plain lists: ORM attribute reads cost more than the ranking itself on big sites.
        self.ids = [pillar.id for pillar in self.pillars]
        self.clusters = [pillar.cluster_id for pillar in self.pillars]
        self.index: dict[str, list[int]] = defaultdict(list)
        for position, pillar in enumerate(self.pillars):
            for word in _words(pillar):
                self.index[word].append(position)

    def nearest(self, idea: Idea, count: int) -> list[Idea]:
        """Up to `count` pillars of other clusters: most shared words first, then the next clusters in id
        order (so even an idea sharing no word gets its links, the same ones on every run)."""
        size = len(self.pillars)
        if count <= 0 or not size:
            return []
        shared: dict[int, int] = defaultdict(int)
        for word in _words(idea):
            positions = self.index.get(word, ())
            if len(positions) <= MAX_WORD_PILLARS:
                for position in positions:
                    shared[position] += 1
        start = bisect.bisect_right(self.ids, idea.id) % size
        own = idea.cluster_id
        # One pillar per cluster, so at most one of the best `count + 1` is the idea's own.
        ranked = heapq.nsmallest(count + 1, shared, key=lambda position: (-shared[position], (position - start) % size))
        chosen = [p for p in ranked if self.clusters[p] != own][:count]
        for step in range(size):  # top up in id order after the idea
            if len(chosen) >= count:
                break
            position = (start + step) % size
            if position not in chosen and self.clusters[position] != own:
                chosen.append(position)
        return [self.pillars[p] for p in chosen]


def _words(idea: Idea) -> set[str]:
    return {word for keyword in idea.target_keywords for word in _WORD.findall(keyword.lower()) if len(word) > 2}


# -- links in model answers ---------------------------------------------------------------------------

_LINK = re.compile(r"<a\b([^>]*)>(.*?)</a>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)


@dataclass(frozen=True)
class LinkedBody:
    """An article body after `keep_planned_links`: the HTML and what happened to its links."""

    html: str
    kept: int
    removed: int


def keep_planned_links(html: str, allowed: Collection[str]) -> LinkedBody:
    """`html` with every `<a>` whose href is not in `allowed` replaced by its text, counting both kinds.

    Runs on sanitised HTML (`pipeline.article_html`), whose attributes are always quoted. An href differing
    from a planned URL only by its trailing slash is taken as that URL, written in its canonical form.
    """
    by_form = {url.rstrip("/"): url for url in allowed}
    kept = removed = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal kept, removed
        href = _href(match[1])
        planned = by_form.get(href.rstrip("/")) if href else None
        if planned is None:
            removed += 1
            return match[2]
        kept += 1
        return f'<a href="{escape(planned)}">{match[2]}</a>'

    return LinkedBody(_LINK.sub(replace, html), kept, removed)


def linked_urls(html: str) -> list[str]:
    """The hrefs of a body's links, in document order."""
    return [href for match in _LINK.finditer(html) if (href := _href(match[1]))]


def _href(attributes: str) -> str | None:
    found = _HREF.search(attributes)
    if not found:
        return None
    return unescape(next(group for group in found.groups() if group is not None)).strip()


def link_data(plan: LinkPlan, idea_id: int) -> list[dict[str, Any]]:
    """The `links` the article prompts get for an idea."""
    return [target.as_data() for target in plan.links_of(idea_id)]
