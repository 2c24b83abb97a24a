"""Structured outputs: the forms of a structured chat request, per-request schema constraints, parsing.

A structured answer is asked for in one of `STRUCTURED_FORMS`, most precise first: strict `json_schema`
(the request `chat.completions.parse` sends, built once per answer class), `json_object` with a `schema`
(llama.cpp's grammar-constrained extension), or plain `json_object` with the schema in the instructions.
A task's choices become `enum`s and known array sizes `minItems`/`maxItems` of a per-request copy of the
schema. Answers are validated the same way whatever the form (`parse_answer`).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

from openai import omit
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, ValidationError

# Structured-output forms, most precise first.
STRUCTURED_FORMS = ("json_schema", "json_object with schema", "json_object")


def chat_arguments(
    messages: list[dict[str, str]],
    model: str,
    max_output_tokens: int,
    schema: type[BaseModel],
    choices: tuple[tuple[str, tuple[str, ...]], ...] = (),
    form: int = 0,
    sizes: tuple[tuple[str, int, int], ...] = (),
) -> dict[str, Any]:
    """Keyword arguments of `chat.completions.create` for one structured call in `STRUCTURED_FORMS[form]`.

    The whole body travels in `extra_body`, which the SDK merges into the JSON body as-is; the typed
    `model` and `messages` the signature requires are given as `omit`, which the SDK leaves out. Passed as
    typed parameters, the SDK walks each through its parameter transform on every call (messages and schema
    cost about a third of its client CPU per request, `model`'s union with a long `Literal` of model names
    another ~0.1 ms: measured), and none of them holds anything the transform would change (no aliases,
    files or dates).
    """
    strict = response_format(schema, choices, sizes)
    if form == 0:
        body: dict[str, Any] = {"messages": messages, "response_format": strict}
    elif form == 1:
        body = {"messages": messages, "response_format": {"type": "json_object", "schema": strict_schema(strict)}}
    else:
        instructions = {
            "role": "system",
            "content": "Answer with one JSON object that matches this JSON schema exactly:\n"
            + json.dumps(strict_schema(strict)),
        }
        body = {"messages": [*messages, instructions], "response_format": {"type": "json_object"}}
    body["model"] = model
    body["max_completion_tokens"] = max_output_tokens
    if form > 0:
        # Servers without strict structured outputs (llama.cpp) read the older `max_tokens`, not
        # `max_completion_tokens`: both are sent, so the cap holds there too.
        body["max_tokens"] = max_output_tokens
    return {"model": omit, "messages": omit, "extra_body": body}


@functools.lru_cache(maxsize=2048)
def response_format(
    schema: type[BaseModel],
    choices: tuple[tuple[str, tuple[str, ...]], ...] = (),
    sizes: tuple[tuple[str, int, int], ...] = (),
) -> dict[str, Any]:
    """The strict `json_schema` response format for `schema`, with `enum`s for `choices`, built once.

    Without choices it is exactly what `chat.completions.parse` sends; building it per call costs more
    client CPU than the HTTP request itself, so the provider calls `create` with this and validates the
    answer itself. Each choice is a dotted path of properties (arrays are stepped through) whose value,
    or whose items, must be one of the given strings; each size bounds the array at its path.
    """
    if not choices and not sizes:
        return type_to_response_format_param(schema)  # type: ignore[return-value]
    # Copy-on-write: only the dicts on the constrained paths are copied (a deep copy of the whole schema
    # per request would cost more client CPU than the constraint saves).
    base = response_format(schema)
    root = dict(strict_schema(base))
    constrained = {**base, "json_schema": {**base["json_schema"], "schema": root}}
    for path, values in choices:
        _constrain(root, path, {"enum": list(values)})
    for path, low, high in sizes:
        _constrain(root, path, {"minItems": low, "maxItems": high}, array=True)
    return constrained


def strict_schema(response_format: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema inside a `json_schema` response format."""
    schema: dict[str, Any] = response_format["json_schema"]["schema"]
    return schema


def _constrain(root: dict[str, Any], path: str, keywords: dict[str, Any], *, array: bool = False) -> None:
    """Add JSON-schema `keywords` to the value at `path`: to the string (or the items of the string array)
    there, or with `array` to the array itself. Every dict on the way is copied into its (already copied)
    holder and shared `$defs` are inlined, so the constraint applies to this request's path only and the
    class-wide schema stays as it was."""
    definitions = root.get("$defs", {})

    def inline(holder: dict[str, Any], key: str, step_into_arrays: bool = True) -> dict[str, Any]:
        node = holder[key]
        node = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]]) if "$ref" in node else dict(node)
        holder[key] = node
        if step_into_arrays and node.get("type") == "array":
            return inline(node, "items")
        return node

    node = root  # copied by the caller
    names = path.split(".")
    for index, name in enumerate(names):
        if name not in node.get("properties", {}):
            raise KeyError(f"choices path {path!r}: no property {name!r} in the answer schema")
        node["properties"] = dict(node["properties"])
        holder, key = node["properties"], name
        if index < len(names) - 1:
            node = inline(holder, key)
    inline(holder, key, step_into_arrays=not array).update(keywords)


# Control characters no stored text may hold (PostgreSQL refuses NUL; the rest corrupt terminals and
# exports). Tab, newline and carriage return stay.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ESCAPED_CONTROL = re.compile(r"\\u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])")


def parse_answer(schema: type[BaseModel], content: str) -> BaseModel:
    """Validate an answer's JSON into `schema`, without control characters in any string.

    Grammar-constrained servers (llama.cpp) can put raw control characters (newlines and tabs too) inside
    strings, which strict JSON refuses; hostile answers can spell them as escapes (`\\u0000`). Either way
    the strings are cleaned (newlines and tabs kept as text) before the stage sees them. Answers without
    any (nearly all) cost nothing extra.
    """
    if not _CONTROL.search(content) and not _ESCAPED_CONTROL.search(content):
        try:
            return schema.model_validate_json(content)
        except ValidationError as error:
            # A raw newline or tab inside a string (llama.cpp's grammar allows them): strict JSON refuses
            # it, the lenient reading below keeps it as text. Any other problem is the answer's.
            if not any(e["type"] == "json_invalid" and "control character" in e["msg"] for e in error.errors()):
                raise
    try:
        raw = json.loads(content, strict=False)
    except ValueError:
        return schema.model_validate_json(content)  # raises the ValidationError the caller reports
    return schema.model_validate(_without_control(raw))


def _without_control(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, list):
        return [_without_control(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_control(item) for key, item in value.items()}
    return value
