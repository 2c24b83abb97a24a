"""The store's foundation: engines, migrations, transactions and the helpers every aggregate shares.

`StoreBase` opens the database (one engine per URL per process) and upgrades its schema with Alembic; the
aggregate mixins of this package add their reads and writes on top of it. Writes are idempotent by
construction: rows are inserted on their natural key with `ON CONFLICT DO NOTHING` (or `DO UPDATE` where
the input is the source of truth), and each item's rows are written in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Engine, Result, Select, Subquery, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from pipeline.models import Base, Content, ContentVariant

MIGRATIONS_DIR = Path(__file__).parents[1] / "migrations"

Row = TypeVar("Row", bound=Base)
# `insert` of the session's dialect: both have `ON CONFLICT` (`on_conflict_do_nothing`, `…_do_update`).
DialectInsert = Callable[[Any], postgresql.Insert | sqlite.Insert]


class UnknownSite(LookupError):
    """Raised when a site slug is not registered in the store."""

    def __init__(self, slug: str):
        super().__init__(f"site '{slug}' is not registered; add it with: pipeline sites add {slug} --keywords FILE")
        self.slug = slug


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_lock = threading.Lock()

# PostgreSQL advisory-lock keys (namespace, id) that concurrent runs and processes serialise on.
# SQLite needs none: it admits one writer at a time.
_MIGRATION_LOCK = (7316, 0)
_SITE_LOCK_NAMESPACE = 7317


def _engine_for(url: str) -> Engine:
    """One engine per URL per process; SQLite gets WAL, a busy timeout and foreign keys."""
    with _lock:
        if url in _engines:
            return _engines[url]
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
        return engine


class StoreBase:
    """Typed access to the pipeline database at `url`: connection, schema and transactions."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self.engine = _engine_for(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Upgrade the schema to the newest Alembic revision (once per URL per process)."""
        if self.url in _migrated:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Runs starting at once on a new (or older) database would race to create the same tables;
                # the lock makes the others wait, then find the schema already at head.
                connection.execute(select(func.pg_advisory_xact_lock(*_MIGRATION_LOCK)))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        _migrated.add(self.url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def _insert(self, session: Session) -> DialectInsert:
        """`INSERT` with `ON CONFLICT` support for the session's dialect."""
        return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert

    def _row(self, model: type[Row], row_id: int) -> Row:
        """One row of `model` by primary key, or `LookupError` naming the missing row."""
        with self._sessions() as session:
            found = session.get(model, row_id)
        if found is None:
            raise LookupError(f"no {model.__tablename__} row with id {row_id}")
        return found

    def _insert_set_once(
        self,
        site_id: int,
        model: type[Base],
        owner: InstrumentedAttribute[int],
        owner_id: int,
        values: Sequence[Mapping[str, Any]],
        natural_key: Sequence[InstrumentedAttribute[Any]],
    ) -> int:
        """Insert the set of rows that belongs to one owner (a cluster's ideas, a variant's image prompts) on
        their natural key, unless the owner has rows already; returns rows added.

        If another run stored a set first, nothing is added (0), so two model answers are never mixed.
        """
        if not values:
            return 0
        with self.transaction() as session:
            self._lock_site(session, site_id)
            if session.scalar(select(owner).where(owner == owner_id).limit(1)) is not None:
                return 0
            insert = self._insert(session)
            result = session.execute(insert(model).values(values).on_conflict_do_nothing(index_elements=natural_key))
            return affected(result)

    def _lock_site(self, session: Session, site_id: int) -> None:
        """Serialise this transaction with other writers of the same site, until it ends (PostgreSQL).

        For read-then-write steps that row constraints alone cannot make safe when two runs touch one site.
        Taken before any row lock, so writers queue instead of deadlocking. SQLite has one writer anyway.
        """
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(_SITE_LOCK_NAMESPACE, site_id)))


def affected(result: Result[Any]) -> int:
    """Rows an `INSERT`, `UPDATE` or `DELETE` changed (SQLAlchemy types `Session.execute` as a plain `Result`)."""
    return cast("CursorResult[Any]", result).rowcount


def table(model: type[Base]) -> Table:
    """A mapped class's table, for Core bulk statements (declared as a `FromClause` on the base)."""
    return cast(Table, model.__table__)


def _current_versions() -> Subquery:
    """Each article's highest version, as a subquery of (`content_id`, `version`)."""
    return (
        select(ContentVariant.content_id, func.max(ContentVariant.version).label("version"))
        .group_by(ContentVariant.content_id)
        .subquery()
    )


def _current_variants() -> Select[ContentVariant]:
    """Variants of each article's highest version (joined to `content` for filtering by site)."""
    newest = _current_versions()
    return (
        select(ContentVariant)
        .join(Content, Content.id == ContentVariant.content_id)
        .join(
            newest,
            (newest.c.content_id == ContentVariant.content_id) & (newest.c.version == ContentVariant.version),
        )
    )


_IN_CHUNK = 500  # ids per `IN (...)`: well inside SQLite's limit on bound parameters


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
