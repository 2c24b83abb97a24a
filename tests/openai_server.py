"""A loopback OpenAI-compatible HTTP server for tests and benchmarks.

It lets the project exercise the *real* `openai` SDK (its HTTP client, retries, timeouts and parsing) with
no network and no key, and reproduces how real OpenAI-compatible providers differ. Three endpoints are
served under `/v1` (plus the Files and Batches endpoints of `tests.openai_batches`, on the same app):

- `POST /v1/chat/completions`: structured outputs; the answer's JSON comes back as `message.content` with
  `usage` (4 characters per token; `cached_tokens` is the system prompt's token count when the same model
  and system prompt were seen before, mimicking prompt caching). `max_completion_tokens` / `max_tokens`
  smaller than the answer truncates it with `finish_reason="length"`. Which JSON schema an answer follows:
  `response_format={"type": "json_schema", "json_schema": {"name", "schema"}}` (what the SDK's
  `chat.completions.parse(response_format=Model)` sends, named after the Pydantic class),
  `{"type": "json_object", "schema": {...}}` (llama.cpp's extension), or, for `{"type": "json_object"}`,
  `{"type": "text"}` or no `response_format`, the first JSON schema (a JSON object with `"properties"`)
  embedded in a system or user message outside the `<data>` block. With no schema, `json_object` is
  answered `{}` and text with 40-60 filler words (hostile in `hostile` mode, none in `empty` mode).
- `POST /v1/images/generations`: base64 PNGs from `pipeline.llm.offline.render_png`.
- `POST /v1/embeddings`: deterministic unit vectors from hashed word and character-trigram features (so
  phrases sharing words are close), as floats or as the base64 float32 the SDK asks for by default.

How chat answers are written (`answers`, settable at run time like every mode below):

- `composer` (default): the schema's name (json_schema) or `title` (json_object / embedded schema) picks
  a deterministic composer of `pipeline.llm.offline` (`ClusterNames`, `IdeaBatch`, `ArticleDraft`,
  `ImagePromptSet`, `MetricsAnalysis`; the prompt names `cluster_names`, `ideas`, `article`,
  `image_prompts`, `metrics_analysis` are accepted as aliases; any other name is a 400 `unknown_schema`),
  which answers from the JSON between `<data>` and `</data>` in the newest user message carrying one.
- `schema_only`: a provider that follows the JSON schema and ignores the prompt's prose: the answer is built
  from the schema alone (`$ref`/`$defs`, `allOf`, `anyOf`/`oneOf`/nullable, objects, arrays with
  `minItems`/`maxItems`, `enum`, `const`, strings with `format`/`minLength`/`maxLength`, integers, numbers,
  booleans; `pattern` is ignored), seeded by a hash of the messages (the same request gets the same
  answer). Enum values are picked from the enum (arrays of enum strings get distinct values); other
  strings are filler unrelated to the data: 40-60 words for body-text names (`html`, `intro_html`,
  `text`, `description`, `angle`, `prompt`, ...; see `BODY_TEXT_FIELDS`), 3-6 words otherwise; arrays get
  3 items; integers a plausible number such as 1200. The `<data>` block is never read. See `schema_answer`.
- `hostile`: like `schema_only`, but every free-text (non-enum) string is hostile, rotating through
  `HOSTILE_STRINGS` (script tags, javascript: links, spreadsheet formulas, ANSI escapes, a NUL byte, YAML
  front matter, a 5,000-character string...); body-text strings mix the snippet into 40-60 filler words.
- `empty`: the "empty answer" some providers return: every array `[]`, every string `""` (whatever
  `minItems`/`minLength` say), numbers 0 (or their minimum), booleans false; objects keep all their keys
  and enums their first value.

Which `response_format` forms are supported (`structured_outputs`):

- `json_schema` (default, like OpenAI): `json_schema`, `json_object` (with or without `schema`) and `text`.
- `json_object` (like llama.cpp's server): a `json_schema` request gets HTTP 500 with llama-cpp-python's
  body (`LLAMA_CPP_FORMAT_ERROR`: a pydantic "Input should be 'text' or 'json_object'" literal error
  wrapped as `internal_server_error`), which the SDK retries; `json_object` and `text` are answered.
- `text`: any `response_format` but `text` gets HTTP 400 `response_format is not supported`.

`embeddings_available=False` makes `/v1/embeddings` answer llama.cpp's HTTP 500 "Llama model must be created
with embedding=True to call this method"; `images_available=False` makes `/v1/images/generations` a bare
404 `{"detail": "Not Found"}` (no authentication, no faults, as for a route that does not exist).

Every request needs `Authorization: Bearer <non-empty>` (else 401). Answers (and scripted faults) leave
`latency_ms` after their request arrived, waited out with `asyncio.sleep`, so concurrent requests overlap
for real and the server's own work happens within the latency, as a real provider's does. Faults are
scripted by a `FaultPlan`: an explicit queue consumed in request order, and/or a seeded rate that picks a
fault kind per request deterministically. Kinds: `rate_limit` (429 with `retry-after-ms`), `server_error`
(500), `hang` (no answer for `hang_seconds`, then a normal one), `close` (the request is read, then the TCP
connection is closed with no HTTP response: the SDK sees a connection error, neither a timeout nor a 500),
`non_json` (a 200 whose body is not JSON), `unauthorized` (401), `bad_request` (400), and for chat only
`schema_invalid`, `truncated`, `refusal`. Every request is recorded in a thread-safe `RequestLog`
(`RequestRecord.response_format` is the chat request's `response_format.type`).

Files and Batches (`tests/openai_batches.py`): `POST/GET /v1/files`, `GET|DELETE /v1/files/{id}`,
`GET /v1/files/{id}/content`, `POST/GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.
Batch lines are answered by `chat_completion` / `embedding_response`, the code answering the real-time
endpoints (same answers and usage, no latency). Knobs: `LoopbackOpenAI.batch` (`polls_until_done`,
`fail_custom_ids`, `fail_rate`, `invalid_custom_ids`, `expire_next`, ...); `LoopbackOpenAI.batches()` lists
the created batches. Requests are logged with paths `files` / `batches` (`RequestRecord.endpoint`,
`.custom_ids`), and the fault plan applies to them (`Fault(kind, path="batches")`).

`DeadEndpoint(mode="hang"|"close"|"refuse")` is a raw TCP endpoint with no HTTP server behind it: it accepts
connections and never answers, reads a request and closes the connection, or refuses connections.

In tests::

    with LoopbackOpenAI(latency_ms=0) as server:
        server.plan.push(Fault("rate_limit"))
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key", timeout=2, max_retries=2)
        client.chat.completions.parse(model="m", messages=..., response_format=ClusterNames)
        assert [r.fault for r in server.requests] == ["rate_limit", None]

    with LoopbackOpenAI(answers="hostile", structured_outputs="json_object", embeddings_available=False):
        ...

As a separate process (benchmarks)::

    python -m tests.openai_server --port 0 --latency-ms 100 [--fault-rate 0.2 --fault-kinds rate_limit,server_error
                                                          --seed 7] [--answers schema_only]
                                                          [--structured-outputs json_object]
                                                          [--no-embeddings] [--no-images] [--batch-polls 3]

run from the repository root, prints one line `READY http://127.0.0.1:PORT/v1` once it listens, and serves
until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import json
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, get_args

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.llm.offline import (
    analyse_metrics,
    describe_images,
    name_clusters,
    plan_ideas,
    render_png,
    write_article,
)
from pipeline.llm.offline_revise import optimize_article

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "hang",
    "close",
    "non_json",
    "schema_invalid",
    "truncated",
    "refusal",
    "unauthorized",
    "bad_request",
]
PathName = Literal["chat", "images", "embeddings", "files", "batches"]
AnswerMode = Literal["composer", "schema_only", "hostile", "empty"]
StructuredOutputs = Literal["json_schema", "json_object", "text"]

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
PATH_NAMES: tuple[str, ...] = get_args(PathName)
ANSWER_MODES: tuple[str, ...] = get_args(AnswerMode)
STRUCTURED_OUTPUTS: tuple[str, ...] = get_args(StructuredOutputs)
CHAT_ONLY_KINDS = frozenset({"schema_invalid", "truncated", "refusal"})
"""Kinds that only make sense for a chat completion; they never apply to images or embeddings."""

REFUSAL_TEXT = "I can't help with that"
NON_JSON_BODY = "<html>upstream error</html>"
DEFAULT_HANG_SECONDS = 30.0
EMBEDDING_DIMENSIONS = 256

COMPOSERS: dict[str, Callable[[Mapping[str, Any]], BaseModel]] = {
    "ClusterNames": name_clusters,
    "IdeaBatch": plan_ideas,
    "ArticleDraft": write_article,
    "ImagePromptSet": describe_images,
    "MetricsAnalysis": analyse_metrics,
    "OptimizedArticle": optimize_article,
    # Prompt names as aliases, for callers that name the schema after the prompt.
    "cluster_names": name_clusters,
    "ideas": plan_ideas,
    "article": write_article,
    "image_prompts": describe_images,
    "metrics_analysis": analyse_metrics,
    "article_optimize": optimize_article,
}
"""Schema name (as sent in `response_format.json_schema.name`, or a json_object schema's `title`) -> offline
composer, for `answers="composer"`."""

LLAMA_CPP_APP = "/usr/local/lib/python3.11/site-packages/llama_cpp/server/app.py"
LLAMA_CPP_FORMAT_ERROR = (
    "1 validation error:\n  {detail!r}\n\n"
    f'  File "{LLAMA_CPP_APP}", line 376, in create_chat_completion\n    POST /v1/chat/completions'
)
"""The `error.message` llama-cpp-python 0.3.36's server sends (with HTTP 500) for a `response_format.type` it does
not know, as seen from a real server; `detail` is the pydantic error dict."""
LLAMA_CPP_NO_EMBEDDINGS = "Llama model must be created with embedding=True to call this method"
TEXT_ONLY_ERROR = "response_format is not supported"

BODY_TEXT_FIELDS = frozenset(
    {
        "html",
        "intro_html",
        "conclusion_html",
        "text",
        "body",
        "content",
        "summary",
        "description",
        "angle",
        "prompt",
        "underperformed",
        "comparison",
        "brief_a",
        "brief_b",
    }
)
"""Property names whose generated strings are body text (40-60 words); names ending in `_html` count too.
Other strings (`title`, `heading`, `alt_text`, ...) get 3-6 words."""

HOSTILE_STRINGS: tuple[str, ...] = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    '=HYPERLINK("http://evil.example","x")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3+cmd|' /C calc'!A0",
    "free casino bonus",
    "\u001b[31mred\u001b[0m",
    '"]}{',
    "---\ntitle: pwned",
    "nul\u0000byte",
    "{{7*7}} ${7*7}",
    "../../etc/passwd",
    "\u202egnp.exe",
    "A" * 5000,
)
"""Free-text values of `answers="hostile"`, used in rotation."""

FILLER_WORDS: tuple[str, ...] = tuple(
    (
        "the a team reviewed several practical options across different settings and found that each one "
        "works well when planned with care most people prefer simple steps over long lists because clear "
        "choices save time later small changes often matter more than large ones in daily routines while "
        "experts suggest testing ideas early before committing to a plan this approach keeps results steady "
        "over weeks and months without extra cost or effort for anyone involved"
    ).split()
)
"""Vocabulary of the filler text (deliberately unrelated to any pipeline data)."""

_DATA = re.compile(r"<data>\s*(.*?)\s*</data>", re.DOTALL)
_SIZE = re.compile(r"(\d{2,4})x(\d{2,4})")


# -- fault plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One scripted fault, optionally limited to a path (`chat`/`images`/`embeddings`) and a schema name."""

    kind: FaultKind
    path: PathName | None = None
    schema: str | None = None
    hang_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if self.path is not None and self.path not in PATH_NAMES:
            raise ValueError(f"unknown path {self.path!r}; expected one of {', '.join(PATH_NAMES)}")

    def applies_to(self, path: str, schema: str | None) -> bool:
        """Whether this fault may be applied to a request on `path` for `schema`."""
        if self.kind in CHAT_ONLY_KINDS and path != "chat":
            return False
        if self.path is not None and self.path != path:
            return False
        return self.schema is None or self.schema == schema


@dataclass
class FaultPlan:
    """Deterministic faults: an explicit queue first, then a seeded rate.

    - `queue`: consumed in request order. Each request takes the first entry that applies to it (see
      `Fault.applies_to`); a `None` entry applies to any request and means "answer normally".
    - `rate`, `kinds`, `seed`: when no queued entry applies, the n-th eligible request (eligible: matching
      `path` and `schema` when set) gets a fault with probability `rate`, its kind picked from `kinds`
      (those applicable to the path), both derived from `hash(seed, n)`: the same seed and request order
      give the same faults.
    - `hang_seconds`: how long a `hang` fault sleeps before answering normally, unless the fault says.
    """

    queue: list[Fault | None] = field(default_factory=list)
    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = ("rate_limit", "server_error")
    seed: int = 0
    path: PathName | None = None
    schema: str | None = None
    hang_seconds: float = DEFAULT_HANG_SECONDS
    _drawn: int = field(default=0, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate}")
        for kind in self.kinds:
            Fault(kind)  # validates the kind
        self.kinds = tuple(self.kinds)

    def push(self, *faults: Fault | FaultKind | None) -> FaultPlan:
        """Append faults (or bare kind names, or `None` for "no fault") to the queue; returns the plan."""
        with self._lock:
            self.queue.extend(Fault(f) if isinstance(f, str) else f for f in faults)
        return self

    def next_fault(self, path: str, schema: str | None) -> Fault | None:
        """The fault for the next request on `path` for `schema`, consuming it; `None` for no fault."""
        with self._lock:
            for index, fault in enumerate(self.queue):
                if fault is None or fault.applies_to(path, schema):
                    del self.queue[index]
                    return fault
            if self.rate <= 0.0 or not self.kinds:
                return None
            if (self.path is not None and self.path != path) or (self.schema is not None and self.schema != schema):
                return None
            draw = self._drawn
            self._drawn += 1
        if _unit(self.seed, draw, "rate") >= self.rate:
            return None
        kinds = [k for k in self.kinds if Fault(k).applies_to(path, schema)]
        if not kinds:
            return None
        return Fault(kinds[int(_unit(self.seed, draw, "kind") * len(kinds))])

    def reset(self) -> None:
        """Empty the queue and restart the rate's draw sequence."""
        with self._lock:
            self.queue.clear()
            self._drawn = 0


def _unit(seed: int, index: int, salt: str) -> float:
    """A deterministic number in [0, 1) from (seed, index, salt)."""
    digest = hashlib.blake2b(f"{seed}:{index}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# -- request log --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One request the server received (logged before latency and faults are applied)."""

    path: str
    model: str | None
    schema: str | None
    fault: str | None
    time: float
    response_format: str | None = None
    """The chat request's `response_format.type` (`json_schema`, `json_object`, `text`...), `None` when absent."""
    client_gone: bool = False
    """The client hung up before its body was read (its own timeout ran out while this busy server had not yet
    got to it): the request still counts, as the client's SDK counts it as an attempt."""
    endpoint: str | None = None
    """Method and route of a Files/Batches request (`POST /v1/batches`, `GET /v1/batches/{id}`...)."""
    custom_ids: tuple[str, ...] = ()
    """For `POST /v1/batches`: the `custom_id`s of the input file's lines, in file order."""


class RequestLog:
    """Thread-safe log of requests with counters per path and per fault kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._paths: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()

    def add(self, record: RequestRecord) -> None:
        """Record one request."""
        with self._lock:
            self._records.append(record)
            self._paths[record.path] += 1
            if record.fault is not None:
                self._faults[record.fault] += 1

    def records(self, path: str | None = None) -> list[RequestRecord]:
        """A snapshot of the records, in arrival order, optionally for one path."""
        with self._lock:
            return [r for r in self._records if path is None or r.path == path]

    def by_path(self) -> dict[str, int]:
        """Requests per path (`chat`, `images`, `embeddings`, `files`, `batches`, `unauthenticated`)."""
        with self._lock:
            return dict(self._paths)

    def by_fault(self) -> dict[str, int]:
        """Requests per applied fault kind."""
        with self._lock:
            return dict(self._faults)

    def reset(self) -> None:
        """Forget every record and counter."""
        with self._lock:
            self._records.clear()
            self._paths.clear()
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


# -- schema-driven answers ----------------------------------------------------------------------------

MAX_SCHEMA_DEPTH = 48
"""Nesting beyond which a schema is refused (a recursive schema whose recursion is required)."""
SHALLOW_DEPTH = 12
"""Nesting beyond which (or within a `$ref` that recurs into itself) the answer is cut short: arrays get
`minItems` items, optional keys are left out and nullable values are null."""


def schema_answer(schema: Any, mode: AnswerMode = "schema_only", seed: int = 0) -> Any:
    """A value following the JSON `schema` alone, for `answers` = `schema_only`, `hostile` or `empty`.

    Deterministic for a given (schema, mode, seed). A root schema that describes nothing (`{}`) gives `{}`,
    the JSON object a json-mode provider answers. Raises `ValueError` for a schema it cannot satisfy
    (recursion that is required at every level).
    """
    if mode not in {"schema_only", "hostile", "empty"}:
        raise ValueError(f"schema_answer has no mode {mode!r}")
    return _SchemaAnswerer(schema, mode, seed).answer()


def messages_seed(messages: Any) -> int:
    """The seed of a request's schema-driven answer: a hash of its messages."""
    text = json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def is_body_text(name: str | None) -> bool:
    """Whether a string property called `name` holds body text (see `BODY_TEXT_FIELDS`)."""
    return name is not None and (name in BODY_TEXT_FIELDS or name.endswith("_html"))


class _SchemaAnswerer:
    """One schema-driven answer: a seeded random source, the hostile rotation and `$ref` resolution."""

    def __init__(self, schema: Any, mode: str, seed: int) -> None:
        self.root = schema if isinstance(schema, Mapping) else {}
        self.mode = mode
        self.rng = random.Random(seed)
        self.hostile = seed % len(HOSTILE_STRINGS)
        self.active: list[str] = []  # the $refs being expanded, outermost first
        self.recurring = 0  # how many of them recur into themselves

    def shallow(self, depth: int) -> bool:
        """Whether to cut the answer short here (recursion, or very deep nesting)."""
        return self.recurring > 0 or depth > SHALLOW_DEPTH

    def answer(self) -> Any:
        node = self.resolve(self.root)
        if not any(key in node for key in ("type", "properties", "items", "enum", "const", "anyOf", "oneOf")):
            return {}
        return self.value(self.root, None, 0)

    # schema navigation

    def resolve(self, node: Any, hops: int = 0) -> dict[str, Any]:
        """`node` with `$ref` followed and `allOf` merged (sibling keywords win)."""
        if not isinstance(node, Mapping):
            return {}
        resolved: dict[str, Any] = dict(node)
        while "$ref" in resolved:
            hops += 1
            if hops > MAX_SCHEMA_DEPTH:
                raise ValueError("too many $ref hops (a $ref cycle?)")
            target = self.pointer(resolved.pop("$ref"))
            resolved = {**target, **resolved}
        if isinstance(resolved.get("allOf"), list):
            parts = [self.resolve(part, hops + 1) for part in resolved.pop("allOf")]
            merged: dict[str, Any] = {}
            for part in parts:
                for key, value in part.items():
                    if key == "properties" and isinstance(value, Mapping):
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required" and isinstance(value, list):
                        merged["required"] = [*merged.get("required", []), *value]
                    else:
                        merged.setdefault(key, value)
            resolved = {**merged, **resolved}
        return resolved

    def pointer(self, ref: Any) -> Mapping[str, Any]:
        """The schema at a local JSON pointer (`#/$defs/Name`); `{}` for anything else."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            return {}
        target: Any = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        return target if isinstance(target, Mapping) else {}

    def is_null(self, node: Any) -> bool:
        node = self.resolve(node)
        kind = node.get("type")
        return kind == "null" or kind == ["null"] or ("const" in node and node["const"] is None)

    def choose(self, options: list[Any]) -> Any:
        return options[0] if self.mode == "empty" else self.rng.choice(options)

    # values

    def value(self, node: Any, name: str | None, depth: int) -> Any:
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"schema nesting deeper than {MAX_SCHEMA_DEPTH} levels")
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        if not isinstance(ref, str):
            return self.concrete(self.resolve(node), name, depth)
        recurs = ref in self.active
        self.active.append(ref)
        self.recurring += recurs
        try:
            return self.concrete(self.resolve(node), name, depth)
        finally:
            self.active.pop()
            self.recurring -= recurs

    def concrete(self, node: dict[str, Any], name: str | None, depth: int) -> Any:
        """The value of a resolved schema node."""
        if "const" in node:
            return node["const"]
        if isinstance(node.get("enum"), list) and node["enum"]:
            return self.choose(node["enum"])
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options:
                concrete = [o for o in options if not self.is_null(o)]
                if not concrete or (self.shallow(depth) and len(concrete) < len(options)):
                    return None
                return self.value(self.choose(concrete), name, depth + 1)
        kind = node.get("type")
        if isinstance(kind, list):
            concrete_kinds = [k for k in kind if k != "null"]
            if not concrete_kinds or (self.shallow(depth) and "null" in kind):
                return None
            kind = self.choose(concrete_kinds)
        if kind is None:
            if any(k in node for k in ("properties", "additionalProperties", "required")):
                kind = "object"
            elif any(k in node for k in ("items", "prefixItems")):
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self.object(node, depth)
        if kind == "array":
            return self.array(node, name, depth)
        if kind == "integer":
            return self.integer(node)
        if kind == "number":
            return self.number(node)
        if kind == "boolean":
            return False if self.mode == "empty" else self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(node, name)

    def object(self, node: Mapping[str, Any], depth: int) -> dict[str, Any]:
        raw_properties = node.get("properties")
        properties: Mapping[str, Any] = raw_properties if isinstance(raw_properties, Mapping) else {}
        required = [k for k in node.get("required") or () if isinstance(k, str)]
        extra = node.get("additionalProperties")
        result: dict[str, Any] = {}
        for key, sub in properties.items():
            if self.shallow(depth) and key not in required:
                continue
            result[key] = self.value(sub, key, depth + 1)
        for key in required:  # required but undescribed: whatever additionalProperties allows
            if key not in result:
                result[key] = self.value(extra if isinstance(extra, Mapping) else {}, key, depth + 1)
        if not properties and isinstance(extra, Mapping) and self.mode != "empty" and not self.shallow(depth):
            for index in range(2):
                key = f"{self.rng.choice(FILLER_WORDS)}_{index + 1}"
                result.setdefault(key, self.value(extra, key, depth + 1))
        return result

    def array(self, node: Mapping[str, Any], name: str | None, depth: int) -> list[Any]:
        if self.mode == "empty":
            return []
        min_items, max_items = node.get("minItems"), node.get("maxItems")
        low = min_items if isinstance(min_items, int) else 0
        high = max_items if isinstance(max_items, int) else None
        prefix = node.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [self.value(sub, name, depth + 1) for sub in prefix[: high if high is not None else None]]
        count = low if self.shallow(depth) else max(3, low)
        if high is not None:
            count = min(count, high)
        items = node.get("items") if isinstance(node.get("items"), Mapping) else {}
        resolved = self.resolve(items)
        enum = resolved.get("enum") if isinstance(resolved.get("enum"), list) else None
        if enum:  # distinct enum values, as many as the enum has (padded up to minItems)
            picked = self.rng.sample(enum, min(count, len(enum)))
            while len(picked) < min(low, count):
                picked.append(self.rng.choice(enum))
            return picked
        values: list[Any] = []
        for _ in range(count):
            value = self.value(items, name, depth + 1)
            for _ in range(5):
                if not node.get("uniqueItems") or value not in values:
                    break
                value = self.value(items, name, depth + 1)
            values.append(value)
        return values

    def integer(self, node: Mapping[str, Any]) -> int:
        low, high = _bounds(node, integer=True)
        value = 0 if self.mode == "empty" else self.rng.choice((800, 1000, 1200, 1500, 2000))
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None and self.mode != "empty":
                value = self.rng.randint(int(low), int(max(low, high)))
            else:
                value = int(low) if low is not None and value < low else int(high)  # type: ignore[arg-type]
        return int(value)

    def number(self, node: Mapping[str, Any]) -> float:
        low, high = _bounds(node, integer=False)
        value = 0.0 if self.mode == "empty" else self.rng.choice((0.25, 1.5, 3.75, 12.5, 42.0))
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None and self.mode != "empty":
                value = self.rng.uniform(low, max(low, high))
                rounded = round(value, 2)
                value = rounded if low <= rounded <= high else value
            else:
                value = low if low is not None and value < low else high  # type: ignore[assignment]
        return float(value)

    def string(self, node: Mapping[str, Any], name: str | None) -> str:
        if self.mode == "empty":
            return ""
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            text = _FORMATS[fmt](self.rng, self.mode == "hostile")
        elif self.mode == "hostile":
            snippet = HOSTILE_STRINGS[self.hostile % len(HOSTILE_STRINGS)]
            self.hostile += 1
            if is_body_text(name):
                words = self.sentences(self.rng.randint(40, 60)).split(" ")
                cut = self.rng.randint(1, len(words) - 1)
                text = self.html(" ".join([*words[:cut], snippet, *words[cut:]]), name)
            else:
                text = snippet
        elif is_body_text(name):
            text = self.html(self.sentences(self.rng.randint(40, 60)), name)
        else:
            text = " ".join(self.words(self.rng.randint(3, 6))).capitalize()
        min_length, max_length = node.get("minLength"), node.get("maxLength")
        low = min_length if isinstance(min_length, int) else 0
        high = max_length if isinstance(max_length, int) else None
        while len(text) < low:
            text = f"{text} {self.rng.choice(FILLER_WORDS)}".strip()
        return text[:high] if high is not None else text

    def words(self, count: int) -> list[str]:
        return [self.rng.choice(FILLER_WORDS) for _ in range(count)]

    def sentences(self, count: int) -> str:
        """`count` filler words as sentences of 6-12 words."""
        words, out = self.words(count), []
        while words:
            size = self.rng.randint(6, 12)
            sentence, words = words[:size], words[size:]
            out.append(" ".join(sentence).capitalize() + ".")
        return " ".join(out)

    @staticmethod
    def html(text: str, name: str | None) -> str:
        return f"<p>{text}</p>" if name is not None and (name == "html" or name.endswith("_html")) else text


def _bounds(node: Mapping[str, Any], *, integer: bool) -> tuple[float | None, float | None]:
    """(lowest, highest) allowed value from `minimum`/`maximum` and their exclusive forms."""
    step = 1 if integer else 1e-6

    def number(key: str) -> float | None:
        value = node.get(key)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    low, high = number("minimum"), number("maximum")
    if (exclusive := number("exclusiveMinimum")) is not None:
        low = exclusive + step if low is None else max(low, exclusive + step)
    if (exclusive := number("exclusiveMaximum")) is not None:
        high = exclusive - step if high is None else min(high, exclusive - step)
    if integer:
        low = None if low is None else math.ceil(low)
        high = None if high is None else math.floor(high)
    return low, high


_FORMATS: dict[str, Callable[[random.Random, bool], str]] = {
    "date-time": lambda rng, hostile: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T09:30:00Z",
    "date": lambda rng, hostile: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    "time": lambda rng, hostile: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
    "email": lambda rng, hostile: f"user{rng.randint(1, 999)}@example.com",
    "uri": lambda rng, hostile: "javascript:alert(1)" if hostile else f"https://example.com/{rng.randint(1, 999)}",
    "url": lambda rng, hostile: "javascript:alert(1)" if hostile else f"https://example.com/{rng.randint(1, 999)}",
    "uuid": lambda rng, hostile: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
}
"""String formats generated as valid values (a hostile URI is a `javascript:` one)."""


def embedded_schema(messages: Iterable[Any]) -> dict[str, Any] | None:
    """The first JSON schema (a JSON object with `"properties"`, or holding one) written in a system,
    developer or user message, outside any `<data>` block; `None` when there is none."""
    decoder = json.JSONDecoder()
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") not in {"system", "developer", "user"}:
            continue
        text = _DATA.sub(" ", _message_text(message))
        index = text.find("{")
        while index != -1:
            try:
                found, end = decoder.raw_decode(text, index)
            except ValueError:
                index = text.find("{", index + 1)
                continue
            if isinstance(found, dict) and (schema := _find_schema(found)) is not None:
                return schema
            index = text.find("{", end)
    return None


def _find_schema(value: dict[str, Any]) -> dict[str, Any] | None:
    """`value` or the first (breadth-first) object within it that has a `properties` object."""
    queue: list[Any] = [value]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                return node
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)
    return None


# -- server state and handlers ------------------------------------------------------------------------


class ServerState:
    """Everything the handlers share: fault plan, latency, modes, log and the prompt-cache memory."""

    def __init__(
        self,
        plan: FaultPlan | None = None,
        latency_ms: float = 0.0,
        *,
        answers: AnswerMode = "composer",
        structured_outputs: StructuredOutputs = "json_schema",
        embeddings_available: bool = True,
        images_available: bool = True,
    ) -> None:
        self.plan = plan or FaultPlan()
        self.latency_ms = latency_ms
        self.answers: AnswerMode = check_choice(answers, ANSWER_MODES, "answers")
        self.structured_outputs: StructuredOutputs = check_choice(
            structured_outputs, STRUCTURED_OUTPUTS, "structured_outputs"
        )
        self.embeddings_available = bool(embeddings_available)
        self.images_available = bool(images_available)
        self.log = RequestLog()
        self.stopping = asyncio.Event()
        self._seen_prompts: set[str] = set()
        self._lock = threading.Lock()
        self._counter = 0
        self.batch_store: Any = None  # typed in tests.openai_batches, which imports this module
        """The Files/Batches store (`tests.openai_batches.BatchStore`), made on first use."""

    def next_id(self) -> int:
        """A fresh sequence number for response ids."""
        with self._lock:
            self._counter += 1
            return self._counter

    def seen_before(self, model: str, system: str) -> bool:
        """Whether (model, system prompt) was seen before; remembers it."""
        key = hashlib.sha1(f"{model}\0{system}".encode()).hexdigest()
        with self._lock:
            seen = key in self._seen_prompts
            self._seen_prompts.add(key)
        return seen

    def reset(self) -> None:
        """Clear the log, the prompt-cache memory and the fault plan."""
        self.log.reset()
        self.plan.reset()
        with self._lock:
            self._seen_prompts.clear()
        if self.batch_store is not None:
            self.batch_store.reset()


def check_choice(value: Any, choices: tuple[str, ...], what: str) -> Any:
    """`value` if it is one of `choices`, else a `ValueError` naming `what`."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
    return value


def tokens(text: str) -> int:
    """Token estimate: 4 characters per token, at least 1."""
    return max(1, len(text) // 4)


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    headers: Mapping[str, str] | None = None,
    *,
    param: str | None = None,
) -> JSONResponse:
    """An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _authorized(request: Request) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def _schema_name(body: Mapping[str, Any]) -> str | None:
    """The json_schema's `name`, or the `title` of a json_object's `schema`; `None` otherwise."""
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema")
        name = schema.get("name") if isinstance(schema, Mapping) else None
        if isinstance(name, str):
            return name
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_object":
        schema = response_format.get("schema")
        title = schema.get("title") if isinstance(schema, Mapping) else None
        if isinstance(title, str):
            return title
    return None


def _format_type(body: Mapping[str, Any]) -> str | None:
    """`response_format.type` as sent (`None` when there is no `response_format`)."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    format_type = response_format.get("type") if isinstance(response_format, Mapping) else None
    if isinstance(format_type, str):
        return format_type
    return repr(response_format)


async def _prologue(
    state: ServerState, request: Request, path: PathName
) -> tuple[dict[str, Any], Fault | None, float] | Response:
    """Authenticate, read the body, pick the fault, log; returns the body, the fault and when the request
    arrived (answers leave `latency_ms` after that, see `_wait_out_latency`)."""
    arrived = time.monotonic()
    if not _authorized(request):
        state.log.add(RequestRecord("unauthenticated", None, None, None, time.time()))
        return error_response(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            "invalid_request_error",
            "missing_api_key",
        )
    try:
        body = await request.json()
    except ClientDisconnect:
        state.log.add(RequestRecord(path, None, None, None, time.time(), client_gone=True))
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        state.log.add(RequestRecord(path, None, None, None, time.time()))
        return error_response(400, "The request body must be a JSON object.", "invalid_request_error", None)
    schema = _schema_name(body) if path == "chat" else None
    fault = state.plan.next_fault(path, schema)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    response_format = _format_type(body) if path == "chat" else None
    state.log.add(RequestRecord(path, model, schema, fault.kind if fault else None, time.time(), response_format))
    if fault is not None and fault.kind == "hang":
        await _wait_out_latency(state, arrived)
        seconds = fault.hang_seconds if fault.hang_seconds is not None else state.plan.hang_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), timeout=seconds)
    return body, fault, arrived


async def _wait_out_latency(state: ServerState, arrived: float) -> None:
    """Sleep until `latency_ms` after the request arrived: the answer is composed during the latency, as a
    real provider's would be, so the server's own CPU time does not add to the latency clients see."""
    remaining = state.latency_ms / 1000 - (time.monotonic() - arrived)
    if remaining > 0:
        await asyncio.sleep(remaining)


async def _fault_response(state: ServerState, request: Request, fault: Fault | None, arrived: float) -> Response | None:
    """The answer to a fault that replaces the whole HTTP answer, sent `latency_ms` after arrival; `None`
    when there is no such fault (no fault, `hang` once waited out, or a chat-content fault)."""
    if fault is None or fault.kind == "hang":
        return None
    if fault.kind == "close":
        await _wait_out_latency(state, arrived)
        return await _close_connection(request)
    faulted = _transport_fault(fault)
    if faulted is not None:
        await _wait_out_latency(state, arrived)
    return faulted


RAW_SEND = "loopback.raw_send"
"""Scope key of the ASGI `send` uvicorn handed to the app (see `_LoopbackApp`)."""


async def _close_connection(request: Request) -> Response:
    """Close the request's TCP connection without any HTTP response (the `close` fault).

    uvicorn's `send` is a bound method of its per-request cycle, which holds the connection's transport:
    closing the transport sends a FIN before any byte of a response. The cycle is then marked disconnected
    (as uvicorn's `connection_lost` does), so uvicorn drops the response returned here and does not
    substitute a 500 for it.
    """
    cycle = getattr(request.scope.get(RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None or not hasattr(cycle, "disconnected"):
        raise RuntimeError("the close fault needs the app to be served by uvicorn (through _LoopbackApp)")
    transport.close()
    for _ in range(50):  # connection_lost runs on a later loop iteration
        if cycle.disconnected:
            break
        await asyncio.sleep(0)
    cycle.disconnected = True
    return Response(status_code=204)


def _transport_fault(fault: Fault | None) -> Response | None:
    """The response for faults that replace the whole HTTP answer (all but the chat-content ones)."""
    if fault is None:
        return None
    if fault.kind == "rate_limit":
        return error_response(
            429,
            "Rate limit reached for requests (loopback fault). Please try again in 10ms.",
            "requests",
            "rate_limit_exceeded",
            headers={"retry-after": "0", "retry-after-ms": "10"},
        )
    if fault.kind == "server_error":
        return error_response(
            500, "The server had an error while processing your request (loopback fault).", "server_error", None
        )
    if fault.kind == "non_json":
        return Response(NON_JSON_BODY, status_code=200, media_type="application/json")
    if fault.kind == "unauthorized":
        return error_response(
            401, "Incorrect API key provided (loopback fault).", "invalid_request_error", "invalid_api_key"
        )
    if fault.kind == "bad_request":
        return error_response(400, "Invalid request (loopback fault).", "invalid_request_error", "invalid_value")
    return None


def _headers(state: ServerState) -> dict[str, str]:
    return {"x-request-id": f"req_loopback_{state.next_id()}"}


def _unsupported_format(state: ServerState, body: Mapping[str, Any]) -> Response | None:
    """The error a provider supporting only `state.structured_outputs` gives for this `response_format`;
    `None` when it is supported."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else response_format
    if kind == "text":
        return None
    if state.structured_outputs == "text":
        return error_response(400, TEXT_ONLY_ERROR, "invalid_request_error", None, param="response_format")
    if state.structured_outputs == "json_object":
        if kind == "json_object":
            return None
        detail = {
            "type": "literal_error",
            "loc": ("body", "response_format", "type"),
            "msg": "Input should be 'text' or 'json_object'",
            "input": kind,
            "ctx": {"expected": "'text' or 'json_object'"},
        }
        return error_response(500, LLAMA_CPP_FORMAT_ERROR.format(detail=detail), "internal_server_error", None)
    if kind in {"json_schema", "json_object"}:
        return None
    return error_response(
        400,
        f"Invalid value: {kind!r}. Supported values are: 'json_object', 'json_schema', and 'text'.",
        "invalid_request_error",
        "invalid_value",
        param="response_format.type",
    )


def _chat_answer(state: ServerState, body: Mapping[str, Any], messages: list[Any]) -> str | Response:
    """The answer's `message.content` for a supported `response_format`, or an error response."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_schema":
        spec = response_format.get("json_schema")  # type: ignore[union-attr]
        spec = spec if isinstance(spec, Mapping) else {}
        name = spec.get("name") if isinstance(spec.get("name"), str) else None
        schema = spec.get("schema") if isinstance(spec.get("schema"), Mapping) else {}
    else:
        given = response_format.get("schema") if kind == "json_object" else None  # type: ignore[union-attr]
        schema = given if isinstance(given, Mapping) else embedded_schema(messages)
        if schema is None:
            return "{}" if kind == "json_object" else _text_answer(state, messages)
        name = schema.get("title") if isinstance(schema.get("title"), str) else None
    if state.answers == "composer":
        return _composed(
            name, messages, "response_format json_schema name" if kind == "json_schema" else "schema title"
        )
    try:
        return json.dumps(schema_answer(schema, state.answers, messages_seed(messages)), ensure_ascii=False)
    except (ValueError, RecursionError) as exc:
        return error_response(
            400, f"The loopback server cannot answer this schema: {exc}", "invalid_request_error", "invalid_schema"
        )


def _text_answer(state: ServerState, messages: list[Any]) -> str:
    """A plain-text answer (no schema to follow): 40-60 filler words, hostile ones in hostile mode."""
    if state.answers == "empty":
        return ""
    mode = "hostile" if state.answers == "hostile" else "schema_only"
    return _SchemaAnswerer({}, mode, messages_seed(messages)).string({}, "text")


def _composed(schema: str | None, messages: list[Any], named_by: str) -> str | Response:
    """The offline composer's answer for `schema` to the data of the newest user message with a `<data>`."""
    composer = COMPOSERS.get(schema or "")
    if composer is None:
        return error_response(
            400,
            f"Unknown {named_by} {schema!r}; expected one of {', '.join(COMPOSERS)}.",
            "invalid_request_error",
            "unknown_schema",
        )
    # The newest user message carrying a <data> block (a repair note may follow it).
    users = [m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "user"]
    match = next((found for m in users if (found := _DATA.search(_message_text(m)))), None)
    if match is None:
        return error_response(400, "No user message has a <data>...</data> block.", "invalid_request_error", None)
    try:
        data = json.loads(match[1])
        return composer(data).model_dump_json()
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
        return error_response(
            400, f"The data does not fit schema {schema}: {type(exc).__name__}: {exc}", "invalid_request_error", None
        )


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions`: an answer following the request's schema, written per `answers`."""
    state: ServerState = request.app.state.loopback
    prologue = await _prologue(state, request, "chat")
    if isinstance(prologue, Response):
        return prologue
    body, fault, arrived = prologue
    if (faulted := await _fault_response(state, request, fault, arrived)) is not None:
        return faulted
    if body.get("stream"):
        return error_response(400, "Streaming is not supported by the loopback server.", "invalid_request_error", None)
    headers = _headers(state)
    result = chat_completion(state, body, fault, request_id=headers["x-request-id"])
    if isinstance(result, Response):
        if _unsupported_format(state, body) is not None:  # answered after the latency, other errors at once
            await _wait_out_latency(state, arrived)
        return result
    await _wait_out_latency(state, arrived)
    return JSONResponse(result, headers=headers)


def chat_completion(
    state: ServerState, body: Mapping[str, Any], fault: Fault | None = None, *, request_id: str
) -> dict[str, Any] | Response:
    """The chat completion JSON answering `body` (what `POST /v1/chat/completions` sends back), or the error
    response; no latency, no transport fault. The one source of chat answers, also used by batches."""
    model = str(body.get("model") or "")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "'messages' must be a non-empty array.", "invalid_request_error", None)
    if (rejected := _unsupported_format(state, body)) is not None:
        return rejected
    answer = _chat_answer(state, body, messages)
    if isinstance(answer, Response):
        return answer
    content: str | None = answer

    finish_reason = "stop"
    refusal = None
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if fault is not None and fault.kind == "schema_invalid":
        content = json.dumps({"unexpected": True})
    elif fault is not None and fault.kind == "truncated":
        content, finish_reason = answer[: max(1, len(answer) // 2)], "length"
    elif fault is not None and fault.kind == "refusal":
        content, refusal = None, REFUSAL_TEXT
    elif isinstance(limit, int) and limit > 0 and tokens(answer) > limit:
        content, finish_reason = answer[: limit * 4], "length"

    system = "\n".join(_message_text(m) for m in messages if isinstance(m, Mapping) and m.get("role") == "system")
    prompt_tokens = sum(tokens(_message_text(m)) for m in messages if isinstance(m, Mapping))
    cached = tokens(system) if system and state.seen_before(model, system) else 0
    completion_tokens = tokens(content or refusal or "")
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_loopback",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }


def image_response(body: Mapping[str, Any]) -> dict[str, Any] | Response:
    """The answer of `POST /v1/images/generations` to `body` (an error response for a bad request): real
    time and batch lines (`tests.openai_batches`) answer through here."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return error_response(400, "'prompt' must be a non-empty string.", "invalid_request_error", None)
    size = body.get("size") or "1024x1024"
    match = _SIZE.fullmatch(size if size != "auto" else "1024x1024")
    if match is None:
        return error_response(400, f"Invalid size {size!r}.", "invalid_request_error", "invalid_value")
    width, height = int(match[1]), int(match[2])
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 10:
        return error_response(400, "'n' must be an integer from 1 to 10.", "invalid_request_error", None)
    prompts = [prompt if i == 0 else f"{prompt} (variant {i + 1})" for i in range(n)]
    images = [render_png(p, width, height) for p in prompts]
    text_tokens = tokens(prompt)
    image_tokens = max(1, width * height // 4096) * n
    payload = {
        "created": int(time.time()),
        "background": "opaque",
        "output_format": "png",
        "quality": body.get("quality") if body.get("quality") in {"low", "medium", "high"} else "medium",
        "size": f"{width}x{height}",
        "data": [{"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": None} for png in images],
        "usage": {
            "input_tokens": text_tokens,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
            "output_tokens": image_tokens,
            "output_tokens_details": {"image_tokens": image_tokens, "text_tokens": 0},
            "total_tokens": text_tokens + image_tokens,
        },
    }
    return payload


async def images_generations(request: Request) -> Response:
    """`POST /v1/images/generations`: `n` base64 PNGs rendered locally from the prompt."""
    state: ServerState = request.app.state.loopback
    if not state.images_available:
        return await _no_images_route(state, request)
    prologue = await _prologue(state, request, "images")
    if isinstance(prologue, Response):
        return prologue
    body, fault, arrived = prologue
    if (faulted := await _fault_response(state, request, fault, arrived)) is not None:
        return faulted
    payload = await asyncio.to_thread(image_response, body)  # rendering stays off the server's loop
    if isinstance(payload, Response):
        return payload
    await _wait_out_latency(state, arrived)
    return JSONResponse(payload, headers=_headers(state))


async def _no_images_route(state: ServerState, request: Request) -> Response:
    """What a server without an images route answers: Starlette's bare 404, before any authentication (the
    request is logged, no fault is consumed)."""
    arrived = time.monotonic()
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
    state.log.add(RequestRecord("images", model, None, None, time.time()))
    await _wait_out_latency(state, arrived)
    return JSONResponse({"detail": "Not Found"}, status_code=404)


async def embeddings(request: Request) -> Response:
    """`POST /v1/embeddings`: deterministic hashed-feature unit vectors, as floats or base64 float32."""
    state: ServerState = request.app.state.loopback
    prologue = await _prologue(state, request, "embeddings")
    if isinstance(prologue, Response):
        return prologue
    body, fault, arrived = prologue
    if (faulted := await _fault_response(state, request, fault, arrived)) is not None:
        return faulted
    result = embedding_response(state, body)
    if isinstance(result, Response):
        if not state.embeddings_available:
            await _wait_out_latency(state, arrived)
        return result
    await _wait_out_latency(state, arrived)
    return JSONResponse(result, headers=_headers(state))


def embedding_response(state: ServerState, body: Mapping[str, Any]) -> dict[str, Any] | Response:
    """The embeddings JSON answering `body` (what `POST /v1/embeddings` sends back), or the error response;
    no latency, no transport fault. Also used by batches."""
    if not state.embeddings_available:
        return error_response(500, LLAMA_CPP_NO_EMBEDDINGS, "internal_server_error", None)
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        return error_response(
            400, "'input' must be a string or a non-empty array of strings.", "invalid_request_error", None
        )
    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
        return error_response(400, "'dimensions' must be an integer from 1 to 4096.", "invalid_request_error", None)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = embed(text, dimensions)
        encoded: Any = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    used = sum(tokens(t) for t in inputs)
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model") or ""),
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


def embed(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector from signed feature hashing of the text's words (weight 1) and char trigrams (0.5)."""
    vector = [0.0] * dimensions
    words = re.findall(r"[a-z0-9]+", text.lower())
    for word in words:
        _add_feature(vector, f"w:{word}", 1.0)
        padded = f" {word} "
        for i in range(len(padded) - 2):
            _add_feature(vector, f"c:{padded[i : i + 3]}", 0.5)
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def _add_feature(vector: list[float], feature: str, weight: float) -> None:
    index, sign = _feature_slot(feature, len(vector))
    vector[index] += sign * weight


@lru_cache(maxsize=65536)
def _feature_slot(feature: str, dimensions: int) -> tuple[int, float]:
    value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
    return value % dimensions, (1.0 if (value >> 40) & 1 else -1.0)


class _LoopbackApp(Starlette):
    """Starlette keeping the server's own ASGI `send` in the scope (under `RAW_SEND`), for the `close` fault:
    Starlette's middleware wrap `send` on its way to the handlers."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(state: ServerState | None = None) -> Starlette:
    """The Starlette app; its `state.loopback` is the `ServerState` the handlers use."""
    from tests.openai_batches import batch_routes  # imports this module: imported here, not at the top

    app = _LoopbackApp(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/images/generations", images_generations, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            *batch_routes(),
        ]
    )
    app.state.loopback = state or ServerState()
    return app


# -- running it ---------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn.Server that ends hanging requests at shutdown and can announce readiness."""

    def __init__(self, config: uvicorn.Config, state: ServerState, on_ready: Callable[[], None] | None = None):
        super().__init__(config)
        self.state = state
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.state.stopping.set()
        await super().shutdown(sockets=sockets)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound (not yet listening) TCP socket; port 0 picks a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Starlette) -> uvicorn.Config:
    """uvicorn settings: uvloop and httptools when installed, no access log, warnings only."""
    return uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=2048,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
    )


class LoopbackOpenAI:
    """Runs the loopback server on 127.0.0.1 in a background thread; use as a context manager.

    `base_url` is what `openai.OpenAI(base_url=...)` needs; `plan` (a mutable `FaultPlan`, also
    replaceable), `latency_ms`, `answers`, `structured_outputs`, `embeddings_available`, `images_available`
    (see the module's docstring) and `requests` / `log` control and inspect it while it runs.
    """

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        plan: FaultPlan | None = None,
        host: str = "127.0.0.1",
        answers: AnswerMode = "composer",
        structured_outputs: StructuredOutputs = "json_schema",
        embeddings_available: bool = True,
        images_available: bool = True,
    ) -> None:
        self.state = ServerState(
            plan,
            latency_ms,
            answers=answers,
            structured_outputs=structured_outputs,
            embeddings_available=embeddings_available,
            images_available=images_available,
        )
        self.host = host
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`."""
        if not self.port:
            raise RuntimeError("the loopback server is not running")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def plan(self) -> FaultPlan:
        """The fault plan the server consults on every request."""
        return self.state.plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        self.state.plan = plan

    @property
    def latency_ms(self) -> float:
        """Time from a request's arrival to its answer, in milliseconds."""
        return self.state.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self.state.latency_ms = value

    @property
    def answers(self) -> AnswerMode:
        """How chat answers are written: `composer`, `schema_only`, `hostile` or `empty`."""
        return self.state.answers

    @answers.setter
    def answers(self, value: AnswerMode) -> None:
        self.state.answers = check_choice(value, ANSWER_MODES, "answers")

    @property
    def structured_outputs(self) -> StructuredOutputs:
        """The `response_format` forms served: `json_schema` (all), `json_object` (llama.cpp) or `text`."""
        return self.state.structured_outputs

    @structured_outputs.setter
    def structured_outputs(self, value: StructuredOutputs) -> None:
        self.state.structured_outputs = check_choice(value, STRUCTURED_OUTPUTS, "structured_outputs")

    @property
    def embeddings_available(self) -> bool:
        """False: `/v1/embeddings` answers llama.cpp's HTTP 500 for a model loaded without embeddings."""
        return self.state.embeddings_available

    @embeddings_available.setter
    def embeddings_available(self, value: bool) -> None:
        self.state.embeddings_available = bool(value)

    @property
    def images_available(self) -> bool:
        """False: `/v1/images/generations` is a bare 404, as on a server without that route."""
        return self.state.images_available

    @images_available.setter
    def images_available(self, value: bool) -> None:
        self.state.images_available = bool(value)

    @property
    def log(self) -> RequestLog:
        """The request log, with per-path and per-fault counters."""
        return self.state.log

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received, in arrival order."""
        return self.state.log.records()

    @property
    def batch(self) -> Any:
        """The Batches knobs (`tests.openai_batches.BatchSettings`: `polls_until_done`, `fail_custom_ids`,
        `fail_rate`, `fail_seed`, `invalid_custom_ids`, `expire_next`, `expired_in_error_file`)."""
        from tests.openai_batches import store

        return store(self.state).settings

    def batches(self) -> list[Any]:
        """The batches created so far, oldest first (`tests.openai_batches.BatchInfo`: `id`, `status`,
        `endpoint`, `input_file_id`, `metadata`, `custom_ids`, `request_counts`)."""
        from tests.openai_batches import store

        return store(self.state).info()

    def reset(self) -> None:
        """Clear the log, the prompt-cache memory, the fault plan's queue and draw sequence, and the stored
        files and batches (the batch knobs stay, but `expire_next`)."""
        self.state.reset()

    def start(self, timeout: float = 10.0) -> LoopbackOpenAI:
        """Start serving and wait until the server listens."""
        if self._thread is not None:
            raise RuntimeError("the loopback server is already running")
        sock = bind_socket(self.host, 0)
        self.port = sock.getsockname()[1]
        self.state.stopping = asyncio.Event()
        self._server = _Server(uvicorn_config(create_app(self.state)), self.state)

        def run() -> None:
            try:
                assert self._server is not None
                self._server.run(sockets=[sock])
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"loopback-openai-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the loopback server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the loopback server did not start within {timeout} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (hanging requests are released) and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server, self._thread, self.port = None, None, 0

    def __enter__(self) -> LoopbackOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- dead endpoints -----------------------------------------------------------------------------------

DeadMode = Literal["hang", "close", "refuse"]
DEAD_MODES: tuple[str, ...] = get_args(DeadMode)


class DeadEndpoint:
    """A TCP endpoint on 127.0.0.1 with no HTTP server behind it, for a client's connection handling; use as
    a context manager.

    - `hang`: accepts every connection (any number at once), reads whatever is sent and never answers; the
      connection stays open until the client closes it or the endpoint stops. Clients see a read timeout.
    - `close`: reads one request (head and `Content-Length` body, 2 s at most), then closes the connection
      without a byte of response. Clients see a connection error ("server disconnected"), at once.
    - `refuse`: nothing listens on the port (bound, then closed, to find a free one). Clients see a
      connection error (connection refused).

    `base_url` is `http://127.0.0.1:PORT/v1`; `connections` counts the connections accepted so far.
    """

    def __init__(self, mode: DeadMode = "hang", *, host: str = "127.0.0.1") -> None:
        self.mode: DeadMode = check_choice(mode, DEAD_MODES, "mode")
        self.host = host
        self.port = 0
        self._connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`."""
        if not self.port:
            raise RuntimeError("the dead endpoint is not started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def connections(self) -> int:
        """Connections accepted so far (always 0 for `refuse`)."""
        with self._lock:
            return self._connections

    def start(self, timeout: float = 10.0) -> DeadEndpoint:
        """Start listening (for `refuse`: pick the free port nobody listens on)."""
        if self.port:
            raise RuntimeError("the dead endpoint is already started")
        sock = bind_socket(self.host, 0)
        self.port = sock.getsockname()[1]
        if self.mode == "refuse":
            sock.close()
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name=f"dead-endpoint-{self.port}", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(sock), loop).result(timeout)
        except BaseException:
            sock.close()
            self.stop()
            raise
        return self

    async def _listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._handle, sock=sock, backlog=2048, limit=1 << 20)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        self._writers.add(writer)
        try:
            if self.mode == "hang":
                while await reader.read(65536):
                    pass
            else:
                with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    await asyncio.wait_for(_read_http_request(reader), timeout=2.0)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for _ in range(10):  # let the handlers see their connections closed
            await asyncio.sleep(0)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening and close every open connection."""
        loop, self._loop = self._loop, None
        if loop is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
        self._thread, self._server, self.port = None, None, 0

    def __enter__(self) -> DeadEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _read_http_request(reader: asyncio.StreamReader) -> None:
    """Read one HTTP/1.1 request: its head, then as many body bytes as `Content-Length` says."""
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if match is not None and int(match[1]) > 0:
        await reader.readexactly(int(match[1]))


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.openai_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument(
        "--fault-kinds", default="rate_limit,server_error", help=f"comma-separated, from: {','.join(FAULT_KINDS)}"
    )
    parser.add_argument("--fault-path", choices=PATH_NAMES, default=None)
    parser.add_argument("--fault-schema", default=None)
    parser.add_argument("--hang-seconds", type=float, default=DEFAULT_HANG_SECONDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answers", choices=ANSWER_MODES, default="composer", help="how chat answers are written")
    parser.add_argument(
        "--structured-outputs",
        choices=STRUCTURED_OUTPUTS,
        default="json_schema",
        help="response_format forms served: json_schema (all), json_object (like llama.cpp), text (none)",
    )
    parser.add_argument(
        "--embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve /v1/embeddings (--no-embeddings: llama.cpp's HTTP 500)",
    )
    parser.add_argument(
        "--batch-polls", type=int, default=3, help="retrieves until a batch completes (0: completed on creation)"
    )
    parser.add_argument(
        "--images",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve /v1/images/generations (--no-images: 404)",
    )
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> None:
    """Serve in the foreground; print `READY <base_url>` once listening."""
    args = _parse_args(argv)
    kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    plan = FaultPlan(
        rate=args.fault_rate,
        kinds=kinds,
        seed=args.seed,
        path=args.fault_path,
        schema=args.fault_schema,
        hang_seconds=args.hang_seconds,
    )
    state = ServerState(
        plan,
        args.latency_ms,
        answers=args.answers,
        structured_outputs=args.structured_outputs,
        embeddings_available=args.embeddings,
        images_available=args.images,
    )
    from tests.openai_batches import store

    store(state).settings.polls_until_done = args.batch_polls
    sock = bind_socket(args.host, args.port)
    base_url = f"http://{args.host}:{sock.getsockname()[1]}/v1"

    def ready() -> None:
        print(f"READY {base_url}", flush=True)

    server = _Server(uvicorn_config(create_app(state)), state, on_ready=ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


if __name__ == "__main__":
    main()
