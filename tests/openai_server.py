"""A loopback OpenAI-compatible HTTP server for tests and benchmarks.

It lets the project exercise the *real* `openai` SDK (its HTTP client, retries, timeouts and parsing) with
no network and no key. Three endpoints are served under `/v1`:

- `POST /v1/chat/completions`: structured outputs. The schema is chosen by `response_format.json_schema.name`,
  which the SDK's `chat.completions.parse(response_format=Model)` sets to the Pydantic class name
  (`ClusterNames`, `IdeaBatch`, `ArticleDraft`, `ImagePromptSet`; the prompt names `cluster_names`, `ideas`,
  `article`, `image_prompts` are accepted as aliases). The JSON between `<data>` and `</data>` in the last
  user message goes to the matching deterministic composer of `pipeline.llm.offline`, and the answer's JSON
  comes back as `message.content` with `usage` (4 characters per token; `cached_tokens` is the system
  prompt's token count when the same model and system prompt were seen before, mimicking prompt caching).
  `max_completion_tokens` / `max_tokens` smaller than the answer truncates it with `finish_reason="length"`.
- `POST /v1/images/generations`: base64 PNGs from `pipeline.llm.offline.render_png`.
- `POST /v1/embeddings`: deterministic unit vectors from hashed word and character-trigram features (so
  phrases sharing words are close), as floats or as the base64 float32 the SDK asks for by default.

Every request needs `Authorization: Bearer <non-empty>` (else 401). Answers (and scripted faults) leave
`latency_ms` after their request arrived, waited out with `asyncio.sleep`, so concurrent requests overlap
for real and the server's own work happens within the latency, as a real provider's does. Faults are
scripted by a `FaultPlan`: an explicit queue consumed in request order, and/or a seeded rate that picks a
fault kind per request deterministically. Every request is recorded in a thread-safe `RequestLog`.

In tests::

    with LoopbackOpenAI(latency_ms=0) as server:
        server.plan.push(Fault("rate_limit"))
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key", timeout=2, max_retries=2)
        client.chat.completions.parse(model="m", messages=..., response_format=ClusterNames)
        assert [r.fault for r in server.requests] == ["rate_limit", None]

As a separate process (benchmarks)::

    python -m tests.openai_server --port 0 --latency-ms 100 [--fault-rate 0.2 --fault-kinds rate_limit,server_error
                                                          --seed 7]

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
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, get_args

import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.llm.offline import describe_images, name_clusters, plan_ideas, render_png, write_article

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "hang",
    "non_json",
    "schema_invalid",
    "truncated",
    "refusal",
    "unauthorized",
    "bad_request",
]
PathName = Literal["chat", "images", "embeddings"]

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
PATH_NAMES: tuple[str, ...] = get_args(PathName)
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
    # Prompt names as aliases, for callers that name the schema after the prompt.
    "cluster_names": name_clusters,
    "ideas": plan_ideas,
    "article": write_article,
    "image_prompts": describe_images,
}
"""Schema name (as sent in `response_format.json_schema.name`) -> offline composer."""

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
        """Requests per path (`chat`, `images`, `embeddings`, `unauthenticated`)."""
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


# -- server state and handlers ------------------------------------------------------------------------


class ServerState:
    """Everything the handlers share: fault plan, latency, log and the prompt-cache memory."""

    def __init__(self, plan: FaultPlan | None = None, latency_ms: float = 0.0) -> None:
        self.plan = plan or FaultPlan()
        self.latency_ms = latency_ms
        self.log = RequestLog()
        self.stopping = asyncio.Event()
        self._seen_prompts: set[str] = set()
        self._lock = threading.Lock()
        self._counter = 0

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


def tokens(text: str) -> int:
    """Token estimate: 4 characters per token, at least 1."""
    return max(1, len(text) // 4)


def error_response(
    status: int, message: str, type_: str, code: str | None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
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
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema")
        if isinstance(schema, Mapping) and isinstance(schema.get("name"), str):
            return schema["name"]
    return None


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
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        state.log.add(RequestRecord(path, None, None, None, time.time()))
        return error_response(400, "The request body must be a JSON object.", "invalid_request_error", None)
    schema = _schema_name(body) if path == "chat" else None
    fault = state.plan.next_fault(path, schema)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    state.log.add(RequestRecord(path, model, schema, fault.kind if fault else None, time.time()))
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


async def chat_completions(request: Request) -> Response:
    """`POST /v1/chat/completions`: a structured answer from the offline composer for the schema."""
    state: ServerState = request.app.state.loopback
    prologue = await _prologue(state, request, "chat")
    if isinstance(prologue, Response):
        return prologue
    body, fault, arrived = prologue
    if (faulted := _transport_fault(fault)) is not None:
        await _wait_out_latency(state, arrived)
        return faulted
    if body.get("stream"):
        return error_response(400, "Streaming is not supported by the loopback server.", "invalid_request_error", None)
    model = str(body.get("model") or "")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, "'messages' must be a non-empty array.", "invalid_request_error", None)
    schema = _schema_name(body)
    composer = COMPOSERS.get(schema or "")
    if composer is None:
        return error_response(
            400,
            f"Unknown response_format json_schema name {schema!r}; expected one of {', '.join(COMPOSERS)}.",
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
        content = composer(data).model_dump_json()
    except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
        return error_response(
            400, f"The data does not fit schema {schema}: {type(exc).__name__}: {exc}", "invalid_request_error", None
        )

    finish_reason = "stop"
    refusal = None
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if fault is not None and fault.kind == "schema_invalid":
        content = json.dumps({"unexpected": True})
    elif fault is not None and fault.kind == "truncated":
        content, finish_reason = content[: max(1, len(content) // 2)], "length"
    elif fault is not None and fault.kind == "refusal":
        content, refusal = None, REFUSAL_TEXT
    elif isinstance(limit, int) and limit > 0 and tokens(content) > limit:
        content, finish_reason = content[: limit * 4], "length"

    system = "\n".join(_message_text(m) for m in messages if isinstance(m, Mapping) and m.get("role") == "system")
    prompt_tokens = sum(tokens(_message_text(m)) for m in messages if isinstance(m, Mapping))
    cached = tokens(system) if system and state.seen_before(model, system) else 0
    completion_tokens = tokens(content or refusal or "")
    headers = _headers(state)
    payload = {
        "id": f"chatcmpl-{headers['x-request-id']}",
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
    await _wait_out_latency(state, arrived)
    return JSONResponse(payload, headers=headers)


async def images_generations(request: Request) -> Response:
    """`POST /v1/images/generations`: `n` base64 PNGs rendered locally from the prompt."""
    state: ServerState = request.app.state.loopback
    prologue = await _prologue(state, request, "images")
    if isinstance(prologue, Response):
        return prologue
    body, fault, arrived = prologue
    if (faulted := _transport_fault(fault)) is not None:
        await _wait_out_latency(state, arrived)
        return faulted
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
    images = await asyncio.to_thread(lambda: [render_png(p, width, height) for p in prompts])
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
    await _wait_out_latency(state, arrived)
    return JSONResponse(payload, headers=_headers(state))


async def embeddings(request: Request) -> Response:
    """`POST /v1/embeddings`: deterministic hashed-feature unit vectors, as floats or base64 float32."""
    state: ServerState = request.app.state.loopback
    prologue = await _prologue(state, request, "embeddings")
    if isinstance(prologue, Response):
        return prologue
    body, fault, arrived = prologue
    if (faulted := _transport_fault(fault)) is not None:
        await _wait_out_latency(state, arrived)
        return faulted
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
    payload = {
        "object": "list",
        "data": data,
        "model": str(body.get("model") or ""),
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }
    await _wait_out_latency(state, arrived)
    return JSONResponse(payload, headers=_headers(state))


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


def create_app(state: ServerState | None = None) -> Starlette:
    """The Starlette app; its `state.loopback` is the `ServerState` the handlers use."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/images/generations", images_generations, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
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
    replaceable), `latency_ms` and `requests` / `log` control and inspect it while it runs.
    """

    def __init__(self, *, latency_ms: float = 0.0, plan: FaultPlan | None = None, host: str = "127.0.0.1") -> None:
        self.state = ServerState(plan, latency_ms)
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
    def log(self) -> RequestLog:
        """The request log, with per-path and per-fault counters."""
        return self.state.log

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request received, in arrival order."""
        return self.state.log.records()

    def reset(self) -> None:
        """Clear the log, the prompt-cache memory and the fault plan's queue and draw sequence."""
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
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> None:
    """Serve in the foreground; print `READY <base_url>` once listening."""
    args = _parse_args(argv)
    kinds = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    plan = FaultPlan(
        rate=args.fault_rate,
        kinds=kinds,  # type: ignore[arg-type]
        seed=args.seed,
        path=args.fault_path,
        schema=args.fault_schema,
        hang_seconds=args.hang_seconds,
    )
    state = ServerState(plan, args.latency_ms)
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
    sys.exit(main())
