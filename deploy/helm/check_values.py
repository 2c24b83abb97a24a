"""Validate deploy/helm/values.yaml (and values.yaml + values-celery.yaml) against the Dagster chart's schema.

Schema provenance: deploy/helm/values.schema.json is `helm/dagster/values.schema.json` of github.com/dagster-io/dagster
at commit bdb8547fab497826eeec292bc160b549a0a329ef (read from a stored copy of the repository; sha256
cccbf9a9956cf32b240ef7fc2f4735e03c02db369f15ff444b06492544f8503a, 100951 bytes), unmodified. The chart in the repository
carries a placeholder version; that commit's schema has every key used here (codeServerArgs, runMonitoring, runRetries,
additionalInstanceConfig) and is meant to match the chart released with dagster 1.13.x. Refresh it from the chart
actually installed (`helm pull dagster/dagster --version 1.13.27 --untar`) before relying on it.

The `jsonschema` package is not installed here, so this file carries a small draft-7 validator for the keywords the
schema uses (type, enum, const, properties, additionalProperties, required, items, minItems, exclusiveMinimum, anyOf,
allOf, if/then, local $ref). How it differs from `helm install`:

- `required` is checked only inside list items. Helm validates our values merged over the chart's own values.yaml,
  which fills every required map key; that file is not vendored here. Lists are replaced, not merged, so a list
  item (a user deployment, a worker queue, a tag limit) must be complete in our file, and is checked so.
- `$ref`s to kubernetesjsonschema.dev (Kubernetes objects: volumes, env sources, resources) are not fetched (no
  network); their sibling keywords (mostly `type`) still apply.

Usage: python deploy/helm/check_values.py  (exit 1 and one line per error when a file does not validate)
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "values.schema.json"
VALUES = HERE / "values.yaml"
CELERY = HERE / "values-celery.yaml"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


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


class Validator:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = schema

    def _resolve(self, ref: str) -> Mapping[str, Any] | None:
        if not ref.startswith("#/"):
            return None  # remote (kubernetesjsonschema.dev): not fetched, see the module docstring
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def errors(self, value: Any, schema: Mapping[str, Any], path: str = "", required: bool = False) -> Iterator[str]:
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            if target is not None:  # draft 7: a local $ref replaces its siblings
                yield from self.errors(value, target, path, required)
                return
        where = path or "<root>"
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, n) for n in names):
                yield f"{where}: {value!r} is not of type {'/'.join(names)}"
                return
        if "enum" in schema and value not in schema["enum"]:
            yield f"{where}: {value!r} is not one of {schema['enum']}"
        if "const" in schema and value != schema["const"]:
            yield f"{where}: {value!r} is not {schema['const']!r}"
        if "exclusiveMinimum" in schema and _is_type(value, "number") and not value > schema["exclusiveMinimum"]:
            yield f"{where}: {value!r} is not > {schema['exclusiveMinimum']}"
        if isinstance(value, dict):
            props = schema.get("properties", {})
            if required:
                for key in schema.get("required", []):
                    if key not in value:
                        yield f"{where}: required key {key!r} is missing"
            extra = schema.get("additionalProperties", True)
            for key, item in value.items():
                sub = f"{path}.{key}" if path else str(key)
                if key in props:
                    yield from self.errors(item, props[key], sub, required)
                elif extra is False:
                    yield f"{where}: unknown key {key!r} (allowed: {', '.join(props)})"
                elif isinstance(extra, Mapping):
                    yield from self.errors(item, extra, sub, required)
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                yield f"{where}: needs at least {schema['minItems']} item(s)"
            if isinstance(schema.get("items"), Mapping):
                for i, item in enumerate(value):
                    # Lists are replaced by Helm, never merged with the chart's defaults: items must be complete.
                    yield from self.errors(item, schema["items"], f"{path}[{i}]", required=True)
        if "anyOf" in schema:
            branches = [list(self.errors(value, s, path, required)) for s in schema["anyOf"]]
            if all(branches):
                best = min(branches, key=len)
                yield f"{where}: matches none of anyOf; closest: {'; '.join(best)}"
        for sub_schema in schema.get("allOf", []):
            yield from self.errors(value, sub_schema, path, required)
        if "if" in schema and not list(self.errors(value, schema["if"], path, required)) and "then" in schema:
            # The chart's if/then say "config must have the block for the chosen type": a required check
            # the chart's defaults do not satisfy (they only fill the default type's block), so it always applies.
            yield from self.errors(value, schema["then"], path, required=True)


def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    return json.loads(path.read_text())


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is not a map")
    return data


def validate(values: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every schema error in `values` (an empty list when it validates)."""
    schema = schema if schema is not None else load_schema()
    return list(Validator(schema).errors(dict(values), schema))


def value_sets() -> dict[str, dict[str, Any]]:
    """The two value sets we install: values.yaml, and values.yaml with the Celery overlay merged over it."""
    base = load_yaml(VALUES)
    return {"values.yaml": base, "values.yaml + values-celery.yaml": deep_merge(base, load_yaml(CELERY))}


def main() -> int:
    schema = load_schema()
    failed = False
    for name, values in value_sets().items():
        errors = validate(values, schema)
        print(f"{name}: {'OK' if not errors else f'{len(errors)} error(s)'}")
        for error in errors:
            print(f"  {error}")
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
