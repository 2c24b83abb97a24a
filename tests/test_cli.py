"""The `pipeline` command as a user runs it, against a temporary store and Dagster home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SAMPLE_KEYWORDS, SIX_ASSETS

BIN = Path(sys.executable).parent
STATUS_KEYS = ["site", "keywords", "clusters", "ideas", "content", "image_prompts", "images"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "PIPELINE_MEDIA_DIR": str(tmp_path / "media"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sites_add_then_dagster_materialize_then_status_json_shows_every_stage(cli_env):
    added = run([str(BIN / "pipeline"), "sites", "add", "coffee", "--keywords", str(SAMPLE_KEYWORDS)], cli_env)
    assert added.returncode == 0, added.stderr
    assert "397 keywords" in added.stdout

    before = json.loads(run([str(BIN / "pipeline"), "status", "--json"], cli_env).stdout)
    assert before == [dict.fromkeys(STATUS_KEYS, 0) | {"site": "coffee", "variants_by_provider": {}}]

    materialized = run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipeline.definitions",
            "--select",
            "*",
            "--partition",
            "coffee",
        ],
        cli_env,
    )
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    assert "RUN_SUCCESS" in materialized.stderr

    status = json.loads(run([str(BIN / "pipeline"), "status", "--site", "coffee", "--json"], cli_env).stdout)
    assert [list(entry) for entry in status] == [[*STATUS_KEYS, "variants_by_provider"]]
    assert status[0]["site"] == "coffee"
    assert all(status[0][stage] > 0 for stage in SIX_ASSETS)
    assert status[0]["images"] == status[0]["image_prompts"]
    assert status[0]["variants_by_provider"] == {"offline": status[0]["content"]}, "offline articles say so"


def test_sites_add_registers_the_partition_in_the_dagster_home(cli_env):
    assert (
        run([str(BIN / "pipeline"), "sites", "add", "coffee", "--keywords", str(SAMPLE_KEYWORDS)], cli_env).returncode
        == 0
    )
    from dagster import DagsterInstance

    with DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        assert instance.get_dynamic_partitions("sites") == ["coffee"]
    listed = run([str(BIN / "pipeline"), "sites", "list"], cli_env)
    assert listed.stdout.startswith("coffee\tCoffee\t")


def test_sites_add_with_a_bad_keyword_file_registers_nothing(cli_env, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("keyword,volume\ncold brew,ten\n")
    result = run([str(BIN / "pipeline"), "sites", "add", "coffee", "--keywords", str(bad)], cli_env)
    assert result.returncode == 2
    assert f"keyword file {bad}" in result.stderr and "row 2, column 'volume'" in result.stderr
    assert json.loads(run([str(BIN / "pipeline"), "status", "--json"], cli_env).stdout) == []


def test_sites_add_rejects_a_slug_that_cannot_be_a_partition_key(cli_env):
    result = run([str(BIN / "pipeline"), "sites", "add", "My Site,2", "--keywords", str(SAMPLE_KEYWORDS)], cli_env)
    assert result.returncode == 2
    assert "invalid site slug 'My Site,2'" in result.stderr and "'my-site-2'" in result.stderr


def test_status_for_an_unknown_site_says_how_to_add_it(cli_env):
    result = run([str(BIN / "pipeline"), "status", "--site", "nope"], cli_env)
    assert result.returncode == 2
    assert "pipeline sites add nope --keywords FILE" in result.stderr
