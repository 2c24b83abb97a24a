"""deploy/helm's values files validate against the Dagster chart's values.schema.json, and a misspelt key fails.

Only schema validation (deploy/helm/check_values.py, the `jsonschema` library): no cluster, no `helm template`, no
install. The chart's own values.yaml (the defaults Helm merges under ours) is not vendored, see check_values.py.
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

pytestmark = pytest.mark.backend_independent


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


def test_deep_merge_is_helms() -> None:
    base: dict[str, Any] = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "gone": {"x": 1}, "kept": 1}
    overlay = {"a": {"c": [3], "d": {"f": 2}}, "gone": None, "new": [{"k": 1}]}
    assert check_values.deep_merge(base, overlay) == {
        "a": {"b": 1, "c": [3], "d": {"e": 1, "f": 2}},  # maps merge, lists are replaced
        "kept": 1,
        "new": [{"k": 1}],
    }  # and a null deletes the key
    assert base["a"]["c"] == [1, 2]  # the inputs are not changed


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


def _broken(
    values: dict[str, Any], path: list[str | int], key: str, new_key: str | None = None, value: Any = None
) -> dict[str, Any]:
    broken = copy.deepcopy(values)
    node: Any = broken
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
        (["runLauncher"], "type", None, "K8sRunLaunchr", "$.runLauncher.type: 'K8sRunLaunchr' is not one of"),
        (
            ["runLauncher", "config", "k8sRunLauncher"],
            "envSecrets",
            "envSecret",
            None,
            "$.runLauncher.config.k8sRunLauncher: Additional properties are not allowed ('envSecret' was unexpected)",
        ),
        (
            ["dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"],
            "maxConcurrentRuns",
            "maxConcurentRuns",
            None,
            "Additional properties are not allowed ('maxConcurentRuns' was unexpected)",
        ),
        (["dagsterDaemon"], "runRetries", "runRetry", None, "$.dagsterDaemon: Additional properties are not allowed"),
        (["dagsterDaemon", "runCoordinator"], "type", "typ", None, "('typ' was unexpected)"),
        (["telemetry"], "enabled", "enable", None, "$.telemetry: Additional properties are not allowed ('enable'"),
        (
            ["dagster-user-deployments", "deployments", 0],
            "port",
            None,
            "4266",
            "$['dagster-user-deployments'].deployments[0].port: '4266' is not of type 'integer'",
        ),
    ],
)
def test_misspelt_key_fails(
    values: dict[str, Any],
    schema: dict[str, Any],
    path: list[str | int],
    key: str,
    new_key: str | None,
    value: Any,
    expected,
) -> None:
    errors = check_values.validate(_broken(values, path, key, new_key, value), schema)
    assert any(expected in e for e in errors), errors


def test_incomplete_list_item_fails(values: dict[str, Any], schema: dict[str, Any]) -> None:
    # Helm replaces lists, so a user deployment without its port is an error even though maps get chart defaults.
    del values["dagster-user-deployments"]["deployments"][0]["port"]
    errors = check_values.validate(values, schema)
    assert "$['dagster-user-deployments'].deployments[0]: 'port' is a required property" in errors, errors


def test_required_map_key_fails_when_the_chart_does_not_provide_it(
    values: dict[str, Any], schema: dict[str, Any]
) -> None:
    # With chart defaults, `required` applies to maps too: a key neither the defaults nor our file give fails.
    # Stand-in defaults here (the chart's file is not vendored): they give `dagsterWebserver`, not its `replicaCount`.
    errors = check_values.validate(values, schema, chart_defaults={"dagsterWebserver": {"enableReadOnly": False}})
    assert "$.dagsterWebserver: 'replicaCount' is a required property" in errors, errors
    assert "$: 'busybox' is a required property" in errors, errors
    assert "$: 'dagsterWebserver' is a required property" not in errors, errors
    # Without defaults such map keys are not required (Helm would take them from the chart's values.yaml).
    assert check_values.validate(values, schema) == []


def test_kubernetes_object_refs_are_not_checked(values: dict[str, Any], schema: dict[str, Any]) -> None:
    # The schema's $refs to kubernetesjsonschema.dev resolve to `{}` (no network): any Kubernetes object passes.
    values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"] = {"cpus": 1}
    values["dagster-user-deployments"]["deployments"][0]["resources"] = {"requets": {"cpu": "1"}}
    assert check_values.validate(values, schema) == []


def test_script_exit_codes(values: dict[str, Any], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    done = subprocess.run([sys.executable, "deploy/helm/check_values.py"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "values.yaml: OK" in done.stdout and "values.yaml + values-celery.yaml: OK" in done.stdout
    values["runLauncher"]["type"] = "K8sRunLaunchr"
    broken = tmp_path / "values.yaml"
    broken.write_text(yaml.safe_dump(values))
    monkeypatch.setattr(check_values, "VALUES", broken)
    assert check_values.main() == 1
    assert "$.runLauncher.type: 'K8sRunLaunchr' is not one of" in capsys.readouterr().out
