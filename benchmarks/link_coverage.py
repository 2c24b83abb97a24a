"""Internal-link coverage of a site's articles written offline with the link plan.

    .venv/bin/python benchmarks/link_coverage.py [--keywords data/sample/keywords.csv] [--ideas-per-cluster 3]

Runs keywords → clusters → ideas → content on the offline provider for a site with `base_url` set, then
reads the stored bodies back and reports, against the ideal (every planned link present, 100%):
- share of non-pillar articles linking to their pillar, and of all articles linking to at least two
  siblings (same-cluster articles; `related` pillars of other clusters counted separately);
- share linking to their pillar and to at least two siblings or related articles (goal >= 90%);
- links per article (mean, min, max), links outside the plan (must be 0), planned links present, and the
  share of articles reachable from their cluster's pillar by following stored links.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg

from assets import ALL_ASSETS
from pipeline.linking import linked_urls, site_link_plan
from pipeline.sites import SITES_PARTITION, site_settings
from pipeline.store import Store
from resources import LLMResource, MediaResource, StoreResource

BASE_URL = "https://barista.example"


def main() -> None:
    """Write the site offline and print its link coverage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keywords", type=Path, default=Path("data/sample/keywords.csv"))
    parser.add_argument("--ideas-per-cluster", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'links.db'}"
        store = Store(url)
        site = store.upsert_site("links", "Link Coverage", str(args.keywords))
        store.update_site_settings(site.id, {"base_url": BASE_URL, "ideas_per_cluster": args.ideas_per_cluster})
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(SITES_PARTITION, ["links"])
        resources = {"store": StoreResource(database_url=url), "llm": LLMResource(), "media": MediaResource()}
        result = dg.materialize(
            ALL_ASSETS,
            selection=["keywords", "clusters", "ideas", "content"],
            partition_key="links",
            instance=instance,
            resources=resources,
        )
        assert result.success
        report(store, "links")


def report(store: Store, slug: str) -> None:
    """Print the coverage of the stored articles against their link plan."""
    site = store.site(slug)
    site_id = site.id
    plan = site_link_plan(store, site_id, site_settings(site.settings))
    idea_of = {content_id: idea_id for idea_id, content_id in store.content_ids_by_idea(site_id).items()}
    ideas = {idea.id: idea for idea in store.ideas(site_id)}
    idea_by_url = {url: idea_id for idea_id, url in plan.urls.items()}
    links: dict[int, list[str]] = {}
    for variant in store.current_variants(site_id):
        if variant.variant == "A":
            links[idea_of[variant.content_id]] = linked_urls(variant.body_html)
    to_pillar = siblings = related = both = outside = planned_present = planned_total = 0
    non_pillars = 0
    for idea_id, urls in links.items():
        idea = ideas[idea_id]
        pillar = plan.pillars[idea.cluster_id]
        targets = [idea_by_url.get(url) for url in urls]
        outside += sum(1 for url in urls if url not in plan.allowed_urls(idea_id))
        planned = plan.allowed_urls(idea_id)
        planned_total += len(planned)
        planned_present += len(planned & set(urls))
        same_cluster = {t for t in targets if t is not None and t != pillar and ideas[t].cluster_id == idea.cluster_id}
        other = {t for t in targets if t is not None and ideas[t].cluster_id != idea.cluster_id}
        links_pillar = idea_id == pillar or pillar in targets
        if idea_id != pillar:
            non_pillars += 1
            to_pillar += pillar in targets
        siblings += len(same_cluster) >= 2
        related += len(same_cluster | other) >= 2
        both += links_pillar and len(same_cluster | other) >= 2
    reachable = _reachable(plan.pillars, links, idea_by_url, ideas)
    counts = [len(urls) for urls in links.values()]
    total = len(links)
    print(f"articles: {total} in {len(plan.pillars)} clusters (pillars {len(plan.pillars)})")
    share = to_pillar / max(non_pillars, 1)
    print(f"non-pillar articles linking to their pillar: {to_pillar}/{non_pillars} = {share:.1%}")
    print(f"articles linking to >= 2 same-cluster siblings: {siblings}/{total} = {siblings / total:.1%}")
    print(f"articles linking to >= 2 siblings or related pillars: {related}/{total} = {related / total:.1%}")
    print(f"articles linking to their pillar and >= 2 siblings/related: {both}/{total} = {both / total:.1%}")
    print(f"links per article: mean {statistics.mean(counts):.2f}, min {min(counts)}, max {max(counts)}")
    print(f"planned links present: {planned_present}/{planned_total} = {planned_present / max(planned_total, 1):.1%}")
    print(f"links outside the plan in stored bodies: {outside}")
    print(f"articles reachable from their pillar: {reachable}/{total} = {reachable / total:.1%}")


def _reachable(pillars, links, idea_by_url, ideas) -> int:  # type: ignore[no-untyped-def]
    found = 0
    for cluster_id, pillar in pillars.items():
        seen, queue = {pillar}, deque([pillar])
        while queue:
            for url in links.get(queue.popleft(), []):
                target = idea_by_url.get(url)
                if target is not None and target not in seen and ideas[target].cluster_id == cluster_id:
                    seen.add(target)
                    queue.append(target)
        found += sum(1 for idea in ideas.values() if idea.cluster_id == cluster_id and idea.id in seen)
    return found


if __name__ == "__main__":
    main()
