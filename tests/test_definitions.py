"""The code location loads, the asset graph has the fixed shape, and migrations match the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from dagster import DynamicPartitionsDefinition

from pipeline.definitions import defs
from pipeline.models import Base
from tests.conftest import REPO, SIX_ASSETS

EXPECTED_GRAPH = {
    "keywords": ([], "planning", {"csv", "sql"}),
    "clusters": (["keywords"], "planning", {"scikitlearn", "sql", "llm"}),
    "ideas": (["clusters"], "planning", {"sql", "llm"}),
    "content": (["ideas"], "writing", {"sql", "llm", "html"}),
    "image_prompts": (["content"], "writing", {"sql", "llm"}),
    "images": (["image_prompts"], "writing", {"llm", "png"}),
    "publications": (["images"], "publishing", {"wordpress", "html"}),
    "experiments": (["publications"], "publishing", {"python"}),
}


def test_dagster_definitions_validate_passes_for_the_workspace(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PATH": str(Path(sys.executable).parent), "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Validation successful for code location content_pipeline" in result.stdout + result.stderr


def test_the_eight_assets_are_partitioned_by_sites_and_chained(tmp_path):
    graph = defs.resolve_asset_graph()
    keys = sorted(key.to_user_string() for key in graph.get_all_asset_keys())
    assert keys == sorted([*SIX_ASSETS, "publications", "experiments"])
    for key, (deps, group, kinds) in EXPECTED_GRAPH.items():
        spec = next(s for s in defs.resolve_all_asset_specs() if s.key.to_user_string() == key)
        assert isinstance(spec.partitions_def, DynamicPartitionsDefinition) and spec.partitions_def.name == "sites"
        assert [d.asset_key.to_user_string() for d in spec.deps] == deps
        assert spec.group_name == group
        assert set(spec.kinds) == kinds
        assert spec.description and len(spec.description) > 40, f"{key} needs a docstring for the UI"


def test_main_job_selects_all_six_assets():
    job = defs.resolve_job_def("content_pipeline")
    assert sorted(node.name for node in job.graph.node_defs) == sorted(SIX_ASSETS)


def test_publishing_is_its_own_job_and_calls_no_model():
    job = defs.resolve_job_def("publish_articles")
    assert [node.name for node in job.graph.node_defs] == ["publications"]
    required = defs.resolve_assets_def("publications").required_resource_keys
    assert "store" in required and "llm" not in required


def test_experiments_are_their_own_hourly_job_and_call_no_model():
    job = defs.resolve_job_def("run_experiments")
    assert [node.name for node in job.graph.node_defs] == ["experiments"]
    required = defs.resolve_assets_def("experiments").required_resource_keys
    assert "store" in required and "llm" not in required
    schedule = defs.resolve_schedule_def("ab_experiments")
    assert schedule.cron_schedule == "5 * * * *" and schedule.job_name == "run_experiments"


def test_model_calling_assets_get_the_llm_resource_by_parameter_name():
    for key in SIX_ASSETS:
        required = defs.resolve_assets_def(key).required_resource_keys
        assert ("llm" in required) == (key != "keywords"), key
        assert "store" in required


def test_alembic_migrations_produce_exactly_the_models_schema(env):
    with env.store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_pipeline_package_does_not_import_dagster_outside_its_entry_points():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "pipeline").rglob("*.py")
        # The code location and what it is run with: the executor choice and the Celery workers' app.
        if path.name not in {"definitions.py", "executor.py", "celery_app.py"}
        and path.parent.name != "cli"
        and "dagster" in path.read_text()
        and any(line.startswith(("import dagster", "from dagster")) for line in path.read_text().splitlines())
    ]
    assert offenders == []
