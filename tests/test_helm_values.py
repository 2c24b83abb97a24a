"""deploy/helm's values files validate against the Dagster chart's values.schema.json, and a misspelt key fails.

Only schema validation (deploy/helm/check_values.py): no cluster, no `helm template`, no install.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from deploy.helm import check_values
from tests.conftest import REPO


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return check_values.load_schema()


@pytest.fixture
def values() -> dict[str, Any]:
    return check_values.load_yaml(check_values.VALUES)


def test_schema_is_the_charts(schema: dict[str, Any]) -> None:
    assert schema["title"] == "DagsterHelmValues"
    assert {"runLauncher", "dagsterDaemon", "dagster-user-deployments", "postgresql"} <= set(schema["properties"])
    # The file is the chart's, byte for byte as provenance in check_values.py says (json.dumps, indent 4).
    text = check_values.SCHEMA.read_text()
    assert text == json.dumps(json.loads(text), indent=4) + "\n" and len(text) == 100951


@pytest.mark.parametrize("name", ["values.yaml", "values.yaml + values-celery.yaml"])
def test_values_validate(name: str, schema: dict[str, Any]) -> None:
    assert check_values.validate(check_values.value_sets()[name], schema) == []


def test_values_carry_our_settings(values: dict[str, Any]) -> None:
    assert values["postgresql"]["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == "content-pipeline" and deployment["port"] == 4266
    assert deployment["codeServerArgs"] == ["-m", "pipeline.definitions", "--location-name", "content_pipeline"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == 8
    assert queued["tagConcurrencyLimits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        {"key": "pipeline/run_kind", "value": "regeneration", "limit": 2},
    ]
    assert values["additionalInstanceConfig"]["concurrency"]["pools"]["granularity"] == "op"
    merged = check_values.value_sets()["values.yaml + values-celery.yaml"]
    assert merged["runLauncher"]["type"] == "CeleryK8sRunLauncher"
    assert [q["name"] for q in merged["runLauncher"]["config"]["celeryK8sRunLauncher"]["workerQueues"]] == ["dagster"]


def _broken(values: dict[str, Any], path: list[str], key: str, new_key: str | None = None, value: Any = None) -> dict:
    broken = copy.deepcopy(values)
    node = broken
    for part in path:
        node = node[part]
    if new_key is None:
        node[key] = value
    else:
        node[new_key] = node.pop(key)
    return broken


@pytest.mark.parametrize(
    ("path", "key", "new_key", "value", "expected"),
    [
        (["runLauncher"], "type", None, "K8sRunLaunchr", "runLauncher.type: 'K8sRunLaunchr' is not one of"),
        (["runLauncher", "config", "k8sRunLauncher"], "envSecrets", "envSecret", None, "unknown key 'envSecret'"),
        (
            ["dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"],
            "maxConcurrentRuns",
            "maxConcurentRuns",
            None,
            "unknown key 'maxConcurentRuns'",
        ),
        (["dagsterDaemon"], "runRetries", "runRetry", None, "dagsterDaemon: unknown key 'runRetry'"),
        (["dagsterDaemon", "runCoordinator"], "type", "typ", None, "unknown key 'typ'"),
    ],
)
def test_misspelt_key_fails(
    values: dict[str, Any], schema: dict[str, Any], path: list[str], key: str, new_key: str | None, value: Any, expected
) -> None:
    errors = check_values.validate(_broken(values, path, key, new_key, value), schema)
    assert any(expected in e for e in errors), errors


def test_incomplete_list_item_fails(values: dict[str, Any], schema: dict[str, Any]) -> None:
    # Helm replaces lists, so a user deployment without its port is an error even though maps get chart defaults.
    del values["dagster-user-deployments"]["deployments"][0]["port"]
    errors = check_values.validate(values, schema)
    assert any("required key 'port' is missing" in e for e in errors), errors


def test_celery_overlay_needs_its_config_block(values: dict[str, Any], schema: dict[str, Any]) -> None:
    # runLauncher.type CeleryK8sRunLauncher without config.celeryK8sRunLauncher: the chart's if/then catches it.
    values["runLauncher"]["type"] = "CeleryK8sRunLauncher"
    errors = check_values.validate(values, schema)
    assert any("required key 'celeryK8sRunLauncher' is missing" in e for e in errors), errors


def test_script_exit_codes(values: dict[str, Any], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    done = subprocess.run([sys.executable, "deploy/helm/check_values.py"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "values.yaml: OK" in done.stdout and "values.yaml + values-celery.yaml: OK" in done.stdout
    values["runLauncher"]["type"] = "K8sRunLaunchr"
    broken = tmp_path / "values.yaml"
    broken.write_text(yaml.safe_dump(values))
    monkeypatch.setattr(check_values, "VALUES", broken)
    assert check_values.main() == 1
    assert "K8sRunLaunchr" in capsys.readouterr().out
