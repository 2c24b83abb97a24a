"""Measure the content checks: pass rate per check on the sample site, and how near-duplicate search scales.

    .venv/bin/python benchmarks/content_checks.py [--sizes 500 1000 3000] [--words 1500]

The sample site's six-asset chain runs on the offline provider (a SQLite store and an ephemeral Dagster
instance in a temporary folder), then every check runs again over the finished site (images included),
and each check's pass count, total and notes are printed with the time `run_checks` took. The scaling part
times `near_duplicate_pairs` on `--sizes` synthetic articles of `--words` words each (one light copy
among them, which must be the only pair found).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets import CHAIN
from pipeline.content_checks import near_duplicate_pairs, run_checks
from pipeline.sites import site_settings
from pipeline.store import Store
from resources import LLMResource, MediaResource, StoreResource

SAMPLE_KEYWORDS = Path(__file__).resolve().parents[1] / "data" / "sample" / "keywords.csv"


def sample_site(root: Path) -> None:
    """The sample chain on the offline provider, then each check's pass rate over the finished site."""
    url = f"sqlite:///{root / 'pipeline.db'}"
    store = Store(url)
    site = store.upsert_site("sample", "Home Barista Guide", str(SAMPLE_KEYWORDS))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sites", ["sample"])
    resources = {
        "store": StoreResource(database_url=url),
        "llm": LLMResource(image_size="256x256"),
        "media": MediaResource(root=str(root / "media")),
    }
    started = time.perf_counter()
    result = dg.materialize(CHAIN, partition_key="sample", resources=resources, instance=instance)
    print(f"sample chain: success={result.success} in {time.perf_counter() - started:.1f}s")
    at_content = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey("content") and e.check_name != "items_ok"
    }
    print("evaluated with the content materialization (before images):", at_content)
    started = time.perf_counter()
    outcomes = run_checks(store, site.id, site_settings(store.site("sample").settings))
    print(f"run_checks over the finished site: {time.perf_counter() - started:.2f}s\n")
    print(f"{'check':18} {'passed':>8} {'rate':>6}  notes / first failure")
    for outcome in outcomes:
        first = outcome.failures[0].line() if outcome.failures else ""
        rate = outcome.pass_count / outcome.total if outcome.total else 1.0
        print(f"{outcome.name:18} {outcome.pass_count:>3}/{outcome.total:<4} {rate:>6.0%}  {outcome.notes} {first}")
    instance.dispose()
    store.engine.dispose()


def scaling(sizes: Sequence[int], words: int) -> None:
    """`near_duplicate_pairs` wall time on synthetic sites of `sizes` articles."""
    vocabulary = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in "nrst"]
    for size in sizes:
        rng = random.Random(size)
        texts = {i: " ".join(rng.choice(vocabulary) for _ in range(words)) for i in range(size)}
        texts[size] = texts[0].replace(vocabulary[0], vocabulary[1], 5)
        started = time.perf_counter()
        pairs = near_duplicate_pairs(texts, 0.8)
        elapsed = time.perf_counter() - started
        print(f"near_duplicate_pairs: {size + 1} articles x {words} words: {elapsed:.1f}s, pairs {pairs[:3]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[500, 1000, 3000])
    parser.add_argument("--words", type=int, default=1500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="content-checks-") as root:
        sample_site(Path(root))
    print()
    scaling(args.sizes, args.words)
    return 0


if __name__ == "__main__":
    sys.exit(main())
