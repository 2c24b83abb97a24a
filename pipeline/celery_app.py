"""The Celery app of the pipeline's workers: `celery -A pipeline.celery_app worker` (`make prod-up CELERY_WORKERS=N`).

It is dagster-celery's own app and step task (`execute_plan`), built with the settings the executor uses
(`pipeline.executor.CELERY_SETTINGS`), plus one thing of ours: a worker that cannot reach the store takes
no steps. It stops consuming (and says why in its log) until the store answers again, and a step it has
already received goes back to the queue for another worker, untouched.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutdown
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipeline import settings
from pipeline.executor import CELERY_SETTINGS, celery_backend, celery_broker

QUEUE = "dagster"
HEALTH_INTERVAL_S = float(os.environ.get("PIPELINE_CELERY_HEALTH_S") or 10.0)
CONNECT_TIMEOUT_S = 5

log = logging.getLogger("pipeline.celery")


def store_problem() -> str | None:
    """Why the store cannot be reached from this process (no password in it), or None when it answers."""
    url = make_url(settings.database_url())
    arguments = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=arguments)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except Exception as error:  # any failure to connect counts: the step could not be stored
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"cannot reach the store at {url.render_as_string(hide_password=True)}: {first}"
    finally:
        engine.dispose()


class StoreCheckedTask(Task):  # type: ignore[misc]  # celery ships no types
    """A step task that first checks the store; without it the step goes back to the queue."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        problem = store_problem()
        if problem:
            log.error("worker %s: %s; the step goes back to the queue", self.request.hostname, problem)
            raise Reject(problem, requeue=True)
        return super().__call__(*args, **kwargs)


# dagster-celery's functions carry no annotations.
_executor = CeleryExecutor.for_cli(  # type: ignore[no-untyped-call]
    broker=celery_broker(), backend=celery_backend(), config_source=CELERY_SETTINGS
)
app = make_app(_executor.app_args())  # type: ignore[no-untyped-call]
execute_plan = create_task(app, base=StoreCheckedTask)  # type: ignore[no-untyped-call]


class StoreWatch(threading.Thread):
    """In a worker's main process: stop consuming steps while the store is unreachable, resume after."""

    def __init__(self, hostname: str):
        super().__init__(name="store-watch", daemon=True)
        self.hostname = hostname
        self.stopped = threading.Event()
        self.consuming = True

    def run(self) -> None:
        while True:
            problem = store_problem()
            if problem and self.consuming:
                log.error("worker %s: %s; it takes no steps until the store answers", self.hostname, problem)
                app.control.cancel_consumer(QUEUE, destination=[self.hostname])
                self.consuming = False
            elif not problem and not self.consuming:
                log.warning("worker %s: the store answers again; taking steps", self.hostname)
                app.control.add_consumer(QUEUE, destination=[self.hostname])
                self.consuming = True
            if self.stopped.wait(HEALTH_INTERVAL_S):
                return


_watch: StoreWatch | None = None


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_watch(sender: Any = None, **_: Any) -> None:
    global _watch
    _watch = StoreWatch(sender.hostname)
    _watch.start()


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_watch(**_: Any) -> None:
    if _watch:
        _watch.stopped.set()
