"""The store when runs touch the same site at once: no duplicate rows, no lost rows, no deadlocks.

The Dagster run queue allows one run per site partition, but `dagster asset materialize`, a second
deployment or a retried run bypass it, so the store itself must stay correct. The truly concurrent tests
need PostgreSQL (SQLite admits one writer at a time) and run in the PostgreSQL pass; the interleaving test
replays a race step by step and runs on both backends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from pipeline.keywords import KeywordRow
from pipeline.llm.catalog import DEFAULT_CATALOG
from pipeline.llm.engine import ModelEngine
from pipeline.llm.offline import OfflineProvider
from pipeline.llm.wire import Completion, CompletionRequest
from pipeline.models import Base, Cluster, Content, ContentVariant, Idea, ImagePrompt, Keyword
from pipeline.prompts import PromptRegistry
from pipeline.prompts.schemas import ArticleDraft, IdeaBatch, ImagePromptSet
from pipeline.stages.clusters import build_clusters
from pipeline.stages.content import write_content
from pipeline.stages.ideas import generate_ideas
from pipeline.stages.image_prompts import generate_image_prompts
from pipeline.stages.keywords import ingest_keywords
from pipeline.store import Store
from tests.conftest import REPO


class LabelledOffline(OfflineProvider):
    """The offline composer, a little slow and signing its answers: like a real model, two runs get
    different ideas, articles and image prompts for the same item, and their calls overlap in time."""

    def __init__(self, label: str, delay_s: float = 0.02):
        self.label = label
        self.delay_s = delay_s

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(self.delay_s)
        completion = await super().complete(request)
        answer = completion.answer
        sign = f" [{self.label}]"
        if isinstance(answer, IdeaBatch):
            answer = answer.model_copy(
                update={"ideas": [i.model_copy(update={"title": i.title + sign}) for i in answer.ideas]}
            )
        elif isinstance(answer, ArticleDraft):
            answer = answer.model_copy(update={"title": answer.title + sign})
        elif isinstance(answer, ImagePromptSet):
            featured = answer.featured.model_copy(update={"prompt": answer.featured.prompt + sign})
            sections = [p.model_copy(update={"prompt": p.prompt + sign}) for p in answer.in_article]
            answer = answer.model_copy(update={"featured": featured, "in_article": sections})
        return dataclasses.replace(completion, answer=answer)


def run_at_once(workers: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Start every worker in its own thread at the same instant; return their results (re-raise errors)."""
    barrier = threading.Barrier(len(workers))
    results: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def run(name: str, work: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[name] = work()
        except BaseException as error:  # reported to the test below
            errors[name] = error

    threads = [threading.Thread(target=run, args=item) for item in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise next(iter(errors.values()))
    return results


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    """The exit code of a process started with `stderr=PIPE`, and what it wrote there."""
    code = process.wait(timeout=120)
    assert process.stderr is not None
    return code, process.stderr.read()


def labelled_engine(store: Store, label: str) -> ModelEngine:
    return ModelEngine(
        LabelledOffline(label),
        catalog=DEFAULT_CATALOG,
        prompts=PromptRegistry(),
        store=store,
        run_id=f"run-{label}",
        partition="sample",
    )


def items_called(env, label: str, stage: str) -> set[str]:
    """Items the run `label` asked the model about in `stage`, from the ledger."""
    return {c.item_ref for c in env.store.model_calls(run_id=f"run-{label}") if c.stage == stage}


@pytest.mark.postgres
def test_two_runs_of_one_site_at_once_store_each_item_once_and_lose_nothing(env):
    env.add_site()
    stores = {label: Store(env.url) for label in ("A", "B")}
    engines = {label: labelled_engine(store, label) for label, store in stores.items()}

    def stage(run: Callable[[Store, ModelEngine], Any]) -> dict[str, Any]:
        return run_at_once({label: functools.partial(run, stores[label], engines[label]) for label in stores})

    imported = stage(lambda store, _engine: ingest_keywords(store, "sample"))
    stage(lambda store, engine: build_clusters(store, engine, "sample"))
    stage(lambda store, engine: generate_ideas(store, engine, "sample"))
    stage(lambda store, engine: write_content(store, engine, "sample"))
    stage(lambda store, engine: generate_image_prompts(store, engine, "sample"))
    for engine in engines.values():
        engine.close()

    for name in ("ideas", "content", "image_prompts"):  # the race really happened: both runs did the same items
        assert items_called(env, "A", name) & items_called(env, "B", name), name

    assert sum(r.counts["inserted"] for r in imported.values()) == 397, "each keyword counted as new once"
    with env.store.transaction() as s:
        keywords = s.scalars(select(Keyword)).all()
        clusters = {c.id: c for c in s.scalars(select(Cluster))}
        ideas = s.scalars(select(Idea)).all()
        content = s.scalars(select(Content)).all()
        variants = s.scalars(select(ContentVariant)).all()
        prompts = s.scalars(select(ImagePrompt)).all()
    assert len(keywords) == 397 and all(k.cluster_id in clusters for k in keywords), "no keyword lost its cluster"
    assert sum(c.keyword_count for c in clusters.values()) == 397

    # Ideas: one run's set per cluster, never both runs' (the model gave each run other titles).
    by_cluster: dict[int, list[Idea]] = {}
    for idea in ideas:
        by_cluster.setdefault(idea.cluster_id, []).append(idea)
    planned = [c for c in clusters.values() if c.key != "unclustered" and c.keyword_count > 0]
    assert set(by_cluster) == {c.id for c in planned}
    for cluster_ideas in by_cluster.values():
        assert len(cluster_ideas) == 3 and len({i.title.rsplit(" ", 1)[1] for i in cluster_ideas}) == 1

    # Content: one article and one variant per idea, whichever run wrote it.
    assert sorted(c.idea_id for c in content) == sorted(i.id for i in ideas)
    assert Counter(v.content_id for v in variants) == Counter({c.id: 1 for c in content})
    assert {(v.version, v.variant) for v in variants} == {(1, "A")}

    # Image prompts: one run's set per variant, one featured each, positions unique.
    per_variant: dict[int, list[ImagePrompt]] = {}
    for prompt in prompts:
        per_variant.setdefault(prompt.variant_id, []).append(prompt)
    assert set(per_variant) == {v.id for v in variants}
    for variant_prompts in per_variant.values():
        assert [p.kind for p in variant_prompts].count("featured") == 1
        assert len({(p.kind, p.position) for p in variant_prompts}) == len(variant_prompts)
        assert len({p.prompt.rsplit(" ", 1)[1] for p in variant_prompts}) == 1, "never two answers mixed"


def test_a_clusters_run_keeps_the_clusters_another_run_created_meanwhile(env):
    """Replays the race step by step: run A reads the site, run B clusters new keywords, A writes."""
    site = env.add_site()
    first = {"cold brew ratio": "cold-brew", "cold brew time": "cold-brew"}
    _import(env, site.id, first)
    env.store.apply_cluster_assignments(site.id, first)

    snapshot_of_a = dict(first)  # what run A read before run B committed
    _import(env, site.id, {"moka pot grind": "moka-pot"})
    env.store.apply_cluster_assignments(site.id, {**first, "moka pot grind": "moka-pot"})  # run B
    env.store.apply_cluster_assignments(site.id, snapshot_of_a)  # run A, from its older snapshot

    with env.store.transaction() as s:
        clusters = {c.key: c.id for c in s.scalars(select(Cluster))}
        moka = s.scalar(select(Keyword).where(Keyword.normalized == "moka pot grind"))
    assert "moka-pot" in clusters, "run A must not delete the cluster run B created"
    assert moka.cluster_id == clusters["moka-pot"]


def _import(env, site_id: int, keywords: dict[str, str]) -> None:
    rows = [KeywordRow(keyword=k, normalized=k, volume=10, difficulty=None, intent=None) for k in keywords]
    env.store.upsert_keywords(site_id, rows)


@pytest.mark.postgres
def test_two_runs_caching_the_same_answers_in_opposite_order_do_not_deadlock(env):
    keys = [f"{n:064x}" for n in range(40)]
    entries = [
        {"key": k, "stage": "ideas", "provider": "p", "model": "m", "prompt_version": "ideas@1", "answer": {"n": 1}}
        for k in keys
    ]

    def cache(order: list[dict[str, Any]]) -> int:
        store = Store(env.url)
        for _ in range(15):
            store.record_calls([], order, hits=[e["key"] for e in order])
        return 15

    done = run_at_once({"forward": lambda: cache(entries), "backward": lambda: cache(entries[::-1])})

    assert done == {"forward": 15, "backward": 15}
    with env.store.engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*), sum(hits) FROM response_cache")).one()
    assert tuple(rows) == (40, 40 * 2 * 15)


@pytest.mark.postgres
def test_processes_opening_a_new_database_at_once_migrate_it_exactly_once(postgres):
    database = postgres.create_database()
    url = postgres.url_for(database)
    opener = "import sys; from pipeline.store import Store; Store(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", opener, url], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outcomes = [finished(p) for p in processes]

    assert [code for code, _ in outcomes] == [0, 0, 0], [err[-800:] for _, err in outcomes]
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(text("alembic_version"))) == 1
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
    postgres.drop_database(database)
