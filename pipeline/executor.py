"""Which Dagster executor runs a run's steps: in one process (the embedded default) or on Celery workers.

Part of the composition root (with `pipeline/definitions.py`): it is chosen once, when the code location
loads, from `PIPELINE_EXECUTOR`:

- `in_process` (default): a site's steps run one after another in the run's own process;
- `celery`: each step is a Celery task on a pool of workers (`pipeline.celery_app`), through a broker
  (`PIPELINE_CELERY_BROKER`, RabbitMQ by default, Redis works too) with the steps' results kept in
  `PIPELINE_CELERY_BACKEND` (a database, so they survive a broker restart).

The Celery settings below are shared by the executor (inside each run) and by the workers, so both sides
agree on the broker, the queue and the acknowledgement rules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import ExecutorDefinition, in_process_executor

EXECUTOR_ENV = "PIPELINE_EXECUTOR"
BROKER_ENV = "PIPELINE_CELERY_BROKER"
BACKEND_ENV = "PIPELINE_CELERY_BACKEND"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
EXECUTORS = ("in_process", "celery")

# Why each setting (the defaults of Celery and dagster-celery lose a step when a worker dies):
CELERY_SETTINGS: dict[str, Any] = {
    # A step's message is acknowledged when the step has ended, not when it starts: the broker hands the
    # step of a worker killed mid-step (SIGKILL, OOM, lost machine) to another worker.
    "task_acks_late": True,
    # ...also when only the worker's child process died (the parent sees it and requeues the message).
    "task_reject_on_worker_lost": True,
    # A worker that loses its broker connection keeps running its step (stopping it would fail the run:
    # the stopped attempt's failure is what the run reads). The broker hands the step out again, and the
    # copy waits for the items the first attempt holds, then serves its answers from the cache
    # (`pipeline.llm.ledger.Leases.claim`): nothing is paid twice.
    "worker_cancel_long_running_tasks_on_connection_loss": False,
    # A worker reserves only the step it runs: a waiting step is never stuck behind a long one elsewhere.
    "worker_prefetch_multiplier": 1,
    # Ride out a broker restart: workers reconnect for as long as it takes, a run's publish of its next
    # step is retried for about a minute, and RabbitMQ confirms each step message it has stored.
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,
    "task_publish_retry_policy": {"max_retries": 40, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2},
    "broker_transport_options": {
        "max_retries": 40,
        "interval_start": 0.5,
        "interval_step": 0.5,
        "interval_max": 2,
        "confirm_publish": True,
    },
    # Results in a database table of their own; create it on first use.
    "database_create_tables_at_setup": True,
    "result_extended": True,
    # Workers report task events, so `make prod-status` can count the steps each one ran.
    "worker_send_task_events": True,
    "task_send_sent_event": True,
}


def executor_kind(environ: Mapping[str, str] = os.environ) -> str:
    """`in_process` or `celery`, from `PIPELINE_EXECUTOR`; anything else is an error naming the variable."""
    kind = (environ.get(EXECUTOR_ENV) or "in_process").strip().lower().replace("-", "_")
    if kind not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={environ.get(EXECUTOR_ENV)!r}: expected one of {', '.join(EXECUTORS)}")
    return kind


def celery_broker(environ: Mapping[str, str] = os.environ) -> str:
    """The broker URL (RabbitMQ on this machine unless `PIPELINE_CELERY_BROKER` says otherwise)."""
    return environ.get(BROKER_ENV) or DEFAULT_BROKER


def celery_backend(environ: Mapping[str, str] = os.environ) -> str:
    """The result backend URL; required with the Celery executor (the broker's own `rpc://` loses results
    when the broker restarts)."""
    backend = environ.get(BACKEND_ENV)
    if not backend:
        raise ValueError(
            f"{BACKEND_ENV} is not set: the Celery executor keeps step results in a database, e.g. "
            "db+postgresql+psycopg2://user@host:5432/celery_results (`deploy/prod.py up` sets it)"
        )
    return backend


def executor_definition(environ: Mapping[str, str] = os.environ) -> ExecutorDefinition:
    """The executor the code location runs its jobs with."""
    if executor_kind(environ) == "in_process":
        return in_process_executor
    from dagster_celery import celery_executor

    celery_backend(environ)  # fail at load with a clear message, not in the first run
    # URLs are read from the environment when a run starts (never written into run config or the UI).
    return celery_executor.configured(
        {
            "broker": {"env": BROKER_ENV} if environ.get(BROKER_ENV) else DEFAULT_BROKER,
            "backend": {"env": BACKEND_ENV},
            "config_source": CELERY_SETTINGS,
        },
        name="celery",
    )
