"""The production shape on one machine: Dagster's webserver, daemon and a code server, on PostgreSQL.

    python deploy/prod.py up        # create missing databases, migrate the store, set pool limits, start all three
    python deploy/prod.py up --celery-workers 2   # ... plus two Celery workers; steps then run on them
    python deploy/prod.py demo      # register the sample site and run the main job through the run queue
    python deploy/prod.py status    # processes, queue, pools
    python deploy/prod.py env       # `export` lines for running `pipeline`/`dagster` against this deployment
    python deploy/prod.py down      # stop the three processes (and runs in flight)

(`make prod-up`, `make prod-demo`, `make prod-status`, `make prod-down`.) Settings come from the environment,
then `.env` in the repository root, then the local defaults in `DEFAULTS` (a PostgreSQL on 127.0.0.1:5432,
user postgres, as in CI). The same processes, settings and `deploy/dagster.yaml` are what a real deployment
runs; docs/deploy.md shows how they map onto Docker, Kubernetes or Celery.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import celery_workers  # beside this file

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
LOCATION = "content_pipeline"
MAIN_JOB = "content_pipeline"
POOLS = {"llm": "PIPELINE_LLM_POOL_LIMIT", "images": "PIPELINE_IMAGE_POOL_LIMIT"}
STATE_FILE = "prod-processes.json"
STARTUP_TIMEOUT_S = 240.0

DEFAULTS = {
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USERNAME": "postgres",
    "DAGSTER_PG_PASSWORD": "",
    "DAGSTER_PG_DB": "dagster",
    "PIPELINE_PG_DB": "pipeline",
    "DAGSTER_HOME": str(REPO / ".dagster" / "prod"),
    "DAGSTER_WEBSERVER_HOST": "127.0.0.1",
    "DAGSTER_WEBSERVER_PORT": "3000",
    "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
    "DAGSTER_CODE_SERVER_PORT": "4266",
    "PIPELINE_LLM_POOL_LIMIT": "4",
    "PIPELINE_IMAGE_POOL_LIMIT": "2",
    "PIPELINE_DESK_HOST": "127.0.0.1",
    "PIPELINE_DESK_PORT": "3001",
    # Not the embedded default's folder: the two stores would point at the same files.
    "PIPELINE_MEDIA_DIR": str(REPO / "data" / "local" / "prod-media"),
}


class DeployError(RuntimeError):
    """A problem the operator must fix; printed without a traceback."""


# -- settings -----------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines of a .env file (comments, blank lines, `export ` and quotes allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(env_file: Path) -> dict[str, str]:
    """Effective settings: defaults, overridden by the .env file, overridden by the environment."""
    settings = {**DEFAULTS, **read_env_file(env_file)}
    known = {*settings, "DATABASE_URL", *celery_workers.CELERY_VARIABLES}
    settings |= {key: value for key, value in os.environ.items() if key in known}
    if not settings.get("DATABASE_URL"):
        # The store defaults to its own database on the instance's server, with the same credentials.
        settings["DATABASE_URL"] = (
            f"postgresql+psycopg2://{_userinfo(settings)}@{settings['DAGSTER_PG_HOST']}:"
            f"{settings['DAGSTER_PG_PORT']}/{settings['PIPELINE_PG_DB']}"
        )
    return settings


def _userinfo(settings: Mapping[str, str]) -> str:
    user, password = quote(settings["DAGSTER_PG_USERNAME"], safe=""), settings["DAGSTER_PG_PASSWORD"]
    return f"{user}:{quote(password, safe='')}" if password else user


def instance_url(settings: Mapping[str, str], database: str | None = None) -> str:
    """SQLAlchemy URL of the Dagster instance's database (what deploy/dagster.yaml assembles), or of
    another database on the same server."""
    return (
        f"postgresql+psycopg2://{_userinfo(settings)}@{settings['DAGSTER_PG_HOST']}:"
        f"{settings['DAGSTER_PG_PORT']}/{database or settings['DAGSTER_PG_DB']}"
    )


def store_url(settings: Mapping[str, str]) -> str:
    """The store's URL, with the psycopg2 driver (as `pipeline.settings.database_url` resolves it)."""
    url = settings["DATABASE_URL"]
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url.removeprefix(bare)
    return url


def hide_password(url: str) -> str:
    """A URL fit for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of every process of the deployment (and, through the code server, of run workers)."""
    return {**os.environ, **settings, "DATABASE_URL": store_url(settings), "PYTHONUNBUFFERED": "1"}


# -- databases, instance, pools -----------------------------------------------------------------------


def ensure_database(url: str) -> str:
    """Create the database `url` names if it does not exist (local convenience); returns what was done."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError, ProgrammingError
    from sqlalchemy.pool import NullPool

    target = make_url(url)
    if target.get_backend_name() != "postgresql":
        raise DeployError(f"the production store must be PostgreSQL; DATABASE_URL is {hide_password(url)}")
    try:
        with create_engine(target, poolclass=NullPool).connect() as connection:
            connection.execute(text("SELECT 1"))
        return "exists"
    except OperationalError as error:
        if f'database "{target.database}" does not exist' not in str(error):
            raise DeployError(f"cannot connect to {hide_password(url)}: {_first_line(error)}") from error
    admin = create_engine(target.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    except (OperationalError, ProgrammingError) as error:
        raise DeployError(
            f"database {target.database!r} does not exist and could not be created ({_first_line(error)}); "
            "create it, or set the credentials of a role that may"
        ) from error
    return "created"


def prepare_home(settings: Mapping[str, str]) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml linked in (an operator's own dagster.yaml there is kept)."""
    home = Path(settings["DAGSTER_HOME"]).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and not config.is_symlink():
        config.symlink_to(DEPLOY / "dagster.yaml")
    return home


def open_instance(settings: Mapping[str, str]):
    """The deployment's Dagster instance; refuses one that is not on PostgreSQL."""
    from dagster import DagsterInstance

    os.environ.update(child_environment(settings))
    instance = DagsterInstance.from_config(settings["DAGSTER_HOME"])
    if "postgres" not in type(instance.run_storage).__module__:
        instance.dispose()
        raise DeployError(
            f"DAGSTER_HOME={settings['DAGSTER_HOME']} is not a PostgreSQL instance; point it at a folder without "
            "a dagster.yaml (deploy/dagster.yaml is linked in) or with one that uses dagster-postgres"
        )
    return instance


def set_pools(instance: Any, settings: Mapping[str, str]) -> dict[str, int]:
    """Create (or resize) each pool explicitly, as `dagster instance concurrency set POOL LIMIT` does."""
    limits = {pool: int(settings[variable]) for pool, variable in POOLS.items()}
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits


# -- processes ----------------------------------------------------------------------------------------


def with_celery(settings: dict[str, str], workers: int | None = None) -> int:
    """Complete `settings` for `workers` Celery workers (None: as many as the running deployment has);
    returns the number of workers."""
    if workers is None:
        workers = sum(service.startswith(celery_workers.WORKER_PREFIX) for service in read_state(_home(settings)))
    if workers < 0:
        raise DeployError(f"CELERY_WORKERS={workers}: expected 0 or more workers")
    celery_workers.configure(settings, workers, instance_url(settings, celery_workers.results_database(settings)))
    return workers


def _home(settings: Mapping[str, str]) -> Path:
    return Path(settings["DAGSTER_HOME"]).resolve()


def commands(settings: Mapping[str, str], workers: int = 0) -> dict[str, list[str]]:
    """The long-running processes, in start order (the review desk only starts when it has users)."""
    workspace = str(DEPLOY / "workspace.yaml")
    return {
        **celery_workers.worker_commands(BIN, settings, workers),
        "code-server": [
            str(BIN / "dagster"),
            "code-server",
            "start",
            "-m",
            "pipeline.definitions",
            "--location-name",
            LOCATION,
            "-h",
            settings["DAGSTER_CODE_SERVER_HOST"],
            "-p",
            settings["DAGSTER_CODE_SERVER_PORT"],
        ],
        "webserver": [
            str(BIN / "dagster-webserver"),
            "-w",
            workspace,
            "-h",
            settings["DAGSTER_WEBSERVER_HOST"],
            "-p",
            settings["DAGSTER_WEBSERVER_PORT"],
        ],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
        "desk": [
            str(BIN / "pipeline"),
            "desk",
            "--no-first-user",  # never a generated password in a log file: users come from the settings
            "--host",
            settings["PIPELINE_DESK_HOST"],
            "--port",
            settings["PIPELINE_DESK_PORT"],
        ],
    }


def desk_has_users(settings: Mapping[str, str]) -> bool:
    """Whether the desk has anyone to sign in (`PIPELINE_DESK_USERS` or a users file); else it is not started."""
    from pipeline.desk.config import DeskConfig

    return bool(DeskConfig.from_environment(child_environment(settings)).users)


def read_state(home: Path) -> dict[str, dict[str, Any]]:
    """Processes started by `up` (service -> pid, log), or {}."""
    path = home / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def running(pid: int) -> bool:
    """Whether `pid` is alive and still leads the process group `up` gave it (not a recycled pid)."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def stop_processes(state: Mapping[str, Mapping[str, Any]], timeout: float = 30.0) -> list[str]:
    """SIGTERM each started process group (daemon first), SIGKILL what is left after `timeout`."""
    stopped = []
    for service in reversed(list(state)):
        pid = int(state[service]["pid"])
        if not running(pid):
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if running(pid):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)
        stopped.append(service)
    return stopped


def _reap(pid: int) -> None:
    """Collect a child's exit status (when `up` and `down` are one process, as in tests)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _log_tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def wait_for(what: str, ready: Callable[[], bool], state: Mapping[str, Mapping[str, Any]], timeout: float) -> None:
    """Poll `ready` until true; fail early (with the log) if a started process died."""
    deadline = time.monotonic() + timeout
    while True:
        for service, entry in state.items():
            if not running(int(entry["pid"])):
                raise DeployError(f"{service} exited while waiting for {what}:\n{_log_tail(Path(entry['log']))}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise DeployError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def graphql(settings: Mapping[str, str], query: str) -> dict[str, Any]:
    """POST a GraphQL query to the webserver; returns `data`."""
    url = f"http://{settings['DAGSTER_WEBSERVER_HOST']}:{settings['DAGSTER_WEBSERVER_PORT']}/graphql"
    request = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def location_loaded(settings: Mapping[str, str]) -> bool:
    """Whether the webserver has loaded the code location from the code server; raises on a load error."""
    entries = graphql(settings, LOCATION_QUERY)["workspaceOrError"].get("locationEntries", [])
    for entry in entries:
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise DeployError(f"the code location failed to load: {loaded.get('message')}")
            return loaded.get("__typename") is not None
    return False


def daemon_healthy(settings: Mapping[str, str]) -> bool:
    """Whether every daemon the instance needs (run queue, sensors, schedules...) has a fresh heartbeat."""
    instance = open_instance(settings)
    try:
        statuses = instance.get_daemon_statuses()
        return bool(statuses) and all(status.healthy for status in statuses.values())
    finally:
        instance.dispose()


# -- commands -----------------------------------------------------------------------------------------


def up(settings: dict[str, str], workers: int) -> int:
    """Start the production shape (with `workers` Celery workers) and wait until it is ready; a no-op when
    it already runs so."""
    home = prepare_home(settings)
    running_workers = with_celery(dict(settings))
    workers = with_celery(settings, workers)
    databases = [("Dagster instance", instance_url(settings)), ("pipeline store", store_url(settings))]
    backend = settings.get("PIPELINE_CELERY_BACKEND", "")
    if backend.startswith("db+postgresql"):
        databases.append(("Celery results", backend.removeprefix("db+")))
    for label, url in databases:
        print(f"{label}: {hide_password(url)} ({ensure_database(url)})")
    from pipeline.store import Store

    store = Store(store_url(settings))  # migrate once here, before runs start
    store.engine.dispose()
    instance = open_instance(settings)
    try:
        limits = set_pools(instance, settings)  # also when running: a changed limit applies at once
    finally:
        instance.dispose()
    print("Pools: " + ", ".join(f"{pool}={limit}" for pool, limit in limits.items()))

    if workers and (problem := celery_workers.broker_problem(settings)):
        broker = hide_password(settings["PIPELINE_CELERY_BROKER"])
        raise DeployError(
            f"cannot reach the Celery broker at {broker} ({problem}); start it or set PIPELINE_CELERY_BROKER"
        )
    state = read_state(home)
    if state and all(running(int(entry["pid"])) for entry in state.values()):
        if running_workers != workers:
            raise DeployError(
                f"already running with {running_workers} Celery workers; `make prod-down` first, then "
                f"`make prod-up CELERY_WORKERS={workers}`"
            )
        print(f"Already running (DAGSTER_HOME={home}); `make prod-down` stops it.")
        return 0
    stop_processes(state)  # leftovers of a half-dead earlier start

    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    environment = child_environment(settings)
    state = {}
    services = commands(settings, workers)
    if not desk_has_users(settings):
        del services["desk"]
    try:
        for service, command in services.items():
            log = logs / f"{service}.log"
            with log.open("ab") as output:
                process = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=environment,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: `down` stops it and its children
                )
            state[service] = {"pid": process.pid, "log": str(log), "command": command}
            (home / STATE_FILE).write_text(json.dumps(state, indent=2))
            if service == "code-server":
                code_server = partial(
                    port_open, settings["DAGSTER_CODE_SERVER_HOST"], int(settings["DAGSTER_CODE_SERVER_PORT"])
                )
                wait_for("the code server", code_server, state, STARTUP_TIMEOUT_S)
            if service == "desk":
                desk = partial(port_open, settings["PIPELINE_DESK_HOST"], int(settings["PIPELINE_DESK_PORT"]))
                wait_for("the review desk", desk, state, STARTUP_TIMEOUT_S)
        wait_for("the webserver", lambda: bool(graphql(settings, "{ version }")), state, STARTUP_TIMEOUT_S)
        wait_for("the code location", lambda: location_loaded(settings), state, STARTUP_TIMEOUT_S)
        wait_for("the daemon", lambda: daemon_healthy(settings), state, STARTUP_TIMEOUT_S)
        if workers:
            nodes = {f"worker{i}@{socket.gethostname()}" for i in range(1, workers + 1)}
            ready = lambda: nodes <= set(celery_workers.live_workers(settings))  # noqa: E731
            wait_for(f"{workers} Celery workers on the broker", ready, state, STARTUP_TIMEOUT_S)
    except BaseException:
        stop_processes(state)
        (home / STATE_FILE).unlink(missing_ok=True)
        raise
    web = f"http://{settings['DAGSTER_WEBSERVER_HOST']}:{settings['DAGSTER_WEBSERVER_PORT']}"
    print(f"Dagster UI: {web}  (webserver, daemon and code server on PostgreSQL; logs in {logs})")
    if workers:
        print(
            f"Executor: Celery, {workers} workers ({settings['PIPELINE_CELERY_CONCURRENCY']} step(s) at a time "
            f"each) on {hide_password(settings['PIPELINE_CELERY_BROKER'])}"
        )
    if "desk" in state:
        print(f"Review desk: http://{settings['PIPELINE_DESK_HOST']}:{settings['PIPELINE_DESK_PORT']}/")
    else:
        print("Review desk: not started, no users (set PIPELINE_DESK_USERS or `pipeline desk add-user NAME`)")
    print("Next: `make prod-demo` runs the sample site through the run queue; `make prod-down` stops everything.")
    return 0


def down(settings: dict[str, str]) -> int:
    """Stop what `up` started."""
    home = Path(settings["DAGSTER_HOME"]).resolve()
    stopped = stop_processes(read_state(home))
    (home / STATE_FILE).unlink(missing_ok=True)
    print(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")
    return 0


def status(settings: dict[str, str]) -> int:
    """Processes, run queue and pools of the deployment."""
    from dagster import DagsterRunStatus, RunsFilter

    home = _home(settings)
    state = read_state(home)
    workers = with_celery(settings)
    for service in commands(settings, workers):
        entry = state.get(service)
        alive = entry is not None and running(int(entry["pid"]))
        print(f"{service:12} {'running (pid ' + str(entry['pid']) + ')' if alive else 'stopped'}")
    instance = open_instance(settings)
    try:
        for run_status in (DagsterRunStatus.QUEUED, DagsterRunStatus.STARTED):
            count = instance.get_runs_count(RunsFilter(statuses=[run_status]))
            print(f"runs {run_status.value.lower():8} {count}")
        for pool in POOLS:
            info = instance.event_log_storage.get_concurrency_info(pool)
            print(f"pool {pool:8} limit {info.slot_count}, in use {info.active_slot_count}")
        for line in celery_workers.describe(settings, instance):
            print(line)
    finally:
        instance.dispose()
    return 0


def demo(settings: dict[str, str], site: str, keywords: Path, name: str, timeout: float) -> int:
    """Register a site, run the main job for it through the run queue, wait, and print what it produced."""
    from dagster_graphql import DagsterGraphQLClient

    from pipeline.cli import main as pipeline_cli

    with_celery(settings)
    os.environ.update(child_environment(settings))
    if pipeline_cli(["sites", "add", site, "--name", name, "--keywords", str(keywords)]) != 0:
        return 1
    client = DagsterGraphQLClient(
        settings["DAGSTER_WEBSERVER_HOST"], port_number=int(settings["DAGSTER_WEBSERVER_PORT"])
    )
    run_id = client.submit_job_execution(MAIN_JOB, tags={"dagster/partition": site})
    print(f"Submitted {MAIN_JOB} for {site}: run {run_id}")
    final = wait_for_run(client, run_id, timeout)
    if settings["PIPELINE_EXECUTOR"] == "celery":
        instance = open_instance(settings)
        try:
            per_worker = celery_workers.steps_per_worker(instance, [run_id])
        finally:
            instance.dispose()
        print("Steps per Celery worker: " + (", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())) or "none"))
    print()
    pipeline_cli(["status", "--site", site])
    return 0 if final == "SUCCESS" else 1


def wait_for_run(client: Any, run_id: str, timeout: float) -> str:
    """Poll a run until it ends, printing each status it passes through; returns the final one."""
    seen = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.get_run_status(run_id).value
        if current != seen:
            print(f"  {time.strftime('%H:%M:%S')} {current}", flush=True)
            seen = current
        if current in {"SUCCESS", "FAILURE", "CANCELED"}:
            return current
        time.sleep(1.0)
    raise DeployError(f"run {run_id} did not finish within {timeout:.0f} s")


def print_env(settings: dict[str, str]) -> int:
    """`export` lines: `eval "$(python deploy/prod.py env)"` points a shell's pipeline/dagster at production."""
    exported = {**settings, "DATABASE_URL": store_url(settings)}
    for key in sorted(exported):
        value = exported[key].replace("'", "'\\''")
        print(f"export {key}='{value}'")
    return 0


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="deploy/prod.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=REPO / ".env", help="settings file (default: .env)")
    commands_ = parser.add_subparsers(dest="command", required=True)
    up_parser = commands_.add_parser("up", help="start webserver, daemon and code server on PostgreSQL")
    up_parser.add_argument(
        "--celery-workers",
        type=int,
        default=int(os.environ.get("CELERY_WORKERS") or 0),
        help="Celery workers to start; steps then run on them (default: $CELERY_WORKERS or 0, in-process)",
    )
    commands_.add_parser("down", help="stop them")
    commands_.add_parser("status", help="processes, queue and pools")
    commands_.add_parser("env", help="print export lines for this deployment's settings")
    demo_parser = commands_.add_parser("demo", help="register a site and run the main job through the queue")
    demo_parser.add_argument("--site", default="sample")
    demo_parser.add_argument("--name", default="Home Barista Guide")
    demo_parser.add_argument("--keywords", type=Path, default=REPO / "data" / "sample" / "keywords.csv")
    demo_parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the run")
    args = parser.parse_args(argv)
    settings = load_settings(args.env_file)
    try:
        if args.command == "up":
            return up(settings, args.celery_workers)
        if args.command == "down":
            return down(settings)
        if args.command == "status":
            return status(settings)
        if args.command == "env":
            with_celery(settings)
            return print_env(settings)
        return demo(settings, args.site, args.keywords.resolve(), args.name, args.timeout)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
