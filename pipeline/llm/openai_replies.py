"""Reading what an OpenAI-compatible server sent: Chat Completions bodies (real-time answers and Batch API
output lines) as validated `Completion`s, usage, and what an SDK error says about its cause."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Mapping
from typing import Any

import openai
from pydantic import BaseModel, ValidationError

from pipeline.llm.catalog import Usage
from pipeline.llm.structured_output import parse_answer
from pipeline.llm.wire import Completion, CompletionRequest, ProviderError

FORM_MARKERS = ("response_format", "json_schema", "json_object")


def transient_status(status: int) -> bool:
    """Whether an HTTP status is one the SDK retries (and so may have been sent several times)."""
    return status in {408, 409, 429} or status >= 500


def lacks_embeddings(error: openai.APIStatusError) -> bool:
    """Whether an error says the endpoint has no embeddings (llama.cpp: HTTP 500 naming `embedding`)."""
    return error.status_code in {400, 404, 405, 501} or (error.status_code == 500 and "embedding" in str(error))


def refuses_form(error: openai.APIStatusError) -> bool:
    """Whether an error says the endpoint does not accept the request's `response_format`."""
    if error.status_code not in {400, 415, 422, 500, 501}:
        return False
    text = f"{error} {error.body}".lower()
    return any(marker in text for marker in FORM_MARKERS)


def no_answer_cause(error: BaseException) -> str:
    """Why a request got no answer, from its chain of causes: `refused` (nothing listening), `closed`
    (the server dropped the connection without a response) or `timeout`."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        name = type(cause).__name__
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "refused"
        if name in {"ClientConnectorError", "ConnectError"} and "refused" in str(cause).lower():
            return "refused"
        if name in {"ServerDisconnectedError", "RemoteProtocolError", "ClientOSError"} or isinstance(
            cause, ConnectionResetError | BrokenPipeError
        ):
            return "closed"
        cause = cause.__cause__ or cause.__context__
    return "timeout"


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _Message = _Message()
    finish_reason: str | None = None


class _TokenDetails(BaseModel):
    cached_tokens: int | None = 0


class _ReplyUsage(BaseModel):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: _TokenDetails | None = None


class _ChatReply(BaseModel):
    """The fields of a Chat Completions body this provider reads (others are ignored)."""

    choices: list[_Choice] = []
    model: str | None = None
    usage: _ReplyUsage | None = None


def read_completion(reply: Callable[[], Any], request: CompletionRequest, attempts: int) -> Completion:
    """A Chat Completions body (`reply()` reads it) as a validated `Completion`, or the `ProviderError` that
    says what was wrong with it. Real-time answers and Batch API output lines both come through here."""
    settings = request.settings
    try:
        completion = reply()
    except json.JSONDecodeError as error:
        # A 200 whose body is not JSON: the SDK does not retry it; the engine's repair attempt does.
        raise ProviderError(
            "malformed", "JSONDecodeError", f"response body is not JSON ({error})", attempts=attempts
        ) from error
    usage = usage_of(completion.usage)
    if not completion.choices:
        raise ProviderError("malformed", "NoChoices", "the response had no choices", usage=usage, attempts=attempts)
    choice = completion.choices[0]
    if choice.message.refusal:
        raise ProviderError("refused", "Refusal", choice.message.refusal[:500], usage=usage, attempts=attempts)
    if choice.finish_reason == "content_filter":
        raise ProviderError(
            "refused", "ContentFilter", "answer blocked by the content filter", usage=usage, attempts=attempts
        )
    if choice.finish_reason == "length":
        raise ProviderError(
            "truncated",
            "LengthFinishReason",
            f"answer cut off at max_output_tokens={settings.max_output_tokens}",
            usage=usage,
            attempts=attempts,
        )
    if not choice.message.content:
        raise ProviderError("invalid", "EmptyAnswer", "the answer had no content", usage=usage, attempts=attempts)
    try:
        answer = parse_answer(request.schema, choice.message.content)
    except ValidationError as error:
        raise ProviderError(
            "invalid", "ValidationError", first_lines(str(error)), usage=usage, attempts=attempts
        ) from error
    return Completion(answer=answer, model=completion.model or settings.model, usage=usage, attempts=attempts)


def batch_line_body(line: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a batch line that was answered (HTTP 200); `ProviderError` for an errored one."""
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if line.get("error") or status != 200 or not isinstance(body, dict):
        problem = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        message = problem.get("message") if isinstance(problem, dict) else str(problem)
        raise ProviderError("error", f"BatchLine{status or ''}", first_lines(str(message or "no answer")))
    return body


def reply_from_body(body: Any) -> Any:
    """A Chat Completions body already decoded (a batch output line's `response.body`) as `_ChatReply`."""
    try:
        return _ChatReply.model_validate(body)
    except ValidationError as error:
        raise ProviderError("malformed", "UnreadableBody", first_lines(str(error))) from error


def read_reply(raw: Any) -> Any:
    """A completion body as `_ChatReply`, or as the SDK reads it when the body does not fit that shape.

    The SDK's own reading builds its whole `ChatCompletion` object tree in Python, about a tenth of the
    engine loop's time per call; pydantic's JSON parser reads the few fields we use much faster. Bodies
    that are not JSON or not of that shape take the SDK's path, so what a provider may send is unchanged.
    """
    try:
        return _ChatReply.model_validate_json(raw.http_response.content)
    except ValidationError:
        return raw.parse()


def usage_of(usage: object | None) -> Usage:
    """The token usage of an SDK or `_ChatReply` usage object (zeros for what it lacks)."""
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        cached_input_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
        output_tokens=getattr(usage, "completion_tokens", 0) or 0,
    )


def first_lines(text: str, limit: int = 400) -> str:
    """`text` on one line, cut to `limit` characters: what an error message shows of a long body."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
