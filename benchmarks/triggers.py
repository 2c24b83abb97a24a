"""Benchmark the `metric_triggers` sensor: tick time and metric import speed at growing corpus sizes.

    .venv/bin/python benchmarks/triggers.py [--sizes 1000 10000 100000] [--backends sqlite postgresql]
        [--naive-max 10000] [--repeat 3] [--sites 1] [--postgres-url URL] [--json FILE]

For every backend and size a store is built (`benchmarks/trigger_corpus.py`) with `size` published
articles (one site by default), each with a rule of its own as `pipeline triggers add --content` writes
it (ctr < 0.02 after 72 h) and ctr metrics for variants A and B that do not break it. Articles are
published over the last three years; the rows are those the publish path writes (content published,
variants A and B of version 1, the review events draft -> approved -> published), inserted in bulk
through the models (SQLAlchemy Core), with the `Store` API for sites and metric rows. Then, measured on
the sensor itself (`metric_triggers` from the project's definitions, in an ephemeral Dagster instance
whose `sites` partitions hold the sites):

- catch-up: the ticks a fresh cursor needs until nothing is left to evaluate (total time);
- steady: a tick with the warm cursor when nothing changed (median of `--repeat`);
- breaking: a tick after new rows break the rule for 5% of the articles, which fire (median; a new 5%
  each time);
- import: a 10,000-row metrics file through `import_metrics_file` (rows per second), then the tick that
  evaluates it (median);
- at the largest size, a 200,000-row file (2 rows per article up to 100,000 articles): import rows per
  second, the first tick after it and how many ticks drain it (bounded work per tick).

The same steps run with the evaluation as it was before incremental ticks ("naive": every published
article against every rule of its site on every tick, metrics read per article), copied below, on a store
of its own, up to `--naive-max` articles (it is quadratic: 100,000 articles would take half an hour a tick),
each kind of tick measured `--naive-repeat` times.
Ratios compare each size with the previous one (10x the articles). Targets: a steady tick under 1 s at
100,000 articles, and no worse than about 10x per 10x articles for a tick with real work (breaking).

PostgreSQL runs on a database of its own (created and dropped here) on the server `--postgres-url` names.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
from sqlalchemy import select  # noqa: E402
from trigger_corpus import (  # noqa: E402
    BREAKING,
    DEFAULT_POSTGRES,
    MIN_AGE_HOURS,
    build_store,
    database,
    metric_row,
    write_import,
)

from pipeline.metrics import import_metrics_file  # noqa: E402
from pipeline.models import Site, TriggerFiring  # noqa: E402
from pipeline.store import Store  # noqa: E402

IMPORT_ROWS = 10_000
BIG_IMPORT_ARTICLES = 100_000
STEADY_TARGET_SECONDS = 1.0
GROWTH_TARGET = 10.0

Tick = Callable[[str | None], tuple[str | None, int]]  # cursor in -> cursor out, firings requested


@dataclass
class Measurement:
    """One backend, size and evaluation: seconds per kind of tick, import speed."""

    backend: str
    size: int
    evaluation: str  # "incremental" (the sensor as it is) or "naive"
    setup_seconds: float = 0.0
    catch_up_ticks: int = 0
    catch_up_seconds: float = 0.0
    steady_seconds: float = 0.0
    breaking_seconds: float = 0.0
    breaking_fired: int = 0
    import_tick_seconds: float = 0.0
    import_rows_per_second: float = 0.0
    big_import_rows: int = 0
    big_import_rows_per_second: float = 0.0
    big_import_first_tick_seconds: float = 0.0
    big_import_ticks: int = 0
    notes: list[str] = field(default_factory=list)


# -- ticks ---------------------------------------------------------------------------------------------


def sensor_tick(url: str, instance: dg.DagsterInstance) -> Tick:
    """One evaluation of `metric_triggers` from the project's definitions, as the daemon runs it."""
    from pipeline.definitions import defs
    from resources import StoreResource

    sensor = defs.resolve_sensor_def("metric_triggers")

    def tick(cursor: str | None) -> tuple[str | None, int]:
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"store": StoreResource(database_url=url)}
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        requests = result.run_requests or []
        fired = sum(len(r.run_config["ops"]["content"]["config"]["regenerate_firings"]) for r in requests)
        return result.cursor, fired

    return tick


def naive_tick(store: Store, instance: dg.DagsterInstance) -> Tick:
    """The sensor's evaluation before incremental ticks, kept here as the baseline (its code, verbatim in
    substance: every published article, every rule of the site, metrics read per article)."""
    from pipeline.triggers import site_rules

    def tick(cursor: str | None) -> tuple[str | None, int]:
        _naive_rearm(store)
        partitions = set(instance.get_dynamic_partitions("sites"))
        fired_total = 0
        for site in store.sites():
            if site.slug not in partitions:
                continue
            fired = _naive_fire_due(store, site, site_rules(store, site))
            if fired:
                attempts = {f.id: f.attempts for f in store.firings(site_id=site.id) if f.id in fired}
                fired_total += len(attempts)
        return cursor, fired_total

    return tick


def _naive_fire_due(store: Store, site: Site, rules: Sequence[Any]) -> list[int]:
    from pipeline.triggers import COMPARISONS

    now = datetime.now(UTC)
    if not rules:
        return []
    busy = {f.content_id for f in store.firings(site_id=site.id, statuses=("requested", "running"))}
    fired = []
    for content in store.published_content(site.id):
        if content.id in busy or content.regeneration_run_id or content.published_at is None:
            continue
        published_at = content.published_at if content.published_at.tzinfo else content.published_at.replace(tzinfo=UTC)
        age_hours = (now - published_at).total_seconds() / 3600
        observed = store.latest_metrics(content.id, content.published_version or 0)
        for rule in rules:
            if rule.content_id not in (None, content.id) or age_hours < rule.min_age_hours:
                continue
            compare = COMPARISONS[rule.comparison]
            triggered = [
                v
                for v in sorted(observed)
                if rule.metric in observed[v] and compare(observed[v][rule.metric], rule.threshold)
            ]
            if triggered:
                fired_now = store.fire_triggers(
                    [
                        {
                            "site_id": site.id,
                            "content_id": content.id,
                            "rule_key": rule.key,
                            "published_version": content.published_version,
                            "metric": rule.metric,
                            "comparison": rule.comparison,
                            "threshold": rule.threshold,
                            "instruction": rule.instruction,
                            "triggered_variants": triggered,
                            "observed": observed,
                        }
                    ]
                )  # one article at a time, as the sensor did before incremental ticks
                fired += [firing_id for firing_id, _, _ in fired_now]
                break
    return fired


def _naive_rearm(store: Store) -> None:
    # Runs of the benchmark's firings never start and none is an hour old: nothing is re-armed, but every
    # active firing is read, as before.
    now = datetime.now(UTC)
    for firing in store.firings(statuses=("requested", "running")):
        fired_at = firing.fired_at if firing.fired_at.tzinfo else firing.fired_at.replace(tzinfo=UTC)
        if firing.run_id is None and now - fired_at > timedelta(hours=1):
            store.fail_firing(firing.id, "", "stale")


def caught_up(store: Store) -> bool:
    """Whether the sensor's last tick left nothing to evaluate (always, for a sensor that keeps no state)."""
    reader = getattr(store, "sensor_state", None)
    state = reader("metric_triggers") if reader else None
    return state is None or bool(state.get("caught_up", True))


# -- scenarios -----------------------------------------------------------------------------------------


def measure(backend: str, url: str, size: int, evaluation: str, args: argparse.Namespace, folder: Path) -> Measurement:
    result = Measurement(backend, size, evaluation)
    repeat = args.repeat if evaluation == "incremental" else args.naive_repeat
    now = datetime.now(UTC)
    started = time.perf_counter()
    store, articles = build_store(url, size, args.sites, now)
    result.setup_seconds = time.perf_counter() - started
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("sites", [site.slug for site in store.sites()])
    tick = sensor_tick(url, instance) if evaluation == "incremental" else naive_tick(store, instance)

    cursor: str | None = None
    started = time.perf_counter()
    while True:
        cursor, _ = tick(cursor)
        result.catch_up_ticks += 1
        if caught_up(store) or result.catch_up_ticks > 1000:
            break
    result.catch_up_seconds = time.perf_counter() - started
    assert not _firings(store), "healthy metrics fire nothing"

    steady = []
    for _ in range(repeat):
        seconds, (cursor, fired) = _timed(tick, cursor)
        assert fired == 0
        steady.append(seconds)
    result.steady_seconds = statistics.median(steady)

    aged = [(c, when) for c, when in articles if now - when > timedelta(hours=MIN_AGE_HOURS + 1)]
    breaking, fired_counts = [], []
    for attempt in range(repeat):
        chosen = aged[attempt::20]
        store.add_metrics(
            [metric_row(c, "B", "ctr", BREAKING, now - timedelta(minutes=30 - attempt)) for c, _ in chosen]
        )
        seconds, (cursor, fired) = _timed(tick, cursor)
        while not caught_up(store):  # more than a tick's work: the rest follows in the next ticks
            more, (cursor, later) = _timed(tick, cursor)
            seconds, fired = seconds + more, fired + later
        breaking.append(seconds)
        fired_counts.append(fired)
        if fired != len(chosen):
            result.notes.append(f"breaking {attempt}: {fired} fired of {len(chosen)}")
    result.breaking_seconds, result.breaking_fired = statistics.median(breaking), int(statistics.median(fired_counts))

    import_ticks, import_speeds = [], []
    for attempt in range(repeat):
        path = folder / f"{backend}-{size}-{evaluation}-{attempt}.csv"
        rows = write_import(path, articles, IMPORT_ROWS, now - timedelta(minutes=20 - attempt), attempt)
        started = time.perf_counter()
        added = import_metrics_file(store, path).added
        import_speeds.append(rows / (time.perf_counter() - started))
        assert added == rows, (added, rows)
        seconds, (cursor, _) = _timed(tick, cursor)
        import_ticks.append(seconds)
        while not caught_up(store):
            cursor, _ = tick(cursor)
    result.import_tick_seconds = statistics.median(import_ticks)
    result.import_rows_per_second = statistics.median(import_speeds)

    if size == max(args.sizes) and evaluation == "incremental" and not args.no_big_import:
        big = articles[:BIG_IMPORT_ARTICLES]
        path = folder / f"{backend}-{size}-big.csv"
        rows = write_import(path, big, 2 * len(big), now - timedelta(minutes=10), 0)
        started = time.perf_counter()
        try:
            import_metrics_file(store, path)
        except Exception as error:  # the baseline may not survive it: report, go on
            result.notes.append(f"{rows:,}-row import failed: {type(error).__name__}: {str(error)[:200]}")
        else:
            result.big_import_rows = rows
            result.big_import_rows_per_second = rows / (time.perf_counter() - started)
            result.big_import_first_tick_seconds, (cursor, _) = _timed(tick, cursor)
            result.big_import_ticks = 1
            while not caught_up(store) and result.big_import_ticks < 1000:
                cursor, _ = tick(cursor)
                result.big_import_ticks += 1
    store.engine.dispose()
    instance.dispose()
    return result


def _timed(tick: Tick, cursor: str | None) -> tuple[float, tuple[str | None, int]]:
    started = time.perf_counter()
    outcome = tick(cursor)
    return time.perf_counter() - started, outcome


def _firings(store: Store) -> int:
    with store.transaction() as session:
        return len(session.scalars(select(TriggerFiring.id)).all())


# -- report --------------------------------------------------------------------------------------------


def report(results: Sequence[Measurement]) -> list[str]:
    lines = []
    header = (
        f"{'backend':<10} {'articles':>8} {'evaluation':<11} {'setup s':>8} {'catch-up':>14} {'steady s':>9} "
        f"{'5% breaking s':>14} {'fired':>6} {'10k import tick s':>17} {'import rows/s':>13}"
    )
    lines += [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.backend:<10} {r.size:>8,} {r.evaluation:<11} {r.setup_seconds:>8.1f} "
            f"{f'{r.catch_up_ticks} in {r.catch_up_seconds:.2f}s':>14} {r.steady_seconds:>9.3f} "
            f"{r.breaking_seconds:>14.3f} {r.breaking_fired:>6} {r.import_tick_seconds:>17.3f} "
            f"{r.import_rows_per_second:>13,.0f}"
        )
    lines.append("")
    lines.append("Ratios to the previous size (10x the articles):")
    for backend in sorted({r.backend for r in results}):
        for evaluation in ("incremental", "naive"):
            series = sorted(
                (r for r in results if (r.backend, r.evaluation) == (backend, evaluation)), key=lambda r: r.size
            )
            for small, large in itertools.pairwise(series):
                lines.append(
                    f"  {backend} {evaluation} {small.size:,} -> {large.size:,}: steady "
                    f"{_ratio(large.steady_seconds, small.steady_seconds)}, breaking "
                    f"{_ratio(large.breaking_seconds, small.breaking_seconds)}, import tick "
                    f"{_ratio(large.import_tick_seconds, small.import_tick_seconds)}, import rows/s "
                    f"{_ratio(large.import_rows_per_second, small.import_rows_per_second)}"
                )
    for r in results:
        if r.big_import_rows:
            lines.append(
                f"  {r.backend} {r.size:,}: {r.big_import_rows:,}-row import "
                f"{r.big_import_rows_per_second:,.0f} rows/s; "
                f"first tick after it {r.big_import_first_tick_seconds:.2f}s, {r.big_import_ticks} ticks to drain it"
            )
        for note in r.notes:
            lines.append(f"  note {r.backend} {r.size:,} {r.evaluation}: {note}")
    lines.append("")
    lines.append("Targets (incremental):")
    for r in results:
        if r.evaluation == "incremental" and r.size >= 100_000:
            verdict = "ok" if r.steady_seconds < STEADY_TARGET_SECONDS else "MISSED"
            lines.append(f"  {r.backend}: steady tick at {r.size:,} articles {r.steady_seconds:.3f}s < 1s: {verdict}")
    for backend in sorted({r.backend for r in results}):
        series = sorted(
            (r for r in results if (r.backend, r.evaluation) == (backend, "incremental")), key=lambda r: r.size
        )
        for small, large in itertools.pairwise(series):
            growth = large.breaking_seconds / small.breaking_seconds if small.breaking_seconds else float("inf")
            verdict = "ok" if growth <= GROWTH_TARGET * 1.2 else "MISSED"
            lines.append(
                f"  {backend}: breaking tick growth {small.size:,} -> {large.size:,} {growth:.1f}x <= ~10x: {verdict}"
            )
    return lines


def _ratio(large: float, small: float) -> str:
    return f"{large / small:.1f}x" if small else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--naive-max", type=int, default=10_000, help="largest size the naive evaluation runs at")
    parser.add_argument("--evaluations", nargs="+", choices=["incremental", "naive"], default=["incremental", "naive"])
    parser.add_argument("--repeat", type=int, default=3, help="ticks measured per kind (median)")
    parser.add_argument("--naive-repeat", type=int, default=1, help="the same for the naive evaluation (slow)")
    parser.add_argument("--sites", type=int, default=1)
    parser.add_argument("--no-big-import", action="store_true", help="skip the 200,000-row import")
    parser.add_argument("--postgres-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES))
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON here")
    args = parser.parse_args(argv)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="triggers-bench-") as tmp:
        folder = Path(tmp)
        os.environ["PIPELINE_METRICS_DIR"] = str(folder / "metrics")  # an empty folder: nothing dropped
        (folder / "metrics").mkdir()
        for backend in args.backends:
            for size in sorted(args.sizes):
                for evaluation in args.evaluations:
                    if evaluation == "naive" and size > args.naive_max:
                        continue
                    label = f"{size}_{evaluation}"
                    with database(backend, args.postgres_url, folder, label) as url:
                        os.environ["DATABASE_URL"] = url  # what the definitions' StoreResource() opens
                        outcome = measure(backend, url, size, evaluation, args, folder)
                    results.append(outcome)
                    print(json.dumps(asdict(outcome)), file=sys.stderr, flush=True)
    print("\n".join(report(results)))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
