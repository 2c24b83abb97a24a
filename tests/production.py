"""The production shape under test: `deploy/prod.py up` (webserver, daemon, code server, optionally Celery
workers) against fresh PostgreSQL databases, and what tests need to drive it and read it back.

Used by `tests/test_concurrency.py` (the run queue and pools) and `tests/test_celery.py` (the Celery
executor on the machine's RabbitMQ).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import select

from pipeline.cli import main as pipeline_cli
from pipeline.models import Content, ContentVariant, Idea, Image, ImagePrompt, Keyword
from pipeline.store import Store
from tests.conftest import REPO, SAMPLE_KEYWORDS, PostgresServer

PROD = REPO / "deploy" / "prod.py"
LLM_STEPS = {"clusters", "ideas", "content", "image_prompts"}
SMALL_IMAGES: dict[str, Any] = {"resources": {"llm": {"config": {"image_size": "256x256"}}}}
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

    @property
    def home(self) -> Path:
        return Path(self.settings["DAGSTER_HOME"])

    def add_site(self, slug: str, first_row: int, rows: int = 45) -> None:
        """Register a small site (a slice of the sample keywords) with the real `pipeline sites add`."""
        lines = SAMPLE_KEYWORDS.read_text().splitlines()
        path = self.root / f"{slug}.csv"
        path.write_text("\n".join([lines[0], *lines[1 + first_row : 1 + first_row + rows]]) + "\n")
        assert pipeline_cli(["sites", "add", slug, "--keywords", str(path)]) == 0

    def submit(
        self,
        slug: str,
        tags: dict[str, str] | None = None,
        assets: list[str] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> str:
        """Queue the main job for one site partition, as the UI's launchpad does."""
        return self.client.submit_job_execution(
            "content_pipeline",
            run_config=run_config or SMALL_IMAGES,
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
        raise AssertionError(f"runs did not finish in {timeout} s: {snapshots[-1:]}\n{self.logs()}")

    def records(self, run_ids: list[str]) -> dict[str, RunRecord]:
        return {r.dagster_run.run_id: r for r in self.instance.get_run_records(RunsFilter(run_ids=run_ids))}

    def launch_time(self, run_id: str) -> float:
        """When the daemon dequeued and launched a run (its RUN_STARTING event)."""
        [entry] = self.instance.all_logs(run_id, of_type=DagsterEventType.RUN_STARTING)
        return entry.timestamp

    def step_windows(self, run_id: str) -> dict[str, tuple[float, float]]:
        """(first start, last success) time of each step of a run, from its event log."""
        kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
        times: dict[str, dict[DagsterEventType, float]] = {}
        for entry in self.instance.all_logs(run_id, of_type=kinds):
            assert entry.step_key is not None and entry.dagster_event is not None, entry
            times.setdefault(entry.step_key, {}).setdefault(entry.dagster_event.event_type, entry.timestamp)
            if entry.dagster_event.event_type == DagsterEventType.STEP_SUCCESS:
                times[entry.step_key][DagsterEventType.STEP_SUCCESS] = entry.timestamp
        return {step: (t[DagsterEventType.STEP_START], t[DagsterEventType.STEP_SUCCESS]) for step, t in times.items()}

    def step_workers(self, run_id: str) -> list[tuple[str, str]]:
        """(step, worker) for every step hand-over of a run, from dagster-celery's engine events (they name
        the worker that took the step)."""
        pairs = []
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            event = entry.dagster_event
            data = event.engine_event_data if event else None
            worker = data.metadata.get("Celery worker") if data else None
            if worker is not None and entry.step_key:
                pairs.append((entry.step_key, str(worker.value)))
        return pairs

    def ledger(self, slug: str) -> Counter[str | None]:
        """Model calls recorded for a site partition, per run id."""
        return Counter(c.run_id for c in self.store.model_calls(partition=slug))

    def state(self) -> dict[str, dict[str, Any]]:
        """The processes `up` started (service -> pid, log, command)."""
        state: dict[str, dict[str, Any]] = json.loads((self.home / "prod-processes.json").read_text())
        return state

    def failures(self, run_id: str) -> str:
        """A run's failure events (step and run failures, engine errors) with their error text."""
        lines = []
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            if event is not None and event.event_type in {
                DagsterEventType.STEP_FAILURE,
                DagsterEventType.RUN_FAILURE,
                DagsterEventType.ENGINE_EVENT,
            }:
                error = getattr(event.event_specific_data, "error", None)
                if event.event_type != DagsterEventType.ENGINE_EVENT or error is not None:
                    lines.append(f"{event.event_type.value} {entry.step_key}: {event.message}\n{error or ''}")
        return "\n".join(lines)[-6000:]

    def logs(self, chars: int = 2000) -> str:
        """The tail of every process log, for failure messages."""
        return "\n".join(f"== {p.name}\n{p.read_text()[-chars:]}" for p in sorted((self.home / "logs").glob("*.log")))

    def prod(self, command: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run `deploy/prod.py COMMAND` against this deployment."""
        return run_prod(self.settings, self.root, command, *arguments)

    def close(self) -> None:
        self.instance.dispose()
        self.store.engine.dispose()


def run_prod(
    settings: Mapping[str, str], root: Path, command: str, *arguments: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROD), "--env-file", str(root / "no.env"), command, *arguments],
        cwd=REPO,
        env={**clean_environ(), **settings},
        capture_output=True,
        text=True,
        timeout=400,
    )


@contextlib.contextmanager
def production_shape(
    postgres: PostgresServer, root: Path, overrides: Mapping[str, str], *up_arguments: str
) -> Iterator[Production]:
    """`deploy/prod.py up` against two fresh databases (instance, store), stopped and dropped afterwards."""
    instance_db, store_db, results_db = (postgres.create_database() for _ in range(3))
    url = postgres.url
    settings = {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USERNAME": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": instance_db,
        "DATABASE_URL": postgres.url_for(store_db),
        "PIPELINE_CELERY_RESULTS_DB": results_db,
        "DAGSTER_HOME": str(root / "dagster_home"),
        "DAGSTER_WEBSERVER_HOST": "127.0.0.1",
        "DAGSTER_WEBSERVER_PORT": str(free_port()),
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(free_port()),
        "PIPELINE_MEDIA_DIR": str(root / "media"),
        "PIPELINE_DATA_DIR": str(root / "data"),
        "PIPELINE_INBOX_DIR": str(root / "inbox"),
        "PIPELINE_METRICS_DIR": str(root / "metrics"),
        # Keep declarative automation out of the way: the tests account for every run.
        "PIPELINE_SENSOR_INTERVAL_SECONDS": "3600",
        **overrides,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings.items():
            patch.setenv(key, value)  # this process reads the same instance and store
        started = run_prod(settings, root, "up", *up_arguments)
        production: Production | None = None
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            production = Production(settings, root)
            yield production
        finally:
            logs = production.logs() if production else ""
            if production:
                production.close()
            stopped = run_prod(settings, root, "down")
            assert stopped.returncode == 0 and "Stopped" in stopped.stdout, stopped.stderr + logs
            for database in (instance_db, store_db, results_db):
                postgres.drop_database(database)


def clean_environ() -> dict[str, str]:
    """This process's environment without settings of the developer's own deployment."""
    prefixes = ("DAGSTER_", "PIPELINE_", "OPENAI_", "CELERY_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def kill_service(production: Production, service: str) -> int:
    """SIGKILL a started process and its children (a lost machine); returns its pid."""
    pid = int(production.state()[service]["pid"])
    os.killpg(pid, signal.SIGKILL)
    return pid


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
