"""What batch mode saves on the sample site, measured through the real chain, SDK and `pipeline costs`.

    .venv/bin/python benchmarks/batch_savings.py

In one store, two sites from the sample keyword file are planned offline (93 ideas each, as `make demo`
plans them). Then, against the loopback server (a separate process, Files and Batches endpoints
included): `sample-batch` writes its articles in batch mode (one run sends the batch, the provider is
polled as the `model_batches` sensor does, one run ingests it, a second ingestion run must change no
row), `sample-rt` writes them in real time. The server's prompt-cache memory is fresh for each site, so
both start cold. Printed: articles stored, calls, tokens and cost per site as `pipeline costs --json`
reports them, the ratio batch / real time (target: exactly 0.5), the rows a second ingestion changed
(target: 0), and the batch savings `pipeline costs` reports.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from assets import ALL_ASSETS  # noqa: E402
from pipeline.cli import main as pipeline_cli  # noqa: E402
from pipeline.llm.batch_mode import FINISHED, follow_batch  # noqa: E402
from pipeline.models import Base, Content  # noqa: E402
from pipeline.store import Store  # noqa: E402
from resources import LLMResource, MediaResource, StoreResource  # noqa: E402

SAMPLE = REPO / "data" / "sample" / "keywords.csv"


def start_server() -> tuple[subprocess.Popen[str], str]:
    """The loopback server in its own process; batches finish after three polls."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--port", "0", "--latency-ms", "0", "--batch-polls", "3"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("READY"):
            return process, line.split()[1]
    raise RuntimeError("the loopback server did not start")


def restart(process: subprocess.Popen[str]) -> tuple[subprocess.Popen[str], str]:
    """A fresh server (its prompt-cache memory empty), so each site starts cold."""
    process.terminate()
    process.wait(timeout=10)
    return start_server()


def costs(database_url: str, site: str) -> dict[str, Any]:
    """`pipeline costs --site SITE --json`, as a user runs it."""
    os.environ["DATABASE_URL"] = database_url
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert pipeline_cli(["costs", "--site", site, "--json"]) == 0
    report: dict[str, Any] = json.loads(out.getvalue())
    return report


def row_counts(store: Store) -> dict[str, int]:
    with store.transaction() as session:
        return {t.name: session.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


def main() -> None:
    """Run both sites and print the comparison."""
    folder = Path(tempfile.mkdtemp(prefix="batch-savings-"))
    url = f"sqlite:///{folder / 'pipeline.db'}"
    store = Store(url)
    instance = dg.DagsterInstance.ephemeral()
    offline = {"store": StoreResource(database_url=url), "llm": LLMResource(), "media": MediaResource(root=str(folder))}
    for slug in ("sample-batch", "sample-rt"):
        store.upsert_site(slug, "Home Barista Guide", str(SAMPLE))  # one name: identical prompts
        instance.add_dynamic_partitions("sites", [slug])
        planned = dg.materialize(
            ALL_ASSETS,
            selection=["keywords", "clusters", "ideas"],
            partition_key=slug,
            resources=offline,
            instance=instance,
        )
        assert planned.success

    server, base_url = start_server()
    try:
        llm = LLMResource(provider="openai", api_key="bench", base_url=base_url, timeout_s=10.0)
        online = offline | {"llm": llm}

        def content(slug: str, batch: bool) -> None:
            result = dg.materialize(
                ALL_ASSETS,
                selection=["content"],
                partition_key=slug,
                resources=online,
                instance=instance,
                run_config={"ops": {"content": {"config": {"batch": batch}}}},
            )
            assert result.success

        content("sample-batch", True)  # sends the batch, ends
        api = llm.batch_api()
        assert api is not None
        for _ in range(10):  # what the sensor does between runs
            pending = [b for b in store.batches_to_follow() if b.status not in FINISHED]
            for batch in pending:
                follow_batch(store, api, batch)
            if not pending:
                break
        content("sample-batch", True)  # ingests
        before = row_counts(store)
        content("sample-batch", True)  # a second ingestion
        changed = sum(abs(row_counts(store)[t] - n) for t, n in before.items())

        server, base_url = restart(server)
        llm = LLMResource(provider="openai", api_key="bench", base_url=base_url, timeout_s=10.0)
        online = offline | {"llm": llm}
        content("sample-rt", False)
    finally:
        server.terminate()
        server.wait(timeout=10)

    with store.transaction() as session:
        stored = dict(session.execute(select(Content.site_id, func.count()).group_by(Content.site_id)).all())
    batch_report, rt_report = costs(url, "sample-batch"), costs(url, "sample-rt")
    batch_totals, rt_totals = batch_report, rt_report
    print("content stage of the sample site (93 ideas), loopback server, `pipeline costs --json`")
    for name, site, totals in (("batch", "sample-batch", batch_totals), ("real time", "sample-rt", rt_totals)):
        print(
            f"  {name:10} articles {stored.get(store.site(site).id, 0):3}  calls {totals['calls']:3}  "
            f"input {totals['input_tokens']:7}  cached {totals['cached_input_tokens']:6}  "
            f"output {totals['output_tokens']:7}  cost ${totals['cost_usd']:.6f}"
        )
    print(f"  batch / real-time cost            {batch_totals['cost_usd'] / rt_totals['cost_usd']:.6f}  (target 0.5)")
    print(f"  rows changed by a second ingestion {changed}  (target 0)")
    print(f"  batch savings (pipeline costs)    ${batch_totals['batch_saved_usd']:.6f}")


if __name__ == "__main__":
    main()
