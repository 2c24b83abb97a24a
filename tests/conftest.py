"""Shared fixtures: an isolated store, media folder and Dagster instance per test (or per module).

The suite runs on one backend per pass, chosen by `PIPELINE_TEST_BACKEND`:

- `sqlite` (default, the embedded default): a SQLite file and an ephemeral Dagster instance per `Env`.
- `postgresql`: each `Env` gets its own PostgreSQL database on the server `TEST_DATABASE_URL` names
  (default: user postgres on 127.0.0.1:5432), holding the store (schema `public`) and the Dagster
  instance (schema `dagster`). It is cloned from a template migrated once per session, which takes ~0.1 s
  instead of building Dagster's schema per test (~1.6 s), and dropped when the test (or module) ends.

Tests marked `postgres` need PostgreSQL and run in the PostgreSQL pass only. When the PostgreSQL pass finds
no server it fails if PostgreSQL is required (`PIPELINE_REQUIRE_POSTGRES=1` or `CI` set, as in `.ci/run`)
and is skipped, saying so, on a developer machine.
"""

from __future__ import annotations

import itertools
import os
import secrets
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pytest
import yaml
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from assets import ALL_ASSETS
from pipeline import models
from pipeline.cli import main as pipeline_main
from pipeline.store import Store
from resources import LLMResource, MediaResource, StoreResource
from tests import browser as browser_helpers

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parents[1]
SAMPLE_KEYWORDS = REPO / "data" / "sample" / "keywords.csv"
SIX_ASSETS = ["keywords", "clusters", "ideas", "content", "image_prompts", "images"]
TABLES = [
    models.Keyword,
    models.Cluster,
    models.Idea,
    models.Content,
    models.ContentVariant,
    models.ImagePrompt,
    models.Image,
    models.ModelCall,
]

BACKEND = os.environ.get("PIPELINE_TEST_BACKEND", "sqlite")
BACKENDS = ("sqlite", "postgresql")
DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DAGSTER_SCHEMA = "dagster"


def postgres_required() -> bool:
    """Whether a missing PostgreSQL must fail the run (CI) rather than skip it (a developer machine)."""
    flag = os.environ.get("PIPELINE_REQUIRE_POSTGRES", "").lower() in {"1", "true", "yes"}
    return flag or os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class PostgresServer:
    """The PostgreSQL server tests run on: creates this session's databases, and drops them all at the end."""

    def __init__(self, url: str):
        parsed = make_url(url)
        if parsed.drivername in {"postgresql", "postgres"}:
            parsed = parsed.set(drivername="postgresql+psycopg2")  # psycopg 3 is not installed
        self.url: URL = parsed
        # Unique per session, so two sessions on one server (or a crashed earlier one) never collide.
        self.prefix = f"pipeline_test_{os.getpid()}_{secrets.token_hex(3)}"
        self.template: str | None = None
        self._admin = create_engine(
            parsed, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5}
        )
        self._numbers = itertools.count()

    @property
    def display_url(self) -> str:
        """The server URL without its password."""
        return self.url.render_as_string(hide_password=True)

    def check(self) -> None:
        """Raise `OperationalError` unless the server answers."""
        with self._admin.connect() as connection:
            connection.execute(text("SELECT 1"))

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg2) of one database on this server."""
        return self.url.set(database=database).render_as_string(hide_password=False)

    def create_database(self, *, template: str | None = None) -> str:
        """A new, empty database (or a copy of `template`); returns its name."""
        name = f"{self.prefix}_{next(self._numbers)}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
            # Tests check what clients see, not durability across a server crash: not waiting for each
            # commit's WAL flush makes the PostgreSQL pass about twice as fast.
            connection.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing any connection a test (or a killed process) left open."""
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def dagster_config(self, database: str, schema: str | None = DAGSTER_SCHEMA) -> dict[str, Any]:
        """`dagster.yaml` content for an instance stored in `database` (in `schema`, when given)."""
        postgres_db: dict[str, Any] = {
            "hostname": self.url.host or "127.0.0.1",
            "port": self.url.port or 5432,
            "username": self.url.username or "postgres",
            "password": self.url.password or "",
            "db_name": database,
            "scheme": "postgresql+psycopg2",
        }
        if schema:
            postgres_db["params"] = {"options": f"-csearch_path={schema}"}
        return {"storage": {"postgres": {"postgres_db": postgres_db}}, "telemetry": {"enabled": False}}

    def instance(self, database: str, home: Path) -> dg.DagsterInstance:
        """A Dagster instance stored in `database` (schema `dagster`), with `home` as its DAGSTER_HOME."""
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(yaml.safe_dump(self.dagster_config(database)))
        return dg.DagsterInstance.from_config(str(home))

    def prepare_template(self, scratch: Path) -> None:
        """Build the database every `Env` is cloned from: store migrated, Dagster's schema created."""
        name = self.create_database()
        store = Store(self.url_for(name))  # runs the same Alembic migrations as SQLite
        store.engine.dispose()
        with create_engine(self.url_for(name), poolclass=NullPool).connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{DAGSTER_SCHEMA}"'))
            connection.commit()
        self.instance(name, scratch).dispose()
        self.template = name  # a template must have no open connections: everything above is closed

    def create_env_database(self) -> str:
        """A database for one `Env`, copied from the template."""
        assert self.template, "prepare_template() first"
        return self.create_database(template=self.template)

    def close(self) -> None:
        """Drop every database this session created."""
        with self._admin.connect() as connection:
            names = connection.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"), {"prefix": f"{self.prefix}%"}
            ).scalars()
            for name in sorted(names, key=lambda n: n == self.template):  # the template last
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


_server: PostgresServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    # Never touch the developer's own store, media or Dagster home from tests.
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("OPENAI_API_KEY", None)
    config.addinivalue_line(
        "markers", "postgres: needs PostgreSQL; runs in the PostgreSQL pass (PIPELINE_TEST_BACKEND=postgresql)"
    )
    config.addinivalue_line(
        "markers",
        "backend_independent: uses no store and no Dagster instance (loopback servers, schemas, Helm values, a "
        "real WordPress or browser alone); runs in the SQLite pass only, as a second pass would repeat it exactly",
    )


def pytest_report_header(config: pytest.Config) -> str:
    where = f" on {_server.display_url}" if _server else ""
    return f"pipeline store and Dagster instance backend: {BACKEND}{where}"


def pytest_sessionstart(session: pytest.Session) -> None:
    global _server
    if BACKEND not in BACKENDS:
        pytest.exit(f"PIPELINE_TEST_BACKEND={BACKEND!r}: expected one of {', '.join(BACKENDS)}", returncode=4)
    if BACKEND != "postgresql":
        return
    server = PostgresServer(os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL)
    try:
        server.check()
    except OperationalError as error:
        reason = f"PostgreSQL pass: no PostgreSQL at {server.display_url} ({str(error).strip().splitlines()[0]})"
        if postgres_required():
            pytest.exit(f"{reason}; PostgreSQL is required here (PIPELINE_REQUIRE_POSTGRES/CI): failing", 1)
        pytest.exit(f"{reason}; SKIPPED. Start PostgreSQL or set TEST_DATABASE_URL to run it.", 0)
    with tempfile.TemporaryDirectory(prefix="pg-template-home-") as scratch:
        server.prepare_template(Path(scratch))
    _server = server


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _server is not None:
        _server.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Browser tests last: once the session's Playwright is open, its sync API leaves an event loop marked as
    # running in the main thread, where `asyncio.run()` (the LLM engine) would then fail (tests/browser.py).
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))
    if BACKEND == "postgresql":
        repeated = [item for item in items if "backend_independent" in item.keywords]
        if repeated:
            config.hook.pytest_deselected(items=repeated)
            items[:] = [item for item in items if "backend_independent" not in item.keywords]
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass (make test-postgres)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


class Env:
    """One isolated pipeline environment: store, media folder, resources and a Dagster instance.

    On SQLite: a store file under `root` and an ephemeral instance. On PostgreSQL: a database of its own
    holding both. Call `close()` when done (the fixtures do).
    """

    def __init__(self, root: Path):
        self.root = root
        self.media = root / "media"
        self.database: str | None = None
        if BACKEND == "postgresql":
            assert _server is not None
            self.database = _server.create_env_database()
            self.url = _server.url_for(self.database)
            self.instance = _server.instance(self.database, root / "dagster_home")
        else:
            self.url = f"sqlite:///{root / 'pipeline.db'}"
            self.instance = dg.DagsterInstance.ephemeral()
        self.store = Store(self.url)
        self.resources = {
            "store": StoreResource(database_url=self.url),
            "llm": LLMResource(image_size="256x256"),
            "media": MediaResource(root=str(self.media)),
        }

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return BACKEND

    def add_site(self, slug: str = "sample", keywords: Path = SAMPLE_KEYWORDS, name: str = "Home Barista Guide"):
        """Register a site in the store and its partition in the instance."""
        site = self.store.upsert_site(slug, name, str(keywords))
        if not self.instance.has_dynamic_partition("sites", slug):
            self.instance.add_dynamic_partitions("sites", [slug])
        return site

    def materialize(
        self, slug: str = "sample", selection: list[str] | None = None, **kwargs
    ) -> dg.ExecuteInProcessResult:
        """Materialize the six chain assets (or `selection`, which may name `publications`) for one site."""
        return dg.materialize(
            ALL_ASSETS,
            selection=selection or SIX_ASSETS,
            partition_key=slug,
            resources=self.resources,
            instance=self.instance,
            **kwargs,
        )

    def row_counts(self) -> dict[str, int]:
        """Rows per table, for idempotency checks."""
        with self.store.transaction() as session:
            return {m.__tablename__: session.execute(select(func.count()).select_from(m)).scalar_one() for m in TABLES}

    def database_bytes(self) -> bytes:
        """All the store holds, as bytes (to prove something was never written): the SQLite files, or
        every row of every table on PostgreSQL."""
        if self.database is None:
            path = self.root / "pipeline.db"
            files = (path, path.with_name(path.name + "-wal"))
            return b"".join(p.read_bytes() for p in files if p.exists())
        with self.store.engine.connect() as connection:
            rows = [
                repr(tuple(row))
                for table in models.Base.metadata.sorted_tables
                for row in connection.execute(table.select())
            ]
        return "\n".join(rows).encode()

    def dagster_home(self) -> Path:
        """A DAGSTER_HOME for `dagster` commands run in a subprocess.

        On PostgreSQL it is this environment's own instance. On SQLite (whose in-process instance is
        ephemeral) it is a persistent instance of its own, holding the same site partitions.
        """
        home = self.root / "dagster_home"
        if self.database is not None:
            return home
        if not (home / "dagster.yaml").exists():
            home.mkdir(parents=True, exist_ok=True)
            config = {"storage": {"sqlite": {"base_dir": str(home)}}, "telemetry": {"enabled": False}}
            (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            known = set(instance.get_dynamic_partitions("sites"))
            missing = [key for key in self.instance.get_dynamic_partitions("sites") if key not in known]
            if missing:
                instance.add_dynamic_partitions("sites", missing)
        return home

    def subprocess_environment(self, **extra: str) -> dict[str, str]:
        """Environment variables that point `pipeline` and `dagster` commands at this environment."""
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "PIPELINE_MEDIA_DIR": str(self.media),
            "DAGSTER_HOME": str(self.dagster_home()),
            **extra,
        }

    def close(self) -> None:
        """Release connections and, on PostgreSQL, drop this environment's database."""
        self.store.engine.dispose()
        self.instance.dispose()
        if self.database is not None and _server is not None:
            _server.drop_database(self.database)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The PostgreSQL server of this session (tests using it are marked `postgres`)."""
    if _server is None:
        pytest.fail("this test needs PostgreSQL: mark it `postgres` so it runs in the PostgreSQL pass only")
    return _server


@pytest.fixture
def cli(env: Env, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """`pipeline ...` in-process (`pipeline.cli.main`) against this test environment's store; returns the exit code."""
    monkeypatch.setenv("DATABASE_URL", env.url)

    def run(*argv: str) -> int:
        return pipeline_main(list(argv))

    return run


@pytest.fixture
def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty keyword inbox (and data folder) of this test, set in the environment."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    monkeypatch.setenv("PIPELINE_INBOX_DIR", str(folder))
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path / "data"))
    return folder


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A fresh, empty environment."""
    environment = Env(tmp_path)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, dg.ExecuteInProcessResult]]:
    """The sample site's full chain, run once per test module."""
    env = Env(tmp_path_factory.mktemp("sample"))
    env.add_site()
    result = env.materialize()
    assert result.success
    yield env, result
    env.close()


# A real WordPress (tests/wordpress_server.py); imported here so any test module can ask for `wordpress`.
from tests.wordpress_server import LocalWordPress, running_wordpress  # noqa: E402


@pytest.fixture(scope="module")
def wordpress() -> Iterator[LocalWordPress]:
    """A freshly installed WordPress per test module (~1 s to start), removed afterwards.

    Skips when php, Debian's WordPress or MariaDB is missing; fails instead when `PIPELINE_REQUIRE_WORDPRESS=1`.
    """
    yield from running_wordpress()


# Browser tests (tests/browser.py): Debian's Chromium driven by Playwright's sync API.
_PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keeps each phase's report on the item, so the `page` fixture knows at teardown whether the test failed.
    report = yield
    item.stash.setdefault(_PHASE_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session (`/usr/bin/chromium` or `PIPELINE_CHROMIUM`, never a download).

    Skips when Chromium (or Playwright) is missing; fails instead when `PIPELINE_REQUIRE_BROWSER=1`.
    """
    reason = browser_helpers.browser_available()
    if reason is not None:
        browser_helpers.unavailable(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = browser_helpers.launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies or storage from other tests); a screenshot of it is saved
    to the artefacts folder (`PIPELINE_TEST_ARTIFACTS` or build/test-artifacts/) when the test fails."""
    failed_name = "FAILED-" + browser_helpers.artifact_name(request.node.nodeid)
    (browser_helpers.artifacts_dir() / f"{failed_name}.png").unlink(missing_ok=True)  # from an earlier run
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    reports = request.node.stash.get(_PHASE_REPORTS, {})
    if any(report.failed for report in reports.values()):
        try:
            path = browser_helpers.screenshot(tab, failed_name)
            print(f"screenshot of the failed test's page: {path}")
        except Exception as error:  # a crashed page must not hide the test's own failure
            print(f"no screenshot of the failed test's page: {error}")
    context.close()
