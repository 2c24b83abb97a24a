"""Dagster's Celery executor on the machine's RabbitMQ: `deploy/prod.py up --celery-workers 2` (what
`make prod-up CELERY_WORKERS=2` runs), runs submitted through the webserver, assertions on the event log,
the store and the loopback model server.

- three sites at once: steps run on both workers, the `llm` pool holds across them, each site complete;
- a worker that cannot reach the store takes no steps (its step goes to the other worker);
- the broker restarted during a run: the run completes;
- a worker killed with SIGKILL mid-step: the other worker runs the step again and the site completes with
  no duplicate rows and no finished article paid twice (last: it leaves one worker).

PostgreSQL pass only. Skips when RabbitMQ does not answer on 127.0.0.1:5672, and fails instead when
`PIPELINE_REQUIRE_CELERY=1` (as `.ci/run` sets).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterRunStatus
from sqlalchemy import func, select

from pipeline.models import Content, ContentVariant
from tests.openai_server import LoopbackOpenAI
from tests.production import (
    LLM_STEPS,
    SMALL_IMAGES,
    Production,
    assert_site_complete,
    clean_environ,
    kill_service,
    production_shape,
    run_prod,
)

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")]

LLM_POOL = 2
LOOPBACK_KEY_ENV = "LOOPBACK_OPENAI_KEY"
HOST = socket.gethostname()
WORKERS = {f"worker{i}@{HOST}" for i in (1, 2)}


def rabbitmq_answers() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", 5672)) == 0


@pytest.fixture(scope="module")
def production(postgres, tmp_path_factory) -> Iterator[Production]:
    """The production shape with two Celery workers (one step at a time each) on the machine's RabbitMQ."""
    if not rabbitmq_answers():
        reason = "RabbitMQ does not answer on 127.0.0.1:5672 (Debian's rabbitmq-server)"
        if os.environ.get("PIPELINE_REQUIRE_CELERY", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason}; PIPELINE_REQUIRE_CELERY=1, so this fails instead of skipping", pytrace=False)
        pytest.skip(reason)
    settings = {
        "PIPELINE_LLM_POOL_LIMIT": str(LLM_POOL),
        "PIPELINE_IMAGE_POOL_LIMIT": "1",
        # A queue of its own: a developer's own workers on the default vhost's queue would take steps.
        "PIPELINE_CELERY_BROKER": "amqp://guest:guest@127.0.0.1:5672//",
        "PIPELINE_CELERY_HEALTH_S": "1",
        LOOPBACK_KEY_ENV: "sk-loopback",
    }
    with production_shape(postgres, tmp_path_factory.mktemp("celery"), settings, "--celery-workers", "2") as shape:
        yield shape


def assert_succeeded(production: Production, run_id: str) -> None:
    status = production.records([run_id])[run_id].dagster_run.status
    assert status == DagsterRunStatus.SUCCESS, production.failures(run_id)


def loopback_config(server: LoopbackOpenAI, **llm: Any) -> dict[str, Any]:
    """Run config sending a run's model calls to the loopback server (its key from the workers' environment)."""
    config = {"provider": "openai", "base_url": server.base_url, "api_key_env": LOOPBACK_KEY_ENV, **llm}
    return {"resources": {"llm": {"config": {**SMALL_IMAGES["resources"]["llm"]["config"], **config}}}}


def max_overlap(windows: list[tuple[float, float]]) -> int:
    """The most windows open at one moment."""
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    open_now = peak = 0
    for _, change in edges:
        open_now += change
        peak = max(peak, open_now)
    return peak


def test_three_sites_run_their_steps_on_both_workers_within_the_llm_pool(production):
    slugs = {"alpha": 0, "beta": 120, "gamma": 240}
    for slug, first_row in slugs.items():
        production.add_site(slug, first_row=first_row)

    runs = {slug: production.submit(slug) for slug in slugs}
    production.watch(list(runs.values()))

    records = production.records(list(runs.values()))
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}, production.logs()
    handed_over = [pair for run_id in runs.values() for pair in production.step_workers(run_id)]
    per_worker = Counter(worker for _, worker in handed_over)
    assert set(per_worker) == WORKERS, per_worker
    assert sorted(step for step, _ in handed_over) == sorted(3 * ["keywords", "images", *LLM_STEPS])

    # Never more model-calling steps at once than the pool allows, across runs and workers.
    windows = [w for run_id in runs.values() for s, w in production.step_windows(run_id).items() if s in LLM_STEPS]
    assert len(windows) == 3 * len(LLM_STEPS)
    assert max_overlap(windows) <= LLM_POOL

    for slug, run_id in runs.items():
        assert_site_complete(production.store, slug)
        assert set(production.ledger(slug)) == {run_id}, "each site's model calls belong to its own run"

    status = production.prod("status")
    assert status.returncode == 0, status.stderr
    for worker in WORKERS:
        line = next(line for line in status.stdout.splitlines() if f" {worker}: " in line)
        assert f"up (pid {production.state()['celery-worker-' + worker[6]]['pid']})" in line
        assert f"; {per_worker[worker]} steps in the event log" in line, status.stdout


def test_the_rate_limit_is_shared_by_both_workers(production):
    rpm, burst_s = 600, 1.0
    for slug, first_row in (("eta", 10), ("theta", 130)):
        production.add_site(slug, first_row=first_row, rows=40)
    with LoopbackOpenAI(latency_ms=100) as server:
        limited = loopback_config(server, concurrency=8, requests_per_minute=rpm, rate_limit_burst_s=burst_s)
        runs = {slug: production.submit(slug, run_config=limited) for slug in ("eta", "theta")}
        production.watch(list(runs.values()))
        arrivals = sorted(r.time for r in server.log.records("chat"))
    for run_id in runs.values():
        assert_succeeded(production, run_id)
    calling = {w for run_id in runs.values() for step, w in production.step_workers(run_id) if step in LLM_STEPS}
    assert calling == WORKERS, "model-calling steps ran on both workers"
    # Both sites called the model during the same seconds (so each worker's calls had to share the budget)...
    spans = []
    for run_id in runs.values():
        times = sorted(c.created_at.timestamp() for c in production.store.model_calls(run_id=run_id))
        spans.append((times[0], times[-1]))
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans
    # ...and together they stayed within one budget: at most the burst plus the rate over any window.
    rate = rpm / 60.0
    worst = max(
        (j - i + 1) - (burst_s * rate + (arrivals[j] - arrivals[i]) * rate)
        for i in range(len(arrivals))
        for j in range(i, len(arrivals))
    )
    assert worst <= 2.5, f"{worst:.1f} requests over the shared limit ({len(arrivals)} requests)"
    assert len(arrivals) > 3 * burst_s * rate, "enough requests that a bucket per worker would have shown"


def test_prod_up_with_an_unreachable_broker_stops_with_a_clear_error(production):
    settings = {**production.settings, "PIPELINE_CELERY_BROKER": "amqp://guest:broker-secret@127.0.0.1:9//"}
    started = run_prod(settings, production.root, "up", "--celery-workers", "2")
    assert started.returncode == 1
    assert "cannot reach the Celery broker at amqp://guest:***@127.0.0.1:9//" in started.stderr, started.stderr
    assert "broker-secret" not in started.stdout + started.stderr


def test_a_worker_that_cannot_reach_the_store_takes_no_steps(production):
    log = production.root / "unreachable-worker.log"
    command = production.state()["celery-worker-1"]["command"]
    command = [*command[: command.index("--hostname") + 1], f"lost@{HOST}", *command[command.index("--hostname") + 2 :]]
    secret = "hunter2-store-password"
    unreachable = f"postgresql+psycopg2://postgres:{secret}@127.0.0.1:9/nowhere"
    environment = {**clean_environ(), **production.settings, "PIPELINE_EXECUTOR": "celery"}
    environment |= {**deployment_environment(production), "DATABASE_URL": unreachable}
    with log.open("wb") as output:
        lost = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: "it takes no steps until the store answers" in log.read_text(), 120, log)
        production.add_site("delta", first_row=60, rows=30)
        run_id = production.submit("delta")
        production.watch([run_id])
        assert production.records([run_id])[run_id].dagster_run.status == DagsterRunStatus.SUCCESS
        workers = {worker for _, worker in production.step_workers(run_id)}
        assert workers <= WORKERS, f"a step ran on the worker without a store: {workers}"
        assert_site_complete(production.store, "delta")
    finally:
        os.killpg(lost.pid, 15)
        lost.wait(timeout=60)
    text = log.read_text()
    assert "cannot reach the store at postgresql+psycopg2://postgres:***@127.0.0.1:9/nowhere" in text
    assert secret not in text


def deployment_environment(production: Production) -> dict[str, str]:
    """What `deploy/prod.py env` exports for this deployment (the workers' settings, result backend included)."""
    printed = production.prod("env")
    assert printed.returncode == 0, printed.stderr
    pairs = (line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
    return {key: value.strip("'") for key, value in pairs}


def wait_until(condition: Any, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def content_schema(chat: list[Any]) -> str | None:
    """The schema name of the content stage's requests (the most frequent one after ideas)."""
    schemas: Counter[str | None] = Counter(r.schema for r in chat)
    return schemas.most_common(1)[0][0]


def articles(production: Production, slug: str) -> Counter[int]:
    """Articles per idea of a site."""
    site = production.store.site(slug)
    with production.store.transaction() as s:
        rows = s.execute(
            select(Content.idea_id, func.count()).where(Content.site_id == site.id).group_by(Content.idea_id)
        )
        return Counter({idea: count for idea, count in rows})


def test_a_broker_restart_during_a_run_does_not_lose_it(production):
    production.add_site("epsilon", first_row=150, rows=40)
    with LoopbackOpenAI(latency_ms=400) as server:
        run_id = production.submit("epsilon", run_config=loopback_config(server, concurrency=1))
        wait_until(lambda: len(server.log.records("chat")) >= 3, 180, production.home / "logs" / "daemon.log")
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
        time.sleep(3)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        production.watch([run_id], timeout=400)
    assert_succeeded(production, run_id)
    assert_site_complete(production.store, "epsilon")
    assert set(articles(production, "epsilon").values()) == {1}


def test_a_worker_killed_mid_step_has_the_step_finished_on_the_other_worker_without_paying_twice(production):
    production.add_site("zeta", first_row=200, rows=40)
    with LoopbackOpenAI(latency_ms=400) as server:
        # A short item bound keeps lease expiry short, should the dead attempt's leases look alive.
        zeta = loopback_config(server, concurrency=1, item_timeout_s=20.0)
        run_id = production.submit("zeta", run_config=zeta)
        content_worker: list[str] = []

        def content_running_with_articles() -> bool:
            content_worker[:] = [w for step, w in production.step_workers(run_id) if step == "content"]
            return bool(content_worker) and sum(articles(production, "zeta").values()) >= 2

        wait_until(content_running_with_articles, 240, production.home / "logs" / "daemon.log")
        victim = content_worker[0]
        kill_service(production, f"celery-worker-{victim.removeprefix('worker').split('@')[0]}")
        finished_before = set(articles(production, "zeta"))
        production.watch([run_id], timeout=400)
        chat = server.log.records("chat")

    assert_succeeded(production, run_id)
    hand_overs = [w for step, w in production.step_workers(run_id) if step == "content"]
    assert hand_overs[0] == victim and hand_overs[-1] != victim, hand_overs
    assert_site_complete(production.store, "zeta")
    assert set(articles(production, "zeta").values()) == {1}, "one article per idea"
    with production.store.transaction() as s:
        variants = Counter(s.scalars(select(ContentVariant.content_id)).all())
    assert set(variants.values()) == {1}, "one variant per article"
    content_calls = [c for c in production.store.model_calls(partition="zeta") if c.stage == "content"]
    ok = Counter(c.item_ref for c in content_calls if c.outcome == "ok")
    assert set(ok.values()) == {1}, "each article paid for once"
    assert {f"idea:{i}" for i in finished_before} <= set(ok)
    ideas = len(articles(production, "zeta"))
    # One call per article, plus at most the one in flight when the worker died (one call at a time).
    assert ideas <= len(content_calls) <= ideas + 1, Counter(c.item_ref for c in content_calls)
    assert len(content_calls) <= len([r for r in chat if r.schema == content_schema(chat)])
