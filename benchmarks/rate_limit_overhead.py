"""What one acquire of the store-shared rate limiter costs, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/rate_limit_overhead.py [POSTGRESQL_URL]

2,000 `RateLimiter.acquire` calls (one request and 500 tokens each) under limits far above what they
take, so none waits: what is timed is the store round trip (one transaction: the upsert locking both
buckets, the update taking from them) and the hop to a worker thread. Also timed: `Store.take_rate`
called directly (no thread hop). Printed per backend: median and 95th percentile in µs. PostgreSQL runs
in a scratch database created on the server of `POSTGRESQL_URL` (default: user postgres on
127.0.0.1:5432), dropped at the end; without a server only SQLite is measured.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from pipeline.llm.limits import RateLimiter  # noqa: E402
from pipeline.store import Store  # noqa: E402

ACQUIRES = 2_000
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


def measure(store: Store) -> tuple[list[float], list[float]]:
    """Seconds per `acquire` and per direct `take_rate`, `ACQUIRES` of each (after a warm-up)."""
    limiter = RateLimiter(store, "bench|gpt-5", 10**9, 10**12, burst_seconds=60.0)
    limits = {"bench|direct|requests": 1e9, "bench|direct|tokens": 1e12}

    async def acquires() -> list[float]:
        for _ in range(50):
            await limiter.acquire(500)
        timings = []
        for _ in range(ACQUIRES):
            started = time.perf_counter()
            await limiter.acquire(500)
            timings.append(time.perf_counter() - started)
        return timings

    timed = asyncio.run(acquires())
    direct = []
    for _ in range(ACQUIRES):
        started = time.perf_counter()
        store.take_rate({"bench|direct|requests": 1, "bench|direct|tokens": 500}, limits, 60.0)
        direct.append(time.perf_counter() - started)
    return timed, direct


def report(backend: str, timed: list[float], direct: list[float]) -> None:
    for label, values in (("acquire (thread hop + store)", timed), ("take_rate (store only)", direct)):
        ordered = sorted(values)
        median, p95 = statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.95)] * 1e6
        print(f"{backend:<10} {label:<30} median {median:7.0f} µs   p95 {p95:7.0f} µs")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(f"sqlite:///{Path(scratch) / 'bench.db'}")
        report("sqlite", *measure(store))
        store.engine.dispose()

    server = make_url(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_POSTGRES)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = "pipeline_rate_limit_bench"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        print("postgresql: no server, not measured")
        return
    try:
        store = Store(server.set(database=name).render_as_string(hide_password=False))
        report("postgresql", *measure(store))
        store.engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
