"""The Files and Batches endpoints of the loopback OpenAI server (`tests.openai_server`), in OpenAI's shapes.

Routes (registered by `tests.openai_server.create_app`, same app, same `ServerState`, same auth, fault plan
(paths `files` and `batches`), latency and `RequestLog`):

- `POST /v1/files` (multipart `file`, `purpose`), `GET /v1/files`, `GET /v1/files/{id}`,
  `GET /v1/files/{id}/content` (the raw bytes), `DELETE /v1/files/{id}`.
- `POST /v1/batches` (`input_file_id`, `endpoint` `/v1/chat/completions`, `/v1/embeddings` or
  `/v1/images/generations`, `completion_window` `24h`, `metadata`), `GET /v1/batches/{id}`,
  `GET /v1/batches` (newest first, `limit`, `after`), `POST /v1/batches/{id}/cancel`.

A batch advances on retrieves only: `validating` -> `in_progress` -> `finalizing` -> `completed` after
`polls_until_done` retrieves (default 3: one step per retrieve; 1: completed at the first retrieve; 0:
completed on creation). While in progress, `request_counts` grows (after k of N retrieves, the first
`total * k // N` lines are answered). Lines are answered, without latency, by `openai_server.chat_completion`
/ `embedding_response`, the code that answers real-time calls (same answers, same usage). The output file
(purpose `batch_output`) holds `{"id": "batch_req_...", "custom_id", "response": {"status_code": 200,
"request_id", "body"}, "error": null}` per answered line; lines answered with an error status go to the
error file with `response.status_code` 4xx/5xx and `response.body = {"error": {...}}`. An input file that
is not valid (a line not JSON, without a `custom_id` or `body`, a duplicate `custom_id`, `method` not
`POST`, `url` not the batch's endpoint, several models) makes the batch `failed` at the first retrieve with
`errors.data[]` entries naming the line (`line` is 1-based).

Knobs (`BatchSettings`, `LoopbackOpenAI.batch`, mutable while running): `polls_until_done`;
`fail_custom_ids` and a seeded `fail_rate` / `fail_seed` (HTTP 500 `server_error` lines in the error file);
`invalid_custom_ids` (a 200 whose content is `{"unexpected": true}`, the `schema_invalid` fault);
`expire_next` (the next batch created ends `expired` with only its first half answered; the rest is in
neither file unless `expired_in_error_file`, which writes them as `batch_expired` errors as OpenAI
documents). A cancelled batch (`cancelling`, then `cancelled` at the next retrieve) keeps the lines already
answered. `LoopbackOpenAI.batches()` lists the created batches (`BatchInfo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests import openai_server as core

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations")
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
DEFAULT_POLLS = 3
FAILED_LINE_MESSAGE = "The server had an error while processing your request (loopback batch fault)."
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class BatchSettings:
    """How batches behave (see the module's docstring); read when a batch is created or advanced."""

    polls_until_done: int = DEFAULT_POLLS
    fail_custom_ids: set[str] = field(default_factory=set)
    fail_rate: float = 0.0
    fail_seed: int = 0
    invalid_custom_ids: set[str] = field(default_factory=set)
    expire_next: bool = False
    expired_in_error_file: bool = False


@dataclass(frozen=True)
class BatchInfo:
    """A created batch as `LoopbackOpenAI.batches()` reports it."""

    id: str
    status: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    custom_ids: tuple[str, ...]
    request_counts: dict[str, int]


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class _Batch:
    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: int
    lines: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    polls: int
    expire: bool
    model: str | None
    status: str = "validating"
    retrieves: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def custom_ids(self) -> tuple[str, ...]:
        return tuple(str(line.get("custom_id")) for line in self.lines)

    def counts(self) -> dict[str, int]:
        total = 0 if self.errors else len(self.lines)
        return {"total": total, "completed": len(self.output), "failed": len(self.failed)}

    def json(self) -> dict[str, Any]:
        stamps = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86400,
            **{f"{name}_at": self.times.get(name) for name in stamps},
            "request_counts": self.counts(),
            "metadata": self.metadata,
        }


class BatchStore:
    """Files and batches of one server; thread-safe (handlers run in the server's thread, tests in theirs)."""

    def __init__(self, state: core.ServerState) -> None:
        self.state = state
        self.settings = BatchSettings()
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.lock = threading.RLock()
        self._drawn = 0

    def reset(self) -> None:
        """Forget files and batches (the settings stay, but `expire_next`)."""
        with self.lock:
            self.files.clear()
            self.batches.clear()
            self.settings.expire_next = False
            self._drawn = 0

    def add_file(self, filename: str, purpose: str, content: bytes) -> _File:
        """Store a file and return it."""
        stored = _File(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, content, int(time.time()))
        with self.lock:
            self.files[stored.id] = stored
        return stored

    def create(self, endpoint: str, input_file: _File, metadata: dict[str, str] | None) -> _Batch:
        """A new batch of `input_file`'s lines; completed at once when `polls_until_done` is 0."""
        lines, errors = parse_input(input_file.content, endpoint)
        models = {line["body"].get("model") for line in lines if isinstance(line.get("body"), dict)}
        with self.lock:
            settings = self.settings
            batch = _Batch(
                f"batch_{uuid.uuid4().hex[:24]}",
                endpoint,
                input_file.id,
                metadata,
                int(time.time()),
                lines,
                errors,
                max(0, settings.polls_until_done),
                settings.expire_next,
                next(iter(models)) if len(models) == 1 else None,
            )
            settings.expire_next = False
            self.batches[batch.id] = batch
            if batch.polls == 0:
                self._finish(batch)
        return batch

    def retrieve(self, batch: _Batch) -> None:
        """Advance `batch` by one retrieve."""
        with self.lock:
            if batch.status == "cancelling":
                self._close(batch, "cancelled")
                return
            if batch.status not in {"validating", "in_progress", "finalizing"}:
                return
            batch.retrieves += 1
            if batch.errors or batch.retrieves >= batch.polls:
                self._finish(batch)
                return
            last = batch.polls >= 3 and batch.retrieves == batch.polls - 1
            self._enter(batch, "finalizing" if last else "in_progress")
            self._answer(batch, len(batch.lines) * batch.retrieves // batch.polls)

    def cancel(self, batch: _Batch) -> bool:
        """Start cancelling `batch`; False when it has already ended."""
        with self.lock:
            if batch.status == "cancelling":
                return True
            if batch.status not in {"validating", "in_progress", "finalizing"}:
                return False
            self._enter(batch, "cancelling")
            return True

    def info(self) -> list[BatchInfo]:
        """The created batches, oldest first."""
        with self.lock:
            return [
                BatchInfo(b.id, b.status, b.endpoint, b.input_file_id, b.metadata, b.custom_ids, b.counts())
                for b in self.batches.values()
            ]

    def _enter(self, batch: _Batch, status: str) -> None:
        batch.status = status
        batch.times.setdefault(status, int(time.time()))

    def _finish(self, batch: _Batch) -> None:
        if batch.errors:
            self._enter(batch, "failed")
            return
        self._enter(batch, "in_progress")
        self._enter(batch, "finalizing")
        if not batch.expire:
            self._answer(batch, len(batch.lines))
            self._close(batch, "completed")
            return
        self._answer(batch, len(batch.lines) // 2)
        if self.settings.expired_in_error_file:
            for line in batch.lines[len(batch.output) + len(batch.failed) :]:
                error = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
                batch.failed.append({**_result_line(line, None), "error": error})
        self._close(batch, "expired")

    def _close(self, batch: _Batch, status: str) -> None:
        self._enter(batch, status)
        for kind, results in (("output", batch.output), ("error", batch.failed)):
            if results:
                content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results).encode()
                stored = self.add_file(f"{batch.id}_{kind}.jsonl", "batch_output", content)
                setattr(batch, f"{kind}_file_id", stored.id)

    def _answer(self, batch: _Batch, upto: int) -> None:
        """Answer the lines before `upto` not answered yet, in file order."""
        for line in batch.lines[len(batch.output) + len(batch.failed) : upto]:
            result = self._answer_line(batch.endpoint, line)
            (batch.output if result["response"]["status_code"] == 200 else batch.failed).append(result)

    def _answer_line(self, endpoint: str, line: dict[str, Any]) -> dict[str, Any]:
        custom_id = str(line["custom_id"])
        settings = self.settings
        draw, self._drawn = self._drawn, self._drawn + 1
        if custom_id in settings.fail_custom_ids or core._unit(settings.fail_seed, draw, "batch") < settings.fail_rate:
            error = core.error_response(500, FAILED_LINE_MESSAGE, "server_error", None)
            return _result_line(line, (500, json.loads(bytes(error.body))))
        request_id = f"req_loopback_{self.state.next_id()}"
        if endpoint == "/v1/embeddings":
            result: Any = core.embedding_response(self.state, line["body"])
        elif endpoint == "/v1/images/generations":
            result = core.image_response(line["body"])
        else:
            fault = core.Fault("schema_invalid") if custom_id in settings.invalid_custom_ids else None
            result = core.chat_completion(self.state, line["body"], fault, request_id=request_id)
        if isinstance(result, Response):
            return _result_line(line, (result.status_code, json.loads(bytes(result.body))), request_id)
        return _result_line(line, (200, result), request_id)


def _result_line(
    line: dict[str, Any], response: tuple[int, Any] | None, request_id: str | None = None
) -> dict[str, Any]:
    """One line of an output or error file."""
    answered = None
    if response is not None:
        answered = {
            "status_code": response[0],
            "request_id": request_id or f"req_{uuid.uuid4().hex}",
            "body": response[1],
        }
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": line["custom_id"],
        "response": answered,
        "error": None,
    }


def parse_input(content: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The input file's request lines and its validation errors (`BatchError` dicts naming 1-based lines)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[Any] = set()

    def error(number: int | None, code: str, message: str, param: str | None = None) -> None:
        where = f"Line {number}: " if number is not None else ""
        errors.append({"code": code, "line": number, "message": where + message, "param": param})

    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
        error(None, "invalid_file_format", "The input file is not UTF-8 encoded.")
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            error(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            error(number, "missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id")
        elif custom_id in seen:
            error(number, "duplicate_custom_id", f"The custom_id {custom_id!r} is not unique.", "custom_id")
        elif line.get("method") != "POST":
            error(number, "invalid_method", f"Invalid method {line.get('method')!r}; expected 'POST'.", "method")
        elif line.get("url") != endpoint:
            error(number, "invalid_url", f"The url {line.get('url')!r} does not match the batch's {endpoint!r}.", "url")
        elif not isinstance(body, dict):
            error(number, "missing_required_parameter", "Missing required parameter: 'body'.", "body")
        else:
            models.add(body.get("model"))
            if len(models) > 1:
                error(number, "mismatched_model", "All requests of a batch must use the same model.", "body.model")
        seen.add(str(custom_id))
        lines.append(line)
    if not lines and not errors:
        error(None, "empty_file", "The input file has no requests.")
    return lines, errors


def store(state: core.ServerState) -> BatchStore:
    """The `BatchStore` of a `ServerState`, made on first use."""
    with state._lock:
        if state.batch_store is None:
            state.batch_store = BatchStore(state)
        made: BatchStore = state.batch_store
    return made


def _not_found(what: str, ident: str) -> JSONResponse:
    return core.error_response(404, f"No such {what}: '{ident}'", "invalid_request_error", None)


async def _begin(
    request: Request, path: str, *, model: str | None = None, custom_ids: tuple[str, ...] = ()
) -> tuple[Any, float] | Response:
    """Authenticate, draw the fault, log; the state and the arrival time, or the response to send instead."""
    state = request.app.state.loopback
    arrived = time.monotonic()
    if not core._authorized(request):
        state.log.add(core.RequestRecord("unauthenticated", None, None, None, time.time()))
        return core.error_response(401, "You didn't provide an API key.", "invalid_request_error", "missing_api_key")
    fault = state.plan.next_fault(path, None)
    endpoint = f"{request.method} {request.url.path}"
    kind = fault.kind if fault else None
    state.log.add(core.RequestRecord(path, model, None, kind, time.time(), None, False, endpoint, custom_ids))
    if fault is not None and fault.kind == "hang":
        seconds = fault.hang_seconds if fault.hang_seconds is not None else state.plan.hang_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), timeout=seconds)
    if (faulted := await core._fault_response(state, request, fault, arrived)) is not None:
        return faulted
    return state, arrived


async def _reply(state: core.ServerState, arrived: float, payload: dict[str, Any] | Response) -> Response:
    """`payload` as JSON (or the response itself), `latency_ms` after the request arrived."""
    await core._wait_out_latency(state, arrived)
    if isinstance(payload, Response):
        return payload
    return JSONResponse(payload, headers=core._headers(state))


async def upload_file(request: Request) -> Response:
    """`POST /v1/files`: a multipart upload (`file`, `purpose`) -> FileObject."""
    try:
        form = await request.form()
    except ClientDisconnect:
        return Response(status_code=499)
    begun = await _begin(request, "files")
    if isinstance(begun, Response):
        return begun
    state, arrived = begun
    upload, purpose = form.get("file"), form.get("purpose")
    if purpose not in FILE_PURPOSES:
        error = core.error_response(
            400, f"Invalid purpose {purpose!r}.", "invalid_request_error", None, param="purpose"
        )
        return await _reply(state, arrived, error)
    if upload is None or isinstance(upload, str):
        error = core.error_response(400, "Missing file.", "invalid_request_error", None, param="file")
        return await _reply(state, arrived, error)
    stored = store(state).add_file(upload.filename or "upload", str(purpose), await upload.read())
    return await _reply(state, arrived, stored.json())


async def file_route(request: Request) -> Response:
    """`GET /v1/files`, `GET|DELETE /v1/files/{file_id}`, `GET /v1/files/{file_id}/content`."""
    begun = await _begin(request, "files")
    if isinstance(begun, Response):
        return begun
    state, arrived = begun
    files = store(state)
    file_id = request.path_params.get("file_id")
    if file_id is None:
        with files.lock:
            data = [f.json() for f in reversed(files.files.values())]
        return await _reply(state, arrived, _page(data, has_more=False))
    stored = files.files.get(file_id)
    if stored is None:
        return await _reply(state, arrived, _not_found("file", file_id))
    if request.method == "DELETE":
        with files.lock:
            files.files.pop(file_id, None)
        return await _reply(state, arrived, {"id": file_id, "object": "file", "deleted": True})
    if request.url.path.endswith("/content"):
        await core._wait_out_latency(state, arrived)
        return Response(stored.content, media_type="application/octet-stream", headers=core._headers(state))
    return await _reply(state, arrived, stored.json())


async def create_batch(request: Request) -> Response:
    """`POST /v1/batches` -> Batch (`validating`, or already ended when `polls_until_done` is 0)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    except ClientDisconnect:
        return Response(status_code=499)
    state = request.app.state.loopback
    files = store(state)
    is_object, body = isinstance(body, dict), body if isinstance(body, dict) else {}
    input_file = files.files.get(str(body.get("input_file_id")))
    lines = parse_input(input_file.content, str(body.get("endpoint")))[0] if input_file else []
    custom_ids = tuple(str(line.get("custom_id")) for line in lines)
    models = [line["body"].get("model") for line in lines if isinstance(line.get("body"), dict)]
    begun = await _begin(request, "batches", model=models[0] if models else None, custom_ids=custom_ids)
    if isinstance(begun, Response):
        return begun
    state, arrived = begun
    metadata = body.get("metadata")
    problem = None
    if not is_object:
        error = core.error_response(400, "The request body must be a JSON object.", "invalid_request_error", None)
        return await _reply(state, arrived, error)
    if input_file is None:
        return await _reply(state, arrived, _not_found("file", str(body.get("input_file_id"))))
    if input_file.purpose != "batch":
        problem = ("input_file_id", "The input file must be uploaded with purpose 'batch'.")
    elif body.get("endpoint") not in BATCH_ENDPOINTS:
        problem = ("endpoint", f"Unsupported endpoint {body.get('endpoint')!r}; expected one of {BATCH_ENDPOINTS}.")
    elif body.get("completion_window") != "24h":
        problem = ("completion_window", "Invalid completion_window; only '24h' is supported.")
    elif metadata is not None and not (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
        )
    ):
        problem = ("metadata", "metadata must be at most 16 string keys (64 chars) and string values (512 chars).")
    if problem is not None:
        error = core.error_response(400, problem[1], "invalid_request_error", "invalid_value", param=problem[0])
        return await _reply(state, arrived, error)
    batch = files.create(str(body["endpoint"]), input_file, dict(metadata) if metadata is not None else None)
    return await _reply(state, arrived, batch.json())


async def batch_route(request: Request) -> Response:
    """`GET /v1/batches` (list), `GET /v1/batches/{batch_id}` (advances it), `POST .../cancel`."""
    begun = await _begin(request, "batches")
    if isinstance(begun, Response):
        return begun
    state, arrived = begun
    batches = store(state)
    batch_id = request.path_params.get("batch_id")
    if batch_id is None:
        return await _reply(state, arrived, _list_page(batches, request))
    batch = batches.batches.get(batch_id)
    if batch is None:
        return await _reply(state, arrived, _not_found("batch", batch_id))
    if request.url.path.endswith("/cancel"):
        if not batches.cancel(batch):
            message = f"Cannot cancel a batch with status '{batch.status}'."
            return await _reply(state, arrived, core.error_response(409, message, "invalid_request_error", None))
    else:
        batches.retrieve(batch)
    with batches.lock:
        payload = batch.json()
    return await _reply(state, arrived, payload)


def _list_page(batches: BatchStore, request: Request) -> dict[str, Any] | Response:
    """A cursor page of batches, newest first."""
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        return core.error_response(400, "limit must be from 1 to 100.", "invalid_request_error", None, param="limit")
    with batches.lock:
        ordered = list(reversed(batches.batches.values()))
        after = request.query_params.get("after")
        ids = [b.id for b in ordered]
        start = ids.index(after) + 1 if after in ids else 0
        data = [b.json() for b in ordered[start : start + limit]]
    return _page(data, has_more=start + limit < len(ordered))


def _page(data: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    """An OpenAI cursor page."""
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}


def batch_routes() -> list[Route]:
    """The Files and Batches routes, for `tests.openai_server.create_app`."""
    return [
        Route("/v1/files", upload_file, methods=["POST"]),
        Route("/v1/files", file_route, methods=["GET"]),
        Route("/v1/files/{file_id}", file_route, methods=["GET", "DELETE"]),
        Route("/v1/files/{file_id}/content", file_route, methods=["GET"]),
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", batch_route, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batch_route, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batch_route, methods=["POST"]),
    ]
