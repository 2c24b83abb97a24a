"""Validate deploy/helm/values.yaml (and values.yaml + values-celery.yaml) against the Dagster chart's schema.

Schema provenance: deploy/helm/values.schema.json is `helm/dagster/values.schema.json` of github.com/dagster-io/dagster
at commit bdb8547fab497826eeec292bc160b549a0a329ef (read from a stored copy of the repository; sha256
cccbf9a9956cf32b240ef7fc2f4735e03c02db369f15ff444b06492544f8503a, 100951 bytes), unmodified. The chart in the repository
carries a placeholder version; that commit's schema has every key used here (codeServerArgs, runMonitoring, runRetries,
additionalInstanceConfig) and is meant to match the chart released with dagster 1.13.x. Refresh it from the chart
actually installed (`helm pull dagster/dagster --version 1.13.27 --untar`) before relying on it.

Chart defaults: Helm validates our values deep-merged over the chart's own `helm/dagster/values.yaml`, which fills
every map key the schema requires. That file is NOT vendored: the stored copy of dagster-io/dagster has
`helm/dagster/values.yaml` only at commit 0d2124b9953361585736728544da07414932ebeb, a chart years older than the
schema (`dagit`, `userDeployments`, `dagsterDaemon.queuedRunCoordinator`, no `dagsterWebserver`/`busybox`/`migrate`);
merged with this schema it fails on its own, so it cannot stand in. With the matching file saved as
deploy/helm/chart-values.yaml (`helm show values dagster/dagster --version 1.13.27 > deploy/helm/chart-values.yaml`,
from the same chart as the schema) this script merges it under our files and validates exactly what Helm does.

Validation is the `jsonschema` library's Draft7Validator (the schema declares no `$schema`; it is pydantic-generated
draft-7 style, `definitions` and `$ref`s into them). Without the chart defaults, `required` is enforced only inside
list items: Helm replaces lists, so a list item (a user deployment, a worker queue, a tag limit) must be complete in
our file, while a map's missing keys would come from the chart. Every other keyword (type, enum, const,
additionalProperties, anyOf, if/then, ...) is checked everywhere by the library. The schema's `$ref`s to
kubernetesjsonschema.dev (Kubernetes objects: volumes, env sources, resources, probes) are not fetched (no network):
they resolve to the empty, permissive schema `{}`.

Usage: python deploy/helm/check_values.py  (exit 1 and one line per error, with its JSON path, when a set fails)
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, validators  # type: ignore[import-untyped]
from jsonschema.exceptions import WEAK_MATCHES, ValidationError, best_match, by_relevance  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "values.schema.json"
VALUES = HERE / "values.yaml"
CELERY = HERE / "values-celery.yaml"
CHART_VALUES = HERE / "chart-values.yaml"  # the chart's defaults; absent, see the module docstring


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of two values files: maps merge key by key, anything else (lists too) is replaced, null deletes."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _AnySchema(dict[str, Any]):
    """An empty schema in which every JSON pointer (`#/definitions/io.k8s...`) resolves to another empty schema."""

    def __missing__(self, key: str) -> _AnySchema:
        return _AnySchema()


def _registry() -> Registry[Any]:
    # No network: every external `$ref` (only kubernetesjsonschema.dev ones in this schema) resolves to `{}`,
    # which accepts anything. Permissive on purpose: the Kubernetes objects inside our values are not checked here.
    # (referencing's attrs classes take these as keyword arguments; mypy's attrs plugin misses the private names)
    return Registry(retrieve=lambda uri: Resource(contents=_AnySchema(), specification=DRAFT7))  # type: ignore[call-arg]


class _ListItem(dict[str, Any]):
    """A map that came from a list (or sits inside one): Helm replaces lists, so it gets no chart defaults."""


def _mark_list_items(value: Any, in_list: bool = False) -> Any:
    if isinstance(value, Mapping):
        items = {k: _mark_list_items(v, in_list) for k, v in value.items()}
        return _ListItem(items) if in_list else items
    if isinstance(value, list):
        return [_mark_list_items(v, True) for v in value]
    return value


def _required_in_list_items(validator: Any, required: list[str], instance: Any, schema: Any) -> Iterator[Any]:
    if isinstance(instance, _ListItem):
        yield from Draft7Validator.VALIDATORS["required"](validator, required, instance, schema)


# Draft 7 with `required` applied only to list items: used when the chart's defaults are not at hand.
_ListRequiredValidator = validators.extend(Draft7Validator, {"required": _required_in_list_items})


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    """The chart's values schema."""
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is not a map")
    return data


def load_chart_defaults(path: Path = CHART_VALUES) -> dict[str, Any] | None:
    """The chart's own values.yaml, or None when it is not vendored."""
    return load_yaml(path) if path.exists() else None


# The chart's optional blocks are `anyOf: [<block>, {type: null}]`: the null branch's type error is the least telling.
_RELEVANCE = by_relevance(weak=WEAK_MATCHES | {"type"})


def _format(error: ValidationError) -> str:
    if error.context:  # anyOf/oneOf: name what failed in the branch that came closest, not the whole value
        best = best_match(error.context, key=_RELEVANCE)
        return f"{best.json_path}: {best.message} (in the closest branch of {error.validator})"
    return f"{error.json_path}: {error.message}"


def validate(
    values: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    chart_defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every schema error in `values` as "<JSON path>: <message>" (an empty list when it validates).

    With `chart_defaults`, `values` is merged over them as Helm does and the whole schema applies (as `helm install`);
    without, `required` applies inside list items only (see the module docstring).
    """
    schema = schema if schema is not None else load_schema()
    if chart_defaults is not None:
        instance: Any = deep_merge(chart_defaults, values)
        validator = Draft7Validator(schema, registry=_registry())
    else:
        instance = _mark_list_items(deep_merge({}, values))  # still drops nulls, as Helm does
        validator = _ListRequiredValidator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: (e.json_path, e.message))
    return [_format(e) for e in errors]


def value_sets() -> dict[str, dict[str, Any]]:
    """The two value sets we install: values.yaml, and values.yaml with the Celery overlay merged over it."""
    base = load_yaml(VALUES)
    return {"values.yaml": base, "values.yaml + values-celery.yaml": deep_merge(base, load_yaml(CELERY))}


def main() -> int:
    schema = load_schema()
    defaults = load_chart_defaults()
    if defaults is None:
        print(f"{CHART_VALUES.name} not found: `required` checked inside list items only")
    failed = False
    for name, values in value_sets().items():
        errors = validate(values, schema, defaults)
        print(f"{name}: {'OK' if not errors else f'{len(errors)} error(s)'}")
        for error in errors:
            print(f"  {error}")
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
