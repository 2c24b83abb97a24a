"""The SEO measurements of the sample site: links per article, content-check pass rates before and after
the optimisation pass, and what that pass costs per article, against the loopback OpenAI-compatible server
(the real `openai` SDK over HTTP; answers composed by the offline composers, priced by the catalog).

    .venv/bin/python benchmarks/optimize_pass.py [--keywords N]

Prints one table; the second optimisation run must make no call (each version is optimised once).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402

from assets import ALL_ASSETS  # noqa: E402
from pipeline.content_checks import run_checks  # noqa: E402
from pipeline.linking import linked_urls, site_link_plan  # noqa: E402
from pipeline.sites import SITES_PARTITION, site_settings  # noqa: E402
from pipeline.store import Store  # noqa: E402
from resources import LLMResource, MediaResource, StoreResource  # noqa: E402
from tests.openai_server import LoopbackOpenAI  # noqa: E402

SIX = ["keywords", "clusters", "ideas", "content", "image_prompts", "images"]
SETTINGS = {"base_url": "https://barista.example", "faq": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keywords", type=int, default=0, help="use only the first N sample keywords (0: all)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="optimize-bench-"))
    keywords = REPO / "data" / "sample" / "keywords.csv"
    if args.keywords:
        lines = keywords.read_text(encoding="utf-8").splitlines()
        keywords = root / "keywords.csv"
        keywords.write_text("\n".join(lines[: args.keywords + 1]) + "\n", encoding="utf-8")
    url = f"sqlite:///{root / 'pipeline.db'}"
    store = Store(url)
    site = store.upsert_site("sample", "Home Barista Guide", str(keywords))
    store.update_site_settings(site.id, SETTINGS)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SITES_PARTITION, ["sample"])
    with LoopbackOpenAI() as server:
        llm = LLMResource(provider="openai", api_key="bench-key", base_url=server.base_url, image_size="256x256")
        resources = {"store": StoreResource(database_url=url), "llm": llm, "media": MediaResource(root=str(root))}

        def materialize(selection: list[str], **config: object) -> None:
            run_config = {"ops": {"content": {"config": config}}} if config else None
            result = dg.materialize(
                ALL_ASSETS,
                selection=selection,
                partition_key="sample",
                resources=resources,
                instance=instance,
                run_config=run_config,
            )
            assert result.success

        materialize(SIX)
        settings = site_settings(store.site("sample").settings)
        before = {o.name: (o.pass_count, o.total) for o in run_checks(store, site.id, settings)}
        plan = site_link_plan(store, site.id, settings)
        variants = store.current_variants(site.id)
        idea_of = {c: i for i, c in store.content_ids_by_idea(site.id).items()}
        links = [len(linked_urls(v.body_html)) for v in variants]
        pillar_ok = sibling_ok = 0
        for variant in variants:
            targets = plan.links_of(idea_of[variant.content_id])
            present = {u.rstrip("/") for u in linked_urls(variant.body_html)}
            pillar = [t for t in targets if t.kind == "pillar"]
            siblings = [t for t in targets if t.kind != "pillar" and t.url.rstrip("/") in present]
            pillar_ok += (not pillar) or all(t.url.rstrip("/") in present for t in pillar)
            sibling_ok += len(siblings) >= 2
        article_cost = [c.cost_usd for c in store.model_calls(partition="sample") if c.prompt_name == "article"]
        materialize(["content", "image_prompts", "images"], optimize=True)
        ledger = [c for c in store.model_calls(partition="sample") if c.prompt_name == "article_optimize"]
        optimize_calls = sum(1 for r in server.log.records("chat") if r.schema == "OptimizedArticle")
        cost = sum(c.cost_usd for c in ledger)
        after = {o.name: (o.pass_count, o.total) for o in run_checks(store, site.id, settings)}
        calls_again = sum(1 for r in server.log.records("chat") if r.schema == "OptimizedArticle")
        materialize(["content"], optimize=True)
        rerun_calls = sum(1 for r in server.log.records("chat") if r.schema == "OptimizedArticle") - calls_again
    failing = sum(1 for name in before if before[name][0] < before[name][1])
    mean = sum(links) / len(links)
    print(f"articles: {len(variants)}; links per article: mean {mean:.2f}, min {min(links)}, max {max(links)}")
    print(f"linking to their pillar (or being one): {pillar_ok / len(variants):.0%}")
    print(f"linking to two or more siblings or related pillars: {sibling_ok / len(variants):.0%}")
    print(f"{'check':<20} {'before':>10} {'after':>10}")
    for name, (passed, total) in before.items():
        print(f"{name:<20} {passed:>4}/{total:<5} {after[name][0]:>4}/{after[name][1]:<5}")
    per_article = cost / max(len(ledger), 1)
    writing = sum(article_cost) / max(len(article_cost), 1)
    print(f"checks with failures before: {failing}; articles optimised: {len(ledger)} ({optimize_calls} requests)")
    print(f"optimisation cost ${cost:.4f}: ${per_article:.5f} per optimised article, {per_article / writing:.0%} of")
    print(f"writing one (${writing:.5f}); requests on a second optimisation run: {rerun_calls}")


if __name__ == "__main__":
    main()
