"""Scale-out on Celery workers: many sites through the whole chain, with 1, 2 and 4 workers, one run.

    .venv/bin/python benchmarks/scale_out.py [--sites 20] [--keywords 400] [--workers 1 2 4]
        [--latency-ms 500] [--rpm 1800] [--burst-s 1]

For each worker count it starts the production shape (`deploy/prod.py up --celery-workers N`, what
`make prod-up CELERY_WORKERS=N` runs) on fresh PostgreSQL databases and the machine's RabbitMQ, registers
`--sites` sites of `--keywords` keywords each (the sample keywords, each site's with a word of its own, so
no site is served from another's cache), queues the main job for every site at once through the webserver,
and waits. Model calls go to the loopback OpenAI-compatible server (real `openai` SDK over HTTP), which
answers each call after `--latency-ms`, with a shared rate limit of `--rpm` requests per minute per model
(`requests_per_minute` on the LLM resource, bucket of `--burst-s` seconds), which every worker shares
through the store.

It prints, per worker count: wall time (first submit to last run end), steps per worker (from the event
log), and for each model (the limit is per model: each has its own bucket) its calls per second against the
limit and its busiest second and ten seconds against what the limit allows (one burst plus the rate), and the
wall time against the ideal for that limit (the busiest model's calls / limit: no deployment can be faster
without sending more than the limit); then the speed-up over one worker.

These 2 cores bound what it can show: every worker, every run process, the webserver, daemon, code server,
PostgreSQL, RabbitMQ and the loopback server share them, so more workers stop helping once the CPU is
busy. The ratio to the rate limit is what a user pays for: how much of the allowance the deployment uses.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster import DagsterRunStatus  # noqa: E402

from pipeline.cli import main as pipeline_cli  # noqa: E402
from tests.conftest import DEFAULT_TEST_DATABASE_URL, SAMPLE_KEYWORDS, PostgresServer  # noqa: E402
from tests.openai_server import LoopbackOpenAI  # noqa: E402
from tests.production import production_shape  # noqa: E402

KEY_ENV = "LOOPBACK_OPENAI_KEY"
PLACES = [
    "berlin", "paris", "madrid", "rome", "vienna", "prague", "lisbon", "dublin", "oslo", "helsinki",
    "warsaw", "athens", "zurich", "brussels", "amsterdam", "copenhagen", "stockholm", "budapest", "milan", "lyon",
]  # fmt: skip


@dataclass
class Result:
    """One worker count's run."""

    workers: int
    wall_s: float
    runs_ok: int
    runs: int
    steps: Counter[str]
    models: dict[str, ModelCalls]
    ideal_s: float

    @property
    def call_rate(self) -> float:
        """Model calls per second over the whole run (every model)."""
        return sum(m.calls for m in self.models.values()) / self.wall_s


@dataclass
class ModelCalls:
    """What one model's bucket let through, from the server's arrival times."""

    calls: int
    rate: float
    peak_1s: int
    peak_10s: int

    @classmethod
    def of(cls, times: list[float]) -> ModelCalls:
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return cls(len(times), len(times) / span if span else 0.0, peak(times, 1.0), peak(times, 10.0))


def keyword_file(folder: Path, index: int, count: int) -> Path:
    """`count` keywords of the sample file (repeated if needed), each with this site's own word."""
    header, *rows = SAMPLE_KEYWORDS.read_text().splitlines()
    place = PLACES[index % len(PLACES)] + (str(index // len(PLACES)) if index >= len(PLACES) else "")
    lines = [header]
    for n in range(count):
        keyword, _, rest = rows[n % len(rows)].partition(",")
        suffix = place if n < len(rows) else f"{place} {n // len(rows)}"
        lines.append(f"{keyword} {suffix},{rest}" if rest else f"{keyword} {suffix}")
    path = folder / f"site-{index:02d}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def peak(times: list[float], window: float) -> int:
    """The most calls that arrived within any `window` seconds."""
    best, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def run_once(postgres: PostgresServer, root: Path, args: argparse.Namespace, workers: int) -> Result:
    """One production shape with `workers` workers, all sites at once; what it measured."""
    overrides = {KEY_ENV: "sk-loopback", "PIPELINE_LLM_POOL_LIMIT": "4", "PIPELINE_IMAGE_POOL_LIMIT": "4"}
    with LoopbackOpenAI(latency_ms=args.latency_ms) as server:
        with production_shape(postgres, root, overrides, "--celery-workers", str(workers)) as production:
            slugs = []
            for index in range(args.sites):
                slug = f"site-{index:02d}"
                path = keyword_file(root, index, args.keywords)
                with contextlib.redirect_stdout(io.StringIO()):  # the command's own report, once per site
                    added = pipeline_cli(["sites", "add", slug, "--name", f"Site {index}", "--keywords", str(path)])
                assert added == 0, f"pipeline sites add {slug} failed"
                slugs.append(slug)
            config = {
                "provider": "openai",
                "base_url": server.base_url,
                "api_key_env": KEY_ENV,
                "requests_per_minute": args.rpm,
                "rate_limit_burst_s": args.burst_s,
                "image_size": "256x256",
            }
            started = time.time()
            run_ids = [production.submit(slug, run_config={"resources": {"llm": {"config": config}}}) for slug in slugs]
            production.watch(run_ids, timeout=args.timeout)
            records = production.records(run_ids)
            ended = max(r.end_time or started for r in records.values())
            steps = Counter(w.split("@")[0] for run_id in run_ids for _, w in production.step_workers(run_id))
            ok = sum(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in records.values())
        arrivals: dict[str, list[float]] = {}
        for record in server.log.records():
            if record.path in {"chat", "images"}:
                arrivals.setdefault(f"{record.model} ({record.path})", []).append(record.time)
    models = {model: ModelCalls.of(sorted(times)) for model, times in sorted(arrivals.items())}
    # The limiter's bound: each model has a bucket of its own, so the busiest model sets the pace.
    ideal = max(m.calls for m in models.values()) / (args.rpm / 60.0)
    return Result(
        workers=workers,
        wall_s=ended - started,
        runs_ok=ok,
        runs=len(run_ids),
        steps=steps,
        models=models,
        ideal_s=ideal,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--keywords", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--latency-ms", type=float, default=500.0)
    parser.add_argument("--rpm", type=int, default=1800, help="shared requests per minute per model")
    parser.add_argument("--burst-s", type=float, default=1.0, help="seconds of allowance the bucket holds")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one worker count")
    parser.add_argument("--database-url", default=DEFAULT_TEST_DATABASE_URL, help="a PostgreSQL server to use")
    args = parser.parse_args(argv)

    postgres = PostgresServer(args.database_url)
    limit = args.rpm / 60.0
    print(
        f"{args.sites} sites x {args.keywords} keywords, whole chain, loopback at {args.latency_ms:.0f} ms per call, "
        f"shared limit {args.rpm} requests/min per model ({limit:.1f}/s, {args.burst_s:g} s burst)"
    )
    results: list[Result] = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix=f"scale-{workers}-") as folder:
            result = run_once(postgres, Path(folder), args, workers)
        results.append(result)
        per_worker = ", ".join(f"{name} {count}" for name, count in sorted(result.steps.items()))
        print(
            f"\n{workers} worker(s): {result.runs_ok}/{result.runs} runs ok, wall {result.wall_s:.1f} s "
            f"(ideal for the limit {result.ideal_s:.1f} s: {result.ideal_s / result.wall_s:.2f} of it)\n"
            f"  steps per worker: {per_worker}; {result.call_rate:.1f} model calls/s in all"
        )
        for model, calls in result.models.items():
            print(
                f"  {model}: {calls.calls} calls at {calls.rate:.1f}/s = {calls.rate / limit:.2f} of the limit; "
                f"busiest 1 s {calls.peak_1s} (allowed {limit * (1 + args.burst_s):.0f}), busiest 10 s "
                f"{calls.peak_10s} (allowed {limit * (10 + args.burst_s):.0f})"
            )
    base = results[0]
    print("\nspeed-up over", base.workers, "worker(s):")
    for result in results:
        print(f"  {result.workers} workers: {base.wall_s / result.wall_s:.2f}x wall, "
              f"{result.call_rate / base.call_rate:.2f}x model calls per second")  # fmt: skip
    return 0 if all(r.runs_ok == r.runs for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
