"""Watched folders: one bad entry in the keyword inbox or the metrics folder never blocks the others.

FIFOs are never opened, dangling links, folders named `x.csv` and invalid files are skipped and reported
once (the tick's log and skip reason, the store's rejected files, `pipeline status`), `X.CSV` counts as a
`.csv` file. Both backends.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import pipeline.drop_folder
from pipeline.cli import main
from pipeline.models import RejectedFile
from resources import StoreResource
from sensors.inbox import keyword_inbox
from sensors.metrics import metric_triggers
from tests.test_metric_inputs import add_article, publish_version

GOOD_KEYWORDS = "keyword,volume\ncold brew,100\nmoka pot,50\n"


class Tick:
    """What one sensor tick returned and logged."""

    def __init__(self, result, messages: list[tuple[str, str]]):
        self.result, self.messages = result, messages

    @property
    def skip_message(self) -> str | None:
        reason = getattr(self.result, "skip_reason", None) or self.result
        return getattr(reason, "skip_message", None)

    def logged(self, text: str) -> list[str]:
        return [message for _, message in self.messages if text in message]


def tick(sensor, env, cursor=None, timeout: float = 30) -> Tick:
    """Evaluate `sensor` once in a thread: a tick that blocks (a FIFO opened for reading) fails the test."""
    messages: list[tuple[str, str]] = []
    outcome: dict[str, Any] = {}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append((record.levelname, record.getMessage()))

    def evaluate() -> None:
        try:
            with dg.build_sensor_context(
                instance=env.instance, cursor=cursor, resources={"store": StoreResource(database_url=env.url)}
            ) as context:
                context.log.addHandler(Collect())
                outcome["result"] = sensor(context)
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    worker = threading.Thread(target=evaluate, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"the sensor tick blocked for more than {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return Tick(outcome["result"], messages)


def rejected(env, folder: str, *, include_resolved: bool = False) -> dict[str, RejectedFile]:
    return {r.name: r for r in env.store.rejected_files(include_resolved=include_resolved) if r.folder == folder}


@pytest.fixture
def metrics(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "metrics"
    folder.mkdir()
    monkeypatch.setenv("PIPELINE_METRICS_DIR", str(folder))
    return folder


# -- keyword inbox -----------------------------------------------------------------------------------------


def test_a_fifo_named_csv_is_never_opened_and_the_other_files_are_ingested(env, inbox):
    os.mkfifo(inbox / "stuck.csv")  # opening it for reading would wait for a writer forever
    (inbox / "coffee.csv").write_text(GOOD_KEYWORDS)

    first = tick(keyword_inbox, env)

    assert [r.partition_key for r in first.result.run_requests] == ["coffee"]
    assert env.store.site("coffee").keywords_file
    [message] = first.logged("stuck.csv")
    assert "skipped stuck.csv: keyword file stuck.csv: a named pipe (FIFO), not a regular file; it was not opened" in (
        message
    )
    assert rejected(env, "inbox")["stuck.csv"].problem.startswith("keyword file stuck.csv: a named pipe (FIFO)")
    assert json.loads(first.result.cursor)["stuck.csv"] == "fifo"


def test_a_dangling_link_and_a_folder_named_csv_are_reported_once_not_on_every_tick(env, inbox):
    (inbox / "gone.csv").symlink_to(inbox / "nowhere.csv")
    (inbox / "x.csv").mkdir()

    first = tick(keyword_inbox, env)
    second = tick(keyword_inbox, env, cursor=first.result.cursor)

    assert first.skip_message == (
        f"skipped 2 file(s): gone.csv: keyword file gone.csv: a symbolic link to {inbox / 'nowhere.csv'}, "
        "which does not exist; skipped; x.csv: keyword file x.csv: a folder, not a file; skipped"
    )
    assert len(first.logged("skipped gone.csv")) == 1 and len(first.logged("skipped x.csv")) == 1
    assert second.skip_message == "no new or changed keyword files"
    assert second.logged("skipped") == [], "reported once, not on every tick"
    assert sorted(rejected(env, "inbox")) == ["gone.csv", "x.csv"]
    assert len(env.store.rejected_files(include_resolved=True)) == 2, "one row per entry, however often it is seen"


def test_an_uppercase_extension_counts_as_csv_and_names_the_lowercase_site(env, inbox):
    (inbox / "Coffee-Blog.CSV").write_text(GOOD_KEYWORDS)

    first = tick(keyword_inbox, env)

    [request] = first.result.run_requests
    assert request.partition_key == "coffee-blog"
    assert first.result.dynamic_partitions_requests[0].partition_keys == ["coffee-blog"]
    assert Path(env.store.site("coffee-blog").keywords_file).read_text() == GOOD_KEYWORDS
    assert tick(keyword_inbox, env, cursor=first.result.cursor).skip_message == "no new or changed keyword files"


def test_two_names_for_one_site_are_both_rejected_until_one_is_removed(env, inbox):
    (inbox / "coffee.csv").write_text(GOOD_KEYWORDS)
    (inbox / "COFFEE.csv").write_text("keyword\nespresso\n")

    first = tick(keyword_inbox, env)

    assert first.skip_message is not None
    assert "COFFEE.csv: COFFEE.csv, coffee.csv name the same site 'coffee'; remove all but one" in first.skip_message
    assert sorted(rejected(env, "inbox")) == ["COFFEE.csv", "coffee.csv"]
    (inbox / "COFFEE.csv").unlink()
    second = tick(keyword_inbox, env, cursor=first.result.cursor)
    assert [r.partition_key for r in second.result.run_requests] == ["coffee"]
    assert rejected(env, "inbox") == {}, "fixed: no longer listed"


def test_a_keyword_file_that_fails_validation_is_recorded_with_its_error_and_does_not_block_others(env, inbox):
    (inbox / "bad.csv").write_text("keyword,volume\ncold brew,lots\nmoka pot,-3\n")
    (inbox / "good.csv").write_text(GOOD_KEYWORDS)

    first = tick(keyword_inbox, env)

    assert [r.partition_key for r in first.result.run_requests] == ["good"]
    problem = rejected(env, "inbox")["bad.csv"].problem
    assert "row 2, column 'volume': 'lots' is not a number" in problem
    assert "row 3, column 'volume': '-3' is not a whole number >= 0" in problem
    [message] = first.logged("skipped bad.csv")
    assert "nothing was imported" in message


def test_a_file_name_that_is_not_utf8_is_reported_not_a_crash(env, inbox):
    with open(os.path.join(os.fsencode(inbox), b"caf\xe9.csv"), "wb") as handle:  # Latin-1 bytes in the name
        handle.write(GOOD_KEYWORDS.encode())
    (inbox / "good.csv").write_text(GOOD_KEYWORDS)

    first = tick(keyword_inbox, env)

    assert [r.partition_key for r in first.result.run_requests] == ["good"]
    assert "invalid site slug 'caf\\\\xe9'" in rejected(env, "inbox")["caf\\xe9.csv"].problem


def test_a_link_to_a_regular_file_is_read_like_the_file(env, inbox, tmp_path):
    target = tmp_path / "exports" / "keywords.csv"
    target.parent.mkdir()
    target.write_text(GOOD_KEYWORDS)
    (inbox / "coffee.csv").symlink_to(target)

    assert [r.partition_key for r in tick(keyword_inbox, env).result.run_requests] == ["coffee"]


def test_an_unreadable_or_oversized_file_is_skipped(env, inbox, monkeypatch):
    locked = inbox / "locked.csv"
    locked.write_text(GOOD_KEYWORDS)
    locked.chmod(0)
    (inbox / "huge.csv").write_text(GOOD_KEYWORDS * 100)
    (inbox / "good.csv").write_text(GOOD_KEYWORDS)
    monkeypatch.setattr(pipeline.drop_folder, "MAX_FILE_BYTES", len(GOOD_KEYWORDS) * 10)
    if os.geteuid() == 0:  # root reads files whatever their mode: refuse this one as the kernel would
        real_open = os.open

        def deny(path, flags, *args, **kwargs):
            if os.fspath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", deny)  # the `os` module pipeline.drop_folder calls

    first = tick(keyword_inbox, env)

    assert [r.partition_key for r in first.result.run_requests] == ["good"]
    problems = {name: row.problem for name, row in rejected(env, "inbox").items()}
    assert problems["locked.csv"] == "keyword file locked.csv: cannot be read (Permission denied); skipped"
    size, limit = len(GOOD_KEYWORDS) * 100, len(GOOD_KEYWORDS) * 10
    assert problems["huge.csv"] == f"keyword file huge.csv: {size:,} bytes; the limit is {limit:,} bytes; skipped"


def test_a_hand_edited_cursor_does_not_break_the_sensor(env, inbox):
    (inbox / "coffee.csv").write_text(GOOD_KEYWORDS)
    result = tick(keyword_inbox, env, cursor="not json")
    assert [r.partition_key for r in result.result.run_requests] == ["coffee"]
    assert result.logged("cursor is not a JSON object")


def test_fixing_a_rejected_file_resolves_it_and_pipeline_status_lists_only_current_rejections(
    env, inbox, monkeypatch, capsys
):
    monkeypatch.setenv("DATABASE_URL", env.url)
    os.mkfifo(inbox / "stuck.csv")
    (inbox / "bad.csv").write_text("keyword,volume\ncold brew,lots\n")
    first = tick(keyword_inbox, env)

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Rejected input files (2; skipped until fixed or removed):" in out
    assert "inbox   bad.csv" in out and "row 2, column 'volume': 'lots' is not a number" in out
    assert "inbox   stuck.csv" in out and "a named pipe (FIFO)" in out
    assert main(["status", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "2 rejected input file(s)" in captured.err

    (inbox / "bad.csv").write_text(GOOD_KEYWORDS)
    (inbox / "stuck.csv").unlink()
    second = tick(keyword_inbox, env, cursor=first.result.cursor)

    assert [r.partition_key for r in second.result.run_requests] == ["bad"]
    assert rejected(env, "inbox") == {}
    assert {r.name for r in env.store.rejected_files(include_resolved=True)} == {"bad.csv", "stuck.csv"}
    assert main(["status"]) == 0
    assert "Rejected input files" not in capsys.readouterr().out


# -- metrics folder ----------------------------------------------------------------------------------------


def test_the_metrics_folder_skips_fifos_links_folders_and_bad_files_and_imports_the_rest(env, metrics):
    content_id = add_article(env)
    publish_version(env, content_id, 1, datetime.now(UTC) - timedelta(days=10))
    when = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    os.mkfifo(metrics / "pipe.csv")
    (metrics / "gone.csv").symlink_to(metrics / "nowhere.csv")
    (metrics / "x.csv").mkdir()
    (metrics / "nan.csv").write_text(f"content_id,variant,metric,value,observed_at\n{content_id},A,ctr,nan,{when}\n")
    (metrics / "GSC.CSV").write_text(f"content_id,variant,metric,value,observed_at\n{content_id},A,ctr,0.05,{when}\n")

    first = tick(metric_triggers, env)
    second = tick(metric_triggers, env, cursor=first.result.cursor)

    assert env.store.latest_metrics(content_id, 1) == {"A": {"ctr": 0.05}}
    assert first.logged("metrics: GSC.CSV: 1 new rows (0 known)")
    assert sorted(rejected(env, "metrics")) == ["gone.csv", "nan.csv", "pipe.csv", "x.csv"]
    assert "row 2, column 'value': 'nan' is not a finite number" in rejected(env, "metrics")["nan.csv"].problem
    assert first.skip_message is not None
    for text in (
        "no trigger rule fired; skipped ",
        "pipe.csv: metrics file pipe.csv: a named pipe (FIFO), not a regular file; it was not opened; skipped",
        "x.csv: metrics file x.csv: a folder, not a file; skipped",
        "nan.csv: - row 2, column 'value': 'nan' is not a finite number",
    ):
        assert text in first.skip_message
    assert len(first.logged("metrics: skipped")) == 4
    assert second.skip_message == "no trigger rule fired" and second.logged("skipped") == [], "reported once"
