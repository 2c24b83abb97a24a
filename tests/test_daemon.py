"""The pipeline driven by real Dagster processes, as `make ui` and production run it.

- `dagster dev -w workspace.yaml` (webserver + daemon): a keyword file dropped in the inbox is picked up by the
  `keyword_inbox` sensor (site, partition, `keywords` run) and the `stage_automation` sensor materializes the
  five later stages, with no one clicking anything.
- `dagster job backfill --all` over the dynamic `sites` partitions: the CLI queues one `content_pipeline` run
  per site (the default run coordinator queues runs); `dagster-daemon run` launches them.

Each test gets its own DAGSTER_HOME, SQLite store, folders and port, starts Dagster in its own session (so a
SIGINT reaches the whole process group, like Ctrl-C in a terminal) and stops it in a `finally`, SIGKILL as a
last resort. Waits poll the store and the instance; a timeout fails with the Dagster log tail and the runs.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, DagsterRun, DagsterRunStatus
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from pipeline.models import Cluster, Content, ContentVariant, Idea, ImagePrompt, Keyword, ModelCall
from pipeline.models import Image as ImageRow
from pipeline.store import SiteCounts, Store, UnknownSite
from tests.conftest import BACKEND, REPO, SAMPLE_KEYWORDS, SIX_ASSETS

pytestmark = [
    pytest.mark.slow,
    # These start their own processes on a SQLite store and instance whatever the pass: run them once.
    pytest.mark.skipif(BACKEND == "postgresql", reason="SQLite store and Dagster home; runs in the SQLite pass"),
]

BIN = Path(sys.executable).parent
DOWNSTREAM = SIX_ASSETS[1:]
IMAGE_SIZE = "256x256"
IN_FLIGHT = {
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
}
# Generous for a loaded 2-core machine; on an idle one each test takes about a minute.
STARTUP_TIMEOUT = 120.0
PIPELINE_TIMEOUT = 300.0
SETTLE_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
T = TypeVar("T")


@dataclass
class Sandbox:
    """A Dagster home, store and folders of their own, and the environment pointing Dagster at them."""

    root: Path

    def __post_init__(self) -> None:
        self.home = self.root / "dagster_home"
        self.data = self.root / "data"
        self.media = self.root / "media"
        self.inbox = self.root / "inbox"
        self.metrics = self.root / "metrics"
        self.url = f"sqlite:///{self.root / 'store.db'}"
        self.log = self.root / "dagster.log"
        for folder in (self.home, self.data, self.inbox, self.metrics):
            folder.mkdir(parents=True)
        # Default storage (SQLite in DAGSTER_HOME), run coordinator (queued) and launcher, as `make ui` has.
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.store = Store(self.url)  # creates the schema before any Dagster process opens the store
        self._instance: DagsterInstance | None = None

    def environment(self) -> dict[str, str]:
        """The caller's environment minus anything that could reach a real model or the developer's state."""
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PIPELINE_", "OPENAI_", "DAGSTER_")) and key != "DATABASE_URL"
        }
        return {
            **inherited,
            "DAGSTER_HOME": str(self.home),
            "DATABASE_URL": self.url,
            "PIPELINE_DATA_DIR": str(self.data),
            "PIPELINE_MEDIA_DIR": str(self.media),
            "PIPELINE_INBOX_DIR": str(self.inbox),
            "PIPELINE_METRICS_DIR": str(self.metrics),
            "PIPELINE_PUBLISH_DIR": str(self.root / "publish"),
            "PIPELINE_LLM_PROVIDER": "offline",  # even if a `.env` that `dagster dev` loads has a key
            "PIPELINE_SENSOR_INTERVAL_SECONDS": "5",
            "PIPELINE_IMAGE_SIZE": IMAGE_SIZE,
            "PYTHONUNBUFFERED": "1",
        }

    def instance(self) -> DagsterInstance:
        """The Dagster instance in this sandbox's home (opened once Dagster has created its storage)."""
        if self._instance is None:
            self._instance = DagsterInstance.from_config(str(self.home))
        return self._instance

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
        self.store.engine.dispose()

    def diagnostics(self) -> str:
        """The end of the Dagster log and every run in the instance, for failure messages."""
        log = ANSI.sub("", self.log.read_text(errors="replace")) if self.log.exists() else "(no log)"
        tail = "\n".join(line for line in log.splitlines()[-80:] if line.strip())
        try:
            runs = "\n".join(describe(run, self.instance()) for run in self.instance().get_runs()) or "(no runs)"
        except Exception as error:  # the instance may not exist yet: report that rather than hide the log
            runs = f"(instance not readable: {error!r})"
        return f"--- runs in {self.home} (newest first) ---\n{runs}\n--- tail of {self.log} ---\n{tail}"


def describe(run: DagsterRun, instance: DagsterInstance) -> str:
    """One line per run: id, job, status, partition, what launched it and, for failures, why."""
    tags = run.tags
    origin = tags.get("dagster/sensor_name") or tags.get("dagster/schedule_name") or tags.get("dagster/backfill")
    line = f"{run.run_id[:8]} {run.job_name} {run.status.value} partition={tags.get('dagster/partition')} by={origin}"
    if run.status == DagsterRunStatus.FAILURE:
        for entry in instance.all_logs(run.run_id):
            if entry.dagster_event and entry.dagster_event.is_failure:
                error = getattr(entry.dagster_event.event_specific_data, "error", None)
                line += f"\n    {entry.message}" + (f": {error.message.strip()[:500]}" if error else "")
    return line


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path)
    yield box
    box.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # only a zombie or a reused id answers like this; treat as gone
        return False
    return True


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C semantics: SIGINT to the whole group, wait for the leader and its children, SIGKILL if stuck."""
    pgid = process.pid  # leader of its own session and group (start_new_session=True)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT)
    # Code servers and run workers notice their parent is gone by heartbeat; give them until the deadline.
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if group_alive(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextmanager
def dagster_process(sandbox: Sandbox, args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run a long-lived Dagster command from the repository root in its own session; always stop it."""
    with sandbox.log.open("ab") as log:
        process = subprocess.Popen(
            args,
            cwd=REPO,
            env=sandbox.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process)


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    sandbox: Sandbox,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 1.0,
) -> T:
    """Poll `condition` until it returns something truthy; fail with diagnostics on timeout or a dead process."""
    started = time.monotonic()
    busy = ""
    while True:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: Dagster exited early with code {process.returncode}\n{sandbox.diagnostics()}")
        try:
            result = condition()
        except OperationalError as error:  # a SQLite file busy with a Dagster process's write: look again
            result, busy = None, f" (last database error: {error})"
        if result:
            return result
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{busy}\n{sandbox.diagnostics()}")
        time.sleep(interval)


def complete_counts(store: Store, slug: str) -> SiteCounts | None:
    """The site's counts once every stage has rows and every image prompt has its image file."""
    try:
        counts = store.counts(store.site(slug).id)
    except UnknownSite:  # the inbox sensor has not registered it yet
        return None
    if all(getattr(counts, stage) for stage in SIX_ASSETS) and counts.images == counts.image_prompts:
        return counts
    return None


def quiet_runs(instance: DagsterInstance) -> list[DagsterRun] | None:
    """All runs, once none is queued or in progress and automation has looked at the final state.

    A `stage_automation` tick that started before the last run ended may still request a run, so wait for a
    tick that started after it and finished (such a tick submits its runs before it is marked done).
    """
    records = instance.get_run_records()
    if not records or any(r.dagster_run.status in IN_FLIGHT for r in records):
        return None
    last_end = max(r.end_time or r.create_timestamp.timestamp() for r in records)
    looked_after = any(
        tick.timestamp > last_end and tick.status.value in {"SUCCESS", "SKIPPED"}
        for state in instance.all_instigator_state()
        if state.instigator_name == "stage_automation"
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
    )
    runs = instance.get_runs()
    return list(runs) if looked_after and len(runs) == len(records) else None


def materializing_runs(instance: DagsterInstance, asset: str, slug: str) -> set[str]:
    """Ids of the runs that materialized `asset` for partition `slug`."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[slug]), limit=100
    ).records
    return {record.event_log_entry.run_id for record in records}


def keyword_rows(path: Path, rows: range) -> str:
    """The header and the given data rows (1-based) of a keyword CSV."""
    lines = path.read_text().splitlines()
    return "\n".join([lines[0], *(lines[i] for i in rows)]) + "\n"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def sensor_has_ticked(instance: DagsterInstance, name: str) -> bool:
    """Whether the daemon has evaluated sensor `name` at least once."""
    return any(
        instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        for state in instance.all_instigator_state()
        if state.instigator_name == name
    )


def test_a_keyword_file_dropped_in_the_inbox_is_materialized_through_all_six_stages_by_the_daemon(sandbox):
    slug = "coffee-corner"
    port = free_port()
    command = [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]

    with dagster_process(sandbox, command) as dev:
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{port}/server_info"),
            what="the Dagster webserver to answer",
            timeout=STARTUP_TIMEOUT,
            sandbox=sandbox,
            process=dev,
        )
        instance = sandbox.instance()
        wait_for(
            lambda: sensor_has_ticked(instance, "keyword_inbox"),
            what="the first keyword_inbox sensor tick (an empty inbox)",
            timeout=STARTUP_TIMEOUT,
            sandbox=sandbox,
            process=dev,
        )

        # Dropped the way a user or a sync job should: written aside, then renamed into place.
        content = keyword_rows(SAMPLE_KEYWORDS, range(1, 61))
        partial = sandbox.inbox / f"{slug}.csv.part"
        partial.write_text(content)
        partial.rename(sandbox.inbox / f"{slug}.csv")

        counts = wait_for(
            lambda: complete_counts(sandbox.store, slug),
            what=f"all six stages to have rows for '{slug}' (store counts)",
            timeout=PIPELINE_TIMEOUT,
            sandbox=sandbox,
            process=dev,
        )
        runs = wait_for(
            lambda: quiet_runs(instance),
            what="every run to finish and automation to have nothing left to do",
            timeout=SETTLE_TIMEOUT,
            sandbox=sandbox,
            process=dev,
        )

    # -- the runs: launched by the inbox sensor, then by declarative automation, all successful ---------------
    runs = [run for run in runs if "dagster/schedule_name" not in run.tags]  # should the test span 02:00 UTC
    failed = [run for run in runs if run.status != DagsterRunStatus.SUCCESS]
    assert not failed, sandbox.diagnostics()
    assert {run.tags.get("dagster/partition") for run in runs} == {slug}, sandbox.diagnostics()

    [inbox_run] = [run for run in runs if run.tags.get("dagster/sensor_name") == "keyword_inbox"]
    assert inbox_run.job_name == "ingest_keywords"
    assert inbox_run.tags["pipeline/source"] == "inbox"
    assert inbox_run.tags["dagster/run_key"].startswith(f"inbox:{slug}:")

    automation_runs = [run for run in runs if run is not inbox_run]
    assert automation_runs, sandbox.diagnostics()
    for run in automation_runs:
        assert run.tags.get("dagster/sensor_name") == "stage_automation", describe(run, instance)
        assert run.tags.get("dagster/from_automation_condition") == "true", describe(run, instance)
    automated = {key.to_user_string() for run in automation_runs for key in run.asset_selection or ()}
    assert automated == set(DOWNSTREAM)

    assert materializing_runs(instance, "keywords", slug) == {inbox_run.run_id}
    automation_ids = {run.run_id for run in automation_runs}
    for asset in DOWNSTREAM:
        made_by = materializing_runs(instance, asset, slug)
        assert made_by and made_by <= automation_ids, (asset, made_by)
    assert instance.get_dynamic_partitions("sites") == [slug]

    # -- the store: every stage complete and consistent, made by the offline provider in those runs ------------
    site = sandbox.store.site(slug)
    assert site.name == "Coffee Corner"
    assert Path(site.keywords_file).is_relative_to(sandbox.data / "sites" / slug), "the inbox copy is kept"
    assert counts.keywords == 60
    assert sandbox.store.counts(site.id) == counts, "nothing was added once the site was complete"
    with sandbox.store.transaction() as s:
        keywords = s.scalars(select(Keyword).where(Keyword.site_id == site.id)).all()
        clusters = s.scalars(select(Cluster).where(Cluster.site_id == site.id)).all()
        ideas = s.scalars(select(Idea).where(Idea.site_id == site.id)).all()
        articles = s.scalars(select(Content).where(Content.site_id == site.id)).all()
        variants = s.scalars(select(ContentVariant).where(ContentVariant.content_id.in_([a.id for a in articles])))
        variants = variants.all()
        prompts = s.scalars(select(ImagePrompt).where(ImagePrompt.site_id == site.id)).all()
        images = s.scalars(select(ImageRow).where(ImageRow.site_id == site.id)).all()
        calls = s.scalars(select(ModelCall)).all()

    assert all(k.cluster_id is not None for k in keywords), "every keyword is clustered"
    assert sum(c.keyword_count for c in clusters) == len(keywords) == 60
    assert {i.cluster_id for i in ideas} <= {c.id for c in clusters}
    assert sorted(a.idea_id for a in articles) == sorted(i.id for i in ideas), "every idea has one article"
    assert {v.content_id for v in variants} == {a.id for a in articles}
    assert all(v.word_count > 80 and v.provider == "offline" for v in variants)
    assert {p.variant_id for p in prompts} == {v.id for v in variants}, "every article has image prompts"
    assert sorted(i.image_prompt_id for i in images) == sorted(p.id for p in prompts), "one image per prompt"
    for image in images:
        assert Path(image.path).is_file() and Path(image.path).is_relative_to(sandbox.media), image.path
        assert (image.size, image.width, image.height) == (IMAGE_SIZE, 256, 256), "PIPELINE_IMAGE_SIZE reached the run"
    assert calls and {c.provider for c in calls} == {"offline"}
    assert {c.partition for c in calls} == {slug}
    assert {c.run_id for c in calls} <= automation_ids, "model calls happen in the automation runs only"


def test_a_backfill_over_all_sites_runs_the_main_job_for_each_partition_from_the_cli(sandbox):
    sites = {"espresso-at-home": range(1, 31), "brew-methods": range(200, 231)}
    for slug, rows in sites.items():
        keywords = sandbox.root / f"{slug}.csv"
        keywords.write_text(keyword_rows(SAMPLE_KEYWORDS, rows))
        added = subprocess.run(
            [str(BIN / "pipeline"), "sites", "add", slug, "--keywords", str(keywords)],
            cwd=REPO,
            env=sandbox.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert added.returncode == 0, added.stderr
        assert f"{len(rows)} keywords" in added.stdout

    # `dagster job backfill` creates the runs itself (the backfill record is complete at once) and submits them
    # to the instance's run coordinator, which queues them: they wait for a daemon.
    backfill = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "backfill",
            "-w",
            "workspace.yaml",
            "-j",
            "content_pipeline",
            "--noprompt",
            "--all",
        ],
        cwd=REPO,
        env=sandbox.environment(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr[-3000:]
    launched = re.search(r"Launched backfill job `(\w+)`", backfill.stdout)
    assert launched, backfill.stdout + backfill.stderr[-3000:]
    backfill_id = launched.group(1)

    instance = sandbox.instance()
    [record] = instance.get_backfills()
    assert record.backfill_id == backfill_id and sorted(record.partition_names) == sorted(sites)
    queued = instance.get_runs()
    assert sorted(run.tags["dagster/partition"] for run in queued) == sorted(sites)
    assert {run.status for run in queued} == {DagsterRunStatus.QUEUED}, "nothing launches runs without a daemon"

    with dagster_process(sandbox, [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]) as daemon:
        counts = {
            slug: wait_for(
                functools.partial(complete_counts, sandbox.store, slug),
                what=f"all six stages to have rows for '{slug}' (store counts)",
                timeout=PIPELINE_TIMEOUT,
                sandbox=sandbox,
                process=daemon,
            )
            for slug in sites
        }
        runs = wait_for(
            lambda: quiet_runs(instance),
            what="every run to finish and automation to have nothing left to do",
            timeout=SETTLE_TIMEOUT,
            sandbox=sandbox,
            process=daemon,
        )

    for slug, rows in sites.items():
        assert counts[slug].keywords == len(rows)
        assert all(getattr(counts[slug], stage) > 0 for stage in SIX_ASSETS), counts[slug]
        assert sandbox.store.counts(sandbox.store.site(slug).id) == counts[slug], (
            "nothing was added once the site was complete"
        )

    runs = [run for run in runs if "dagster/schedule_name" not in run.tags]  # should the test span 02:00 UTC
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs), sandbox.diagnostics()
    backfill_runs = [run for run in runs if run.tags.get("dagster/backfill") == backfill_id]
    assert sorted(run.tags["dagster/partition"] for run in backfill_runs) == sorted(sites), sandbox.diagnostics()
    for run in backfill_runs:
        assert run.job_name == "content_pipeline"
        for asset in SIX_ASSETS:
            assert run.run_id in materializing_runs(instance, asset, run.tags["dagster/partition"]), asset
    # Any other run is `stage_automation` re-running stages the job run built. Its in_progress check can miss the
    # running job run, and dependency updates made by a job run (no asset selection) are not discounted by
    # `executed_with_root_target`, so it sometimes requests e.g. `images`, or `clusters, ideas`, for the same
    # site while or just after the job run builds them. The stages are idempotent: the counts above did not move.
    for run in runs:
        if run.run_id not in {r.run_id for r in backfill_runs}:
            assert run.tags.get("dagster/sensor_name") == "stage_automation", describe(run, instance)
            assert {key.to_user_string() for key in run.asset_selection or ()} <= set(DOWNSTREAM)
