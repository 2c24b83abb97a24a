"""Queued runs on the production shape: `deploy/prod.py up` (webserver, daemon, code server on PostgreSQL
with deploy/dagster.yaml), runs submitted through the webserver like the UI does, assertions on the store.

- two sites requested at once are launched without waiting for each other, while the `llm` pool keeps
  model-calling steps one at a time;
- two runs of one site requested at once: the second waits in the queue, then finds nothing left to do;
- regeneration runs are capped at two at a time.

PostgreSQL only (the queue, pools and the shared instance are what is under test).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from dagster import DagsterRunStatus

from tests.production import IN_PROGRESS, LLM_STEPS, Production, assert_site_complete, production_shape

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")]


@pytest.fixture(scope="module")
def production(postgres, tmp_path_factory) -> Iterator[Production]:
    """The production shape with the in-process executor, one model-calling step at a time."""
    # One model-calling step at a time across all runs, so the test can see the pool hold steps back.
    limits = {"PIPELINE_LLM_POOL_LIMIT": "1", "PIPELINE_IMAGE_POOL_LIMIT": "1"}
    with production_shape(postgres, tmp_path_factory.mktemp("production"), limits) as production:
        yield production


def test_start_up_creates_the_pools_and_the_instance_queues_runs_with_the_deploy_limits(production):
    instance = production.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert {"key": "pipeline/run_kind", "value": "regeneration", "limit": 2} in limits
    pools = {pool: instance.event_log_storage.get_concurrency_info(pool).slot_count for pool in ("llm", "images")}
    assert pools == {"llm": 1, "images": 1}


def test_two_sites_requested_at_once_run_in_parallel_and_each_store_is_complete(production):
    production.add_site("alpha", first_row=0)
    production.add_site("beta", first_row=200)

    runs = {"alpha": production.submit("alpha"), "beta": production.submit("beta")}
    production.watch(list(runs.values()))

    records = production.records(list(runs.values()))
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}
    alpha, beta = records[runs["alpha"]], records[runs["beta"]]
    # Neither waited in the queue for the other: each was launched before the other ended. (Launch, not
    # execution: two small sites' runs can each finish within one dequeue interval, 2 s, if the daemon's
    # tick falls between the two submissions; a queue that serialised sites would still fail this.)
    launched = {run_id: production.launch_time(run_id) for run_id in runs.values()}
    assert launched[runs["beta"]] < alpha.end_time and launched[runs["alpha"]] < beta.end_time, launched

    # The `llm` pool (limit 1) held model-calling steps back: never two at once across the two runs.
    steps = [production.step_windows(run_id) for run_id in runs.values()]
    windows = sorted(window for run in steps for step, window in run.items() if step in LLM_STEPS)
    assert len(windows) == 2 * len(LLM_STEPS)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(windows))

    for slug, run_id in runs.items():
        assert_site_complete(production.store, slug)
        assert set(production.ledger(slug)) == {run_id}, "each site's model calls belong to its own run"


def test_a_second_run_of_the_same_site_waits_for_the_first_and_adds_nothing(production):
    production.add_site("gamma", first_row=100)
    first = production.submit("gamma")
    second = production.submit("gamma")

    snapshots = production.watch([first, second])

    assert any(s.get(first) in IN_PROGRESS and s.get(second) == DagsterRunStatus.QUEUED for s in snapshots)
    assert not any(s.get(first) in IN_PROGRESS and s.get(second) in IN_PROGRESS for s in snapshots)
    records = production.records([first, second])
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}
    assert records[second].start_time >= records[first].end_time
    assert_site_complete(production.store, "gamma")
    assert set(production.ledger("gamma")) == {first}, "the first run did the work; the second made no model call"


def test_regeneration_runs_are_capped_at_two_at_a_time(production):
    slugs = ["delta", "epsilon", "zeta"]
    for index, slug in enumerate(slugs):
        production.add_site(slug, first_row=300 + 10 * index, rows=10)
    regeneration = {"pipeline/run_kind": "regeneration"}

    runs = [production.submit(slug, tags=regeneration, assets=["keywords"]) for slug in slugs]
    snapshots = production.watch(runs)

    assert max(sum(status in IN_PROGRESS for status in s.values()) for s in snapshots) == 2
    records = production.records(runs)
    assert {r.dagster_run.status for r in records.values()} == {DagsterRunStatus.SUCCESS}
    last = max(records.values(), key=lambda r: r.start_time)
    others = [r for r in records.values() if r is not last]
    assert last.start_time >= min(r.end_time for r in others), "the third started only after one ended"
