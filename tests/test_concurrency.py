"""Queued runs on the production shape: `deploy/prod.py up` (webserver, daemon, code server on PostgreSQL
with deploy/dagster.yaml), runs submitted through the webserver like the UI does, assertions on the store.

- two sites requested at once are launched without waiting for each other, while the `llm` pool keeps
  model-calling steps one at a time;
- two runs of one site requested at once: the second waits in the queue, then finds nothing left to do;
- regeneration runs are capped at two at a time.

PostgreSQL only (the queue, pools and the shared instance are what is under test).
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import select

from pipeline.cli import main as pipeline_cli
from pipeline.models import Content, ContentVariant, Idea, Image, ImagePrompt, Keyword
from pipeline.store import Store
from tests.conftest import REPO, SAMPLE_KEYWORDS

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")]

PROD = REPO / "deploy" / "prod.py"
LLM_STEPS = {"clusters", "ideas", "content", "image_prompts"}
SMALL_IMAGES = {"resources": {"llm": {"config": {"image_size": "256x256"}}}}
IN_PROGRESS = {DagsterRunStatus.STARTING, DagsterRunStatus.STARTED}
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Production:
    """A running production shape and what the tests need to drive it."""

    def __init__(self, settings: dict[str, str], root: Path):
        self.settings = settings
        self.root = root
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=int(settings["DAGSTER_WEBSERVER_PORT"]))
        self.instance = DagsterInstance.from_config(settings["DAGSTER_HOME"])
        self.store = Store(settings["DATABASE_URL"])

    def add_site(self, slug: str, first_row: int, rows: int = 45) -> None:
        """Register a small site (a slice of the sample keywords) with the real `pipeline sites add`."""
        lines = SAMPLE_KEYWORDS.read_text().splitlines()
        path = self.root / f"{slug}.csv"
        path.write_text("\n".join([lines[0], *lines[1 + first_row : 1 + first_row + rows]]) + "\n")
        assert pipeline_cli(["sites", "add", slug, "--keywords", str(path)]) == 0

    def submit(self, slug: str, tags: dict[str, str] | None = None, assets: list[str] | None = None) -> str:
        """Queue the main job for one site partition, as the UI's launchpad does."""
        return self.client.submit_job_execution(
            "content_pipeline",
            run_config=SMALL_IMAGES,
            tags={"dagster/partition": slug, **(tags or {})},
            asset_selection=assets,
        )

    def watch(self, run_ids: list[str], timeout: float = 300.0) -> list[dict[str, DagsterRunStatus]]:
        """Poll the runs' statuses until all end; returns every distinct snapshot seen."""
        snapshots: list[dict[str, DagsterRunStatus]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.instance.get_run_records(RunsFilter(run_ids=run_ids))
            snapshot = {r.dagster_run.run_id: r.dagster_run.status for r in records}
            if not snapshots or snapshot != snapshots[-1]:
                snapshots.append(snapshot)
            if len(snapshot) == len(run_ids) and set(snapshot.values()) <= DONE:
                return snapshots
            time.sleep(0.2)
        raise AssertionError(f"runs did not finish in {timeout} s: {snapshots[-1:]}")

    def records(self, run_ids: list[str]) -> dict[str, RunRecord]:
        return {r.dagster_run.run_id: r for r in self.instance.get_run_records(RunsFilter(run_ids=run_ids))}

    def launch_time(self, run_id: str) -> float:
        """When the daemon dequeued and launched a run (its RUN_STARTING event)."""
        [entry] = self.instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)
        return entry.timestamp

    def step_windows(self, run_id: str) -> dict[str, tuple[float, float]]:
        """(start, end) time of each step of a run, from its event log."""
        kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
        times: dict[str, dict[DagsterEventType, float]] = {}
        for entry in self.instance.all_logs(run_id, of_type=kinds):
            assert entry.step_key is not None and entry.dagster_event is not None, entry
            times.setdefault(entry.step_key, {})[entry.dagster_event.event_type] = entry.timestamp
        return {step: (t[DagsterEventType.STEP_START], t[DagsterEventType.STEP_SUCCESS]) for step, t in times.items()}

    def ledger(self, slug: str) -> Counter[str | None]:
        """Model calls recorded for a site partition, per run id."""
        return Counter(c.run_id for c in self.store.model_calls(partition=slug))


@pytest.fixture(scope="module")
def production(postgres, tmp_path_factory) -> Iterator[Production]:
    """`deploy/prod.py up` against two fresh databases (instance, store), stopped and dropped afterwards."""
    root = tmp_path_factory.mktemp("production")
    instance_db, store_db = postgres.create_database(), postgres.create_database()
    url = postgres.url
    settings = {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": instance_db,
        "DATABASE_URL": postgres.url_for(store_db),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "DAGSTER_WEBSERVER_HOST": "127.0.0.1",
        "DAGSTER_WEBSERVER_PORT": str(free_port()),
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
        # One model-calling step at a time across all runs, so the test can see the pool hold steps back.
        "PIPELINE_LLM_POOL_LIMIT": "1",
        "PIPELINE_IMAGE_POOL_LIMIT": "1",
        "PIPELINE_MEDIA_DIR": str(root / "media"),
        "PIPELINE_DATA_DIR": str(root / "data"),
        "PIPELINE_INBOX_DIR": str(root / "inbox"),
        "PIPELINE_METRICS_DIR": str(root / "metrics"),
        # Keep declarative automation out of the way: the tests account for every run.
        "PIPELINE_SENSOR_INTERVAL_SECONDS": "3600",
    }

    def prod(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(PROD), "--env-file", str(root / "no.env"), command],
            cwd=REPO,
            env={**_clean_environ(), **settings},
            capture_output=True,
            text=True,
            timeout=400,
        )

    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)  # this process reads the same instance and store
        started = prod("up")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            production = Production(settings, root)
            yield production
            production.instance.dispose()
            production.store.engine.dispose()
        finally:
            stopped = prod("down")
            logs = "\n".join(
                f"== {p.name}\n{p.read_text()[-2000:]}" for p in (root / "dagster_home" / "logs").glob("*.log")
            )
            assert stopped.returncode == 0 and "Stopped" in stopped.stdout, stopped.stderr + logs
            postgres.drop_database(instance_db)
            postgres.drop_database(store_db)


def _clean_environ() -> dict[str, str]:
    """This process's environment without settings of the developer's own deployment."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PIPELINE_", "OPENAI_"))}


def test_start_up_creates_the_pools_and_the_instance_queues_runs_with_the_deploy_limits(production):
    instance = production.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert {"key": "pipeline/run_kind", "value": "regeneration", "limit": 2} in limits
    pools = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in ("llm", "images")}
    assert pools == {"llm": 1, "images": 1}


def test_two_sites_requested_at_once_run_in_parallel_and_each_store_is_complete(production):
    production.add_site("alpha", first_row=0)
    production.add_site("beta", first_row=200)

    runs = {"alpha": production.submit("alpha"), "beta": production.submit("beta")}
    production.watch(list(runs.values()))

    records = production.records(list(runs.values()))
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}
    alpha, beta = records[runs["alpha"]], records[runs["beta"]]
    # Neither waited in the queue for the other: each was launched before the other ended. (Launch, not
    # execution: two small sites' runs can each finish within one dequeue interval, 2 s, if the daemon's
    # tick falls between the two submissions; a queue that serialised sites would still fail this.)
    launched = {run_id: production.launch_time(run_id) for run_id in runs.values()}
    assert launched[runs["beta"]] < alpha.end_time and launched[runs["alpha"]] < beta.end_time, launched

    # The `llm` pool (limit 1) held model-calling steps back: never two at once across the two runs.
    steps = [production.step_windows(run_id) for run_id in runs.values()]
    windows = sorted(window for run in steps for step, window in run.items() if step in LLM_STEPS)
    assert len(windows) == 2 * len(LLM_STEPS)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(windows))

    for slug, run_id in runs.items():
        assert_site_complete(production.store, slug)
        assert set(production.ledger(slug)) == {run_id}, "each site's model calls belong to its own run"


def test_a_second_run_of_the_same_site_waits_for_the_first_and_adds_nothing(production):
    production.add_site("gamma", first_row=100)
    first = production.submit("gamma")
    second = production.submit("gamma")

    snapshots = production.watch([first, second])

    assert any(s.get(first) in IN_PROGRESS and s.get(second) == DagsterRunStatus.QUEUED for s in snapshots)
    assert not any(s.get(first) in IN_PROGRESS and s.get(second) in IN_PROGRESS for s in snapshots)
    records = production.records([first, second])
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}
    assert records[second].start_time >= records[first].end_time
    assert_site_complete(production.store, "gamma")
    assert set(production.ledger("gamma")) == {first}, "the first run did the work; the second made no model call"


def test_regeneration_runs_are_capped_at_two_at_a_time(production):
    slugs = ["delta", "epsilon", "zeta"]
    for index, slug in enumerate(slugs):
        production.add_site(slug, first_row=300 + 10 * index, rows=10)
    regeneration = {"pipeline/run_kind": "regeneration"}

    runs = [production.submit(slug, tags=regeneration, assets=["keywords"]) for slug in slugs]
    snapshots = production.watch(runs)

    assert max(sum(status in IN_PROGRESS for status in s.values()) for s in snapshots) == 2
    records = production.records(runs)
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}
    last = max(records.values(), key=lambda r: r.start_time)
    others = [r for r in records.values() if r is not last]
    assert last.start_time >= min(r.end_time for r in others), "the third started only after one ended"


def assert_site_complete(store: Store, slug: str) -> None:
    """Every stage of the site done exactly once: each keyword clustered, one article and one variant per idea,
    one featured prompt per variant, one image file per prompt."""
    site = store.site(slug)
    with store.transaction() as s:
        keywords = s.scalars(select(Keyword).where(Keyword.site_id == site.id)).all()
        ideas = s.scalars(select(Idea.id).where(Idea.site_id == site.id)).all()
        content = s.scalars(select(Content).where(Content.site_id == site.id)).all()
        variants = s.scalars(select(ContentVariant.id).join(Content).where(Content.site_id == site.id)).all()
        prompts = s.scalars(select(ImagePrompt).where(ImagePrompt.site_id == site.id)).all()
        images = s.scalars(select(Image).where(Image.site_id == site.id)).all()
    assert keywords and all(k.cluster_id is not None for k in keywords)
    assert ideas and sorted(c.idea_id for c in content) == sorted(ideas)
    assert len(variants) == len(content)
    assert Counter(p.variant_id for p in prompts if p.kind == "featured") == Counter(dict.fromkeys(variants, 1))
    assert sorted(i.image_prompt_id for i in images) == sorted(p.id for p in prompts)
    assert all(Path(i.path).is_file() for i in images)
