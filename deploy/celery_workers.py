"""Celery workers of the production shape (`make prod-up CELERY_WORKERS=N`), used by `deploy/prod.py`.

Each worker is one `celery -A pipeline.celery_app worker` process standing in for one machine: it takes
steps of any run from the broker's `dagster` queue, `PIPELINE_CELERY_CONCURRENCY` at a time (default 1).
Pools (`llm`, `images`) are claimed by each run before it sends a step, so they hold across workers; the
model rate limits are shared through the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WORKER_PREFIX = "celery-worker-"
DEFAULTS = {
    "PIPELINE_CELERY_BROKER": "amqp://guest:guest@127.0.0.1:5672//",
    "PIPELINE_CELERY_RESULTS_DB": "celery_results",
    "PIPELINE_CELERY_CONCURRENCY": "1",
}
CELERY_VARIABLES = (*DEFAULTS, "PIPELINE_CELERY_BACKEND", "PIPELINE_EXECUTOR", "CELERY_WORKERS")


def configure(settings: dict[str, str], workers: int, results_url: str) -> None:
    """Fill in the Celery settings: the executor is Celery when there are workers (here or elsewhere)."""
    for key, value in DEFAULTS.items():
        settings.setdefault(key, value)
    if not settings.get("PIPELINE_EXECUTOR"):
        settings["PIPELINE_EXECUTOR"] = "celery" if workers else "in_process"
    if settings["PIPELINE_EXECUTOR"] == "celery" and not settings.get("PIPELINE_CELERY_BACKEND"):
        settings["PIPELINE_CELERY_BACKEND"] = "db+" + results_url


def worker_name(index: int) -> str:
    """The service name of the index-th worker (1-based) in the state file and its log."""
    return f"{WORKER_PREFIX}{index}"


def worker_commands(bin_dir: Path, settings: Mapping[str, str], workers: int) -> dict[str, list[str]]:
    """`celery worker` command lines, one per worker; node names `worker<i>@<host>`."""
    return {
        worker_name(i): [
            str(bin_dir / "celery"),
            "-A",
            "pipeline.celery_app",
            "worker",
            "--hostname",
            f"worker{i}@%h",
            "--queues",
            "dagster",
            "--concurrency",
            settings["PIPELINE_CELERY_CONCURRENCY"],
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "--task-events",
        ]
        for i in range(1, workers + 1)
    }


def _app(settings: Mapping[str, str]) -> Any:
    """A Celery client with the deployment's broker (for control commands only)."""
    from celery import Celery

    return Celery("dagster", broker=settings["PIPELINE_CELERY_BROKER"])


def broker_problem(settings: Mapping[str, str]) -> str | None:
    """Why the broker cannot be reached (a short reason, no password), or None when it answers."""
    from kombu import Connection

    with Connection(settings["PIPELINE_CELERY_BROKER"], connect_timeout=5) as connection:
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as error:  # kombu wraps socket and protocol errors differently per transport
            return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    return None


def live_workers(settings: Mapping[str, str], timeout: float = 2.0) -> dict[str, dict[str, Any]]:
    """Workers answering on the broker: node name -> Celery's own `stats` (pid, tasks run since start)."""
    app = _app(settings)
    try:
        return app.control.inspect(timeout=timeout).stats() or {}
    finally:
        app.close()


def steps_per_worker(instance: Any, run_ids: list[str] | None = None, limit: int = 20_000) -> Counter[str]:
    """Steps each worker started, from the Dagster event log (dagster-celery's "Executing steps ... in
    celery worker" engine event, which names the worker), over the newest `limit` engine events."""
    from dagster import DagsterEventType, EventRecordsFilter

    counts: Counter[str] = Counter()
    if run_ids is not None:
        entries = [
            entry for run_id in run_ids for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        ]
    else:
        records = instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ENGINE_EVENT), limit=limit, ascending=False
        )
        entries = [record.event_log_entry for record in records]
    for entry in entries:
        worker = celery_worker_of(entry)
        if worker:
            counts[worker] += 1
    return counts


def celery_worker_of(entry: Any) -> str | None:
    """The worker named by one event log entry, if it is dagster-celery's step hand-over event."""
    event = entry.dagster_event
    if event is None or event.engine_event_data is None:
        return None
    value = event.engine_event_data.metadata.get("Celery worker")
    return str(value.value) if value is not None else None


def describe(settings: Mapping[str, str], instance: Any) -> list[str]:
    """Lines for `make prod-status`: each live worker and the steps it ran, per Celery and per event log."""
    lines = [f"executor     {settings.get('PIPELINE_EXECUTOR') or 'in_process'}"]
    if settings.get("PIPELINE_EXECUTOR") != "celery":
        return lines
    try:
        live = live_workers(settings)
    except Exception as error:  # a broker that does not answer is a status to show, not a crash
        lines.append(f"broker       not answering ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
        live = {}
    history = steps_per_worker(instance)
    for node in sorted(set(live) | set(history)):
        stats = live.get(node)
        state = f"up (pid {stats['pid']}), {sum(stats['total'].values())} steps since start" if stats else "down"
        lines.append(f"worker       {node}: {state}; {history.get(node, 0)} steps in the event log")
    if not live and not history:
        lines.append("worker       none answering")
    return lines


def results_database(settings: Mapping[str, str]) -> str:
    """The database (on the instance's server) that keeps step results when no backend URL is given."""
    return settings.get("PIPELINE_CELERY_RESULTS_DB") or DEFAULTS["PIPELINE_CELERY_RESULTS_DB"]
