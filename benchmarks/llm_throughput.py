"""Throughput of a model-calling stage through the real engine and SDK, against the loopback server.

    .venv/bin/python benchmarks/llm_throughput.py [--latency-ms 100] [--concurrency 32] [--articles 2000]

What it measures, all in one run on this machine:
- stage: the real `content` stage (prompt rendering, strict-schema request, validation, sanitising, one
  transaction per hand-over, ledger and cache rows) with the OpenAI provider at `--concurrency`, against
  the loopback server (separate process) answering after `--latency-ms`, for `--articles` ideas of a site
  planned offline from `--keywords` (default: the 2,419-keyword labelled set, ~200 clusters);
- SDK ceiling: bare calls of the provider's own SDK client with the same request arguments, at high
  concurrency against the same server with no latency: the most this client can do on this machine;
- ideal: min(concurrency / latency, SDK ceiling);
- bare SDK at the same concurrency and latency: what the SDK alone achieves under the stage's conditions;
- sequential baseline: the same stage with concurrency 1.

It prints calls/s for each and the ratios stage/ideal (target >= 0.85) and stage/sequential (target >= 20).
The stage's time includes everything a run pays: preparing the tasks, the slow start (one call until the
first success), the last wave of calls and storing the last results.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
from sqlalchemy import inspect as sa_inspect  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from assets import ALL_ASSETS  # noqa: E402
from pipeline.llm.openai_provider import sdk_client  # noqa: E402
from pipeline.llm.structured_output import chat_arguments  # noqa: E402
from pipeline.llm.window import new_event_loop, tune_process_for_runs  # noqa: E402
from pipeline.models import Idea, Site  # noqa: E402
from pipeline.prompts.schemas import ArticleDraft  # noqa: E402
from pipeline.sites import SITES_PARTITION  # noqa: E402
from pipeline.stages import RunOptions  # noqa: E402
from pipeline.stages.content import article_data, write_content  # noqa: E402
from pipeline.store import Store  # noqa: E402
from resources import LLMResource, MediaResource, StoreResource  # noqa: E402


def start_server(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """The loopback server in its own process, so its CPU does not count against the client."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--port", "0", "--latency-ms", str(latency_ms)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None  # stdout=PIPE
    line = process.stdout.readline()
    if not line.startswith("READY"):
        raise RuntimeError(f"loopback server did not start: {line!r}")
    return process, line.split()[1]


def prepare_store(folder: Path, articles: int, keywords: Path) -> str:
    """A SQLite store with a site planned up to ideas (offline), at least `articles` ideas waiting."""
    url = f"sqlite:///{folder / 'prepared.db'}"
    store = Store(url)
    store.upsert_site("bench", "Benchmark Site", str(keywords))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SITES_PARTITION, ["bench"])
    resources = {"store": StoreResource(database_url=url), "llm": LLMResource(), "media": MediaResource()}

    def materialize(selection: list[str]) -> None:
        result = dg.materialize(
            ALL_ASSETS, selection=selection, partition_key="bench", instance=instance, resources=resources
        )
        assert result.success

    materialize(["keywords", "clusters"])
    site_id = store.site("bench").id
    clusters = store.counts(site_id).clusters
    with store.transaction() as session:
        # Some clusters have fewer keywords than ideas asked for: ask for a quarter more (the stage's
        # `limit` takes exactly `articles` of them).
        per_cluster = min(20, -(-articles * 5 // (clusters * 4)))
        session.execute(update(Site).values(settings={"ideas_per_cluster": per_cluster}))
    materialize(["ideas"])
    ideas = store.counts(site_id).ideas
    if 0 < ideas < articles:
        # The cannibalisation guard keeps one idea per primary keyword and intent, fewer than 2,000 here:
        # copy planned ideas under new keys (setup only; the stage writes a copy like any other idea).
        copy_ideas(store, site_id, articles - ideas)
        ideas = store.counts(site_id).ideas
    if ideas < articles:
        raise SystemExit(f"{keywords} gives only {ideas} ideas; use fewer --articles")
    with store.engine.connect() as connection:  # fold the WAL into the file so copies are complete
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return url


def copy_ideas(store: Store, site_id: int, count: int) -> None:
    """Add `count` copies of the site's ideas, each under a key of its own (`<key>-copy<n>`)."""
    columns = [c.key for c in sa_inspect(Idea).mapper.column_attrs if c.key != "id"]
    with store.transaction() as session:
        planned = list(session.scalars(select(Idea).where(Idea.site_id == site_id).order_by(Idea.id)))
        for number in range(count):
            source = planned[number % len(planned)]
            values = {column: getattr(source, column) for column in columns}
            suffix = f"-copy{number // len(planned) + 1}"
            session.add(Idea(**{**values, "key": source.key + suffix, "title": source.title + suffix}))


def run_stage(prepared: str, folder: Path, base_url: str, concurrency: int, limit: int) -> tuple[int, float]:
    """Run the content stage on a fresh copy of the prepared store; returns (articles written, seconds)."""
    copy = folder / f"run-{concurrency}-{time.monotonic_ns()}.db"
    shutil.copy(prepared.removeprefix("sqlite:///"), copy)
    store = Store(f"sqlite:///{copy}")
    llm = LLMResource(provider="openai", api_key="bench", base_url=base_url, concurrency=concurrency, max_retries=0)
    tune_process_for_runs()  # as a run does where it starts (`assets/reporting.py`)
    with llm.engine(store, run_id=f"bench-{concurrency}", partition="bench") as engine:
        started = time.perf_counter()
        report = write_content(store, engine, "bench", RunOptions(limit=limit))
        elapsed = time.perf_counter() - started
    if report.failures:
        raise RuntimeError(f"{len(report.failures)} failures, e.g. {report.failures[0]}")
    return int(report.counts["articles_written"]), elapsed


def bare_sdk(base_url: str, messages: list[dict[str, str]], requests: int, concurrency: int) -> float:
    """Calls/s of the provider's SDK client alone (same arguments, answer parsed and validated, nothing
    stored), `concurrency` calls at a time."""

    async def main() -> float:
        async with sdk_client("bench", base_url, max_retries=0, timeout_s=60) as client:
            semaphore = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with semaphore:
                    completion = await client.chat.completions.create(
                        **chat_arguments(messages, "gpt-5", 16_000, ArticleDraft)
                    )
                    ArticleDraft.model_validate_json(completion.choices[0].message.content or "")

            await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up: connections, imports
            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(requests)))
            return requests / (time.perf_counter() - started)

    with asyncio.Runner(loop_factory=new_event_loop) as runner:  # the engine's loop (uvloop)
        return runner.run(main())


def sample_messages(prepared: str) -> list[dict[str, str]]:
    """The rendered messages of one real article request from the prepared store."""
    from pipeline.prompts import PromptRegistry

    store = Store(prepared)
    site = store.site("bench")
    idea = store.ideas(site.id)[0]
    cluster = store.cluster(idea.cluster_id)
    data = article_data(site.name, idea, cluster, None)
    return PromptRegistry().get("article").messages(data)


def main() -> None:
    """Measure and print the table of results and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--keywords", type=Path, default=REPO / "tests" / "data" / "labelled_keywords.csv")
    parser.add_argument("--sequential", type=int, default=20, help="articles for the sequential baseline")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    os.environ["PIPELINE_MEDIA_DIR"] = str(folder / "media")
    slow, slow_url = start_server(args.latency_ms)
    fast, fast_url = start_server(0)
    try:
        prepared = prepare_store(folder, args.articles, args.keywords)
        messages = sample_messages(prepared)
        ceiling = bare_sdk(fast_url, messages, requests=max(1000, args.articles), concurrency=96)
        bare = bare_sdk(slow_url, messages, requests=args.articles, concurrency=args.concurrency)
        written, seconds = run_stage(prepared, folder, slow_url, args.concurrency, args.articles)
        sequential_written, sequential_seconds = run_stage(prepared, folder, slow_url, 1, args.sequential)
    finally:
        for process in (slow, fast):
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)

    stage_rate = written / seconds
    sequential_rate = sequential_written / sequential_seconds
    by_latency = args.concurrency / (args.latency_ms / 1000)
    ideal = min(by_latency, ceiling)
    print(f"content stage, {written} articles, latency {args.latency_ms:.0f} ms, concurrency {args.concurrency}")
    print(f"  stage throughput              {stage_rate:8.1f} calls/s  ({seconds:.2f} s)")
    print(f"  SDK ceiling (0 ms, conc. 96)  {ceiling:8.1f} calls/s")
    print(f"  ideal = min({by_latency:.0f}, ceiling)      {ideal:8.1f} calls/s")
    print(f"  bare SDK, same conc./latency  {bare:8.1f} calls/s")
    print(f"  sequential baseline           {sequential_rate:8.1f} calls/s  ({sequential_written} articles)")
    print(f"  stage / ideal                 {stage_rate / ideal:8.2f}   (target >= 0.85)")
    print(f"  stage / bare SDK              {stage_rate / bare:8.2f}")
    print(f"  stage / sequential            {stage_rate / sequential_rate:8.1f}x  (target >= 20x)")
    print(f"  cpu load average              {os.getloadavg()[0]:8.2f}")


if __name__ == "__main__":
    main()
