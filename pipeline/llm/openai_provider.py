"""The OpenAI provider: the official `openai` SDK (async client), or any OpenAI-compatible server.

Structured answers use Chat Completions with a strict JSON schema built from the stage's Pydantic model
(the request `chat.completions.parse` sends), with the task's choices as `enum`s; images use the Images
API (base64 PNG). The SDK itself retries connection errors, timeouts, 408/409/429 and 5xx with backoff
that honours `Retry-After`; this module classifies what is left into `ProviderError`s the engine
understands, with the attempts the SDK made.

Compatible servers differ in what they accept (llama.cpp's answers `json_schema` with an HTTP 500, for
example). The provider learns once per endpoint and model which structured-output form works, in this
order: strict `json_schema`, `json_object` with a `schema` (llama.cpp's grammar-constrained extension),
plain `json_object` with the schema given in the instructions. The first call in a form not yet known to
work is sent without SDK retries, so a refused form costs one request, once per process; every answer is
validated the same way whatever the form (the forms, per-request schema constraints and answer parsing
are in `pipeline/llm/structured_output.py`). Likewise an endpoint without embeddings is remembered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import BaseModel, ValidationError

from pipeline.llm.batch_api import BatchAPI
from pipeline.llm.catalog import Usage
from pipeline.llm.structured_output import STRUCTURED_FORMS, chat_arguments, parse_answer
from pipeline.llm.wire import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    ImageRequest,
    ProviderError,
    RenderedImage,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_FORM_MARKERS = ("response_format", "json_schema", "json_object")

# What this process learnt per endpoint: (base URL, model) -> index of the form to use, and why.
_forms: dict[tuple[str, str], tuple[int, str]] = {}
_confirmed: set[tuple[str, str, int]] = set()
_no_embeddings: dict[str, str] = {}
_learnt = threading.Lock()


class OpenAIProvider:
    """Calls OpenAI (or a compatible `base_url`) through `openai.AsyncOpenAI`."""

    name = "openai"
    cacheable = True

    def __init__(self, *, api_key: str, base_url: str | None = None, max_retries: int = 2, timeout_s: float = 60.0):
        if not api_key:
            raise ValueError("the OpenAI provider needs an API key (OPENAI_API_KEY); any string for a local server")
        self._api_key = api_key
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.identity = f"openai@{self.base_url}"
        self.endpoint = display_url(self.base_url)
        self.secrets: tuple[str, ...] = (api_key,)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self._client: openai.AsyncOpenAI | None = None
        self._probing: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def embeddings(self) -> bool:
        """Whether this endpoint may have embeddings (False once it answered that it has none)."""
        return self.base_url not in _no_embeddings

    def describe(self) -> dict[str, str]:
        """What this process learnt about the endpoint, for run metadata."""
        notes = {
            f"structured_output[{model}]": STRUCTURED_FORMS[index] + (f" ({why})" if why else "")
            for (url, model), (index, why) in sorted(_forms.items())
            if url == self.base_url
        }
        if self.base_url in _no_embeddings:
            notes["embeddings"] = f"unavailable ({_no_embeddings[self.base_url]})"
        return notes

    def _sdk(self) -> openai.AsyncOpenAI:
        # Created on first use, on the engine's event loop, which owns its connections.
        if self._client is None:
            self._client = sdk_client(self._api_key, self.base_url, self.max_retries, self.timeout_s)
        return self._client

    def batch_api(self) -> BatchAPI:
        """This endpoint's Files and Batches API (a synchronous SDK client with the same key and retries)."""
        client = openai.OpenAI(
            api_key=self._api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout_s
        )
        return BatchAPI(client, self.secrets)

    def batch_body(self, request: CompletionRequest) -> dict[str, Any]:
        """The Chat Completions body a batch line sends for `request`: what a real-time call would send, in
        the structured-output form this process learnt the endpoint accepts."""
        arguments = _arguments(request, _forms.get((self.base_url, request.settings.model), (0, ""))[0])
        # The JSON body the SDK would send: `extra_body`'s keys merged over the typed ones.
        body: dict[str, Any] = {key: value for key, value in arguments.items() if key != "extra_body"}
        extra: dict[str, Any] = arguments["extra_body"]
        return body | extra

    def batch_answer(self, request: CompletionRequest, line: Mapping[str, Any]) -> Completion:
        """A batch output (or error) file's line for `request`, read and validated exactly as a real-time
        answer; `ProviderError` says what was wrong (an errored line, no JSON body, a schema violation)."""
        body = _line_body(line)
        return read_completion(lambda: reply_from_body(body), request, 1)

    def batch_image_body(self, request: ImageRequest) -> dict[str, Any]:
        """The Images API body a batch line sends for `request` (what `image` sends)."""
        return {"model": request.settings.model, "prompt": request.prompt, "size": request.size, "n": 1}

    def batch_image(self, request: ImageRequest, line: Mapping[str, Any]) -> RenderedImage:
        """A batch line's image for `request`, read as `image` reads a real-time answer."""
        body = _line_body(line)
        try:
            png = base64.b64decode((body.get("data") or [{}])[0].get("b64_json") or "", validate=True)
        except (binascii.Error, IndexError, TypeError, AttributeError) as error:
            raise ProviderError("malformed", type(error).__name__, "image line had no valid base64 image") from error
        if not png:
            raise ProviderError("malformed", "EmptyImage", "image line had no image data")
        return RenderedImage(png=png, model=request.settings.model, usage=Usage(images=1))

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def complete(self, request: CompletionRequest) -> Completion:
        """One structured Chat Completions call in the best form the endpoint accepts, validated into
        `request.schema`."""
        settings = request.settings
        key = (self.base_url, settings.model)
        if not any((*key, form) in _confirmed for form in range(len(STRUCTURED_FORMS))):
            # Until a form is known to work, one call at a time finds it; the others then use it.
            async with self._probing.setdefault(key, asyncio.Lock()):
                return await self._complete(request, key)
        return await self._complete(request, key)

    async def _complete(self, request: CompletionRequest, key: tuple[str, str]) -> Completion:
        extra = 0  # requests sent before the answering one, beyond its own SDK retries (refused forms, probes)
        while True:
            form, _ = _forms.get(key, (0, ""))
            arguments = _arguments(request, form)

            async def send(client: openai.AsyncOpenAI, arguments: dict[str, Any] = arguments) -> Any:
                return await client.chat.completions.with_raw_response.create(**arguments)

            try:
                raw, probes = await self._probed(
                    send,
                    confirmed=(*key, form) in _confirmed,
                    refusal=_refuses_form,
                )
            except openai.APIStatusError as error:
                if (*key, form) not in _confirmed and form + 1 < len(STRUCTURED_FORMS) and _refuses_form(error):
                    why = f"{STRUCTURED_FORMS[form]} refused: HTTP {error.status_code}"
                    with _learnt:
                        _forms[key] = (max(_forms.get(key, (0, ""))[0], form + 1), why)
                    extra += 1
                    continue
                raise self._classify(error) from error
            except openai.APIError as error:
                raise self._classify(error) from error
            with _learnt:
                _confirmed.add((*key, form))
            break
        attempts = raw.retries_taken + 1 + extra + probes
        return read_completion(lambda: _reply(raw), request, attempts)

    async def _probed(
        self,
        send: Callable[[openai.AsyncOpenAI], Awaitable[Any]],
        *,
        confirmed: bool,
        refusal: Callable[[openai.APIStatusError], bool],
    ) -> tuple[Any, int]:
        """A raw SDK response and how many probe requests went before it.

        A request whose form this endpoint is not yet known to accept is tried once without the SDK's
        retries, so a `refusal` (a form or endpoint the server does not have) is paid once, not
        `max_retries` times; a transient failure is then sent again with them."""
        if confirmed or self.max_retries == 0:
            return await send(self._sdk()), 0
        try:
            return await send(self._sdk().with_options(max_retries=0)), 0
        except openai.APIStatusError as error:
            if refusal(error) or not _transient(error.status_code):
                raise
        except openai.APIConnectionError:
            pass
        return await send(self._sdk()), 1

    async def image(self, request: ImageRequest) -> RenderedImage:
        """One image from the Images API, returned as PNG bytes."""
        try:
            raw = await self._sdk().images.with_raw_response.generate(
                model=request.settings.model, prompt=request.prompt, size=request.size, n=1
            )
        except openai.APIError as error:
            raise self._classify(error) from error
        attempts = raw.retries_taken + 1
        try:
            response = raw.parse()
            png = base64.b64decode((response.data or [])[0].b64_json or "", validate=True)
        except (json.JSONDecodeError, ValidationError, binascii.Error, IndexError, TypeError) as error:
            raise ProviderError(
                "malformed", type(error).__name__, "image response had no valid base64 image", attempts=attempts
            ) from error
        if not png:
            raise ProviderError("malformed", "EmptyImage", "image response had no image data", attempts=attempts)
        return RenderedImage(png=png, model=request.settings.model, usage=Usage(images=1), attempts=attempts)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Vectors for a batch of texts from the Embeddings API, in input order.

        Until the endpoint has answered one embeddings request, one batch at a time asks (without SDK
        retries first): an endpoint without embeddings is asked once per process, then remembered."""
        key = (self.base_url, "embeddings:" + request.settings.model)
        if (*key, 0) in _confirmed:
            return await self._embed(request, key)
        async with self._probing.setdefault(key, asyncio.Lock()):
            return await self._embed(request, key)

    async def _embed(self, request: EmbeddingRequest, key: tuple[str, str]) -> Embeddings:
        if self.base_url in _no_embeddings:
            raise ProviderError(
                "error", "NoEmbeddings", f"the endpoint has no embeddings ({_no_embeddings[self.base_url]})"
            )
        arguments: dict[str, Any] = {"model": request.settings.model, "input": request.texts}
        confirmed = (*key, 0) in _confirmed
        try:
            raw, probes = await self._probed(
                lambda client: client.embeddings.with_raw_response.create(**arguments),
                confirmed=confirmed,
                refusal=_lacks_embeddings,
            )
        except openai.APIStatusError as error:
            if _lacks_embeddings(error):
                with _learnt:  # remembered, so `auto` clustering goes lexical without asking again
                    _no_embeddings[self.base_url] = f"HTTP {error.status_code}: {_first_lines(str(error), 160)}"
            probed = not confirmed and self.max_retries > 0 and _lacks_embeddings(error)
            raise self._classify(error, sent=1 if probed else None) from error
        except openai.APIError as error:
            raise self._classify(error) from error
        with _learnt:
            _confirmed.add((*key, 0))
        attempts = raw.retries_taken + 1 + probes
        try:
            response = raw.parse()
        except (json.JSONDecodeError, ValidationError) as error:
            raise ProviderError(
                "malformed", type(error).__name__, "embedding response unreadable", attempts=attempts
            ) from error
        vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
        usage = Usage(input_tokens=getattr(response.usage, "prompt_tokens", 0) or 0)
        return Embeddings(
            vectors=vectors, model=response.model or request.settings.model, usage=usage, attempts=attempts
        )

    def _classify(self, error: openai.APIError, sent: int | None = None) -> ProviderError:
        """Map an SDK error (raised after the SDK's own retries, or after `sent` requests) to a
        `ProviderError`."""
        retried = sent or self.max_retries + 1
        if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderError("error", type(error).__name__, _first_lines(str(error)), attempts=1, fatal=True)
        if isinstance(error, openai.APIConnectionError):  # APITimeoutError included
            # The SDK's aiohttp transport reports refused and closed connections as timeouts too: what
            # happened is read from the cause, so each is reported as what it was.
            what = {
                "refused": "refused the connection",
                "closed": "closed the connection without an answer",
            }.get(_no_answer(error), f"did not answer within {self.timeout_s:g} s")
            return ProviderError(
                "error",
                type(error).__name__,
                f"provider at {self.endpoint} {what} ({retried} attempts)",
                attempts=retried,
                unreachable=True,
            )
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            attempts = retried if _transient(status) else 1
            return ProviderError(
                "error", type(error).__name__, f"HTTP {status}: {_first_lines(str(error))}", attempts=attempts
            )
        return ProviderError("error", type(error).__name__, _first_lines(str(error)))


def forget_endpoints() -> None:
    """Forget what this process learnt about endpoints (structured-output forms, embeddings): tests that
    reuse a URL with a differently behaving server start from scratch."""
    with _learnt:
        _forms.clear()
        _confirmed.clear()
        _no_embeddings.clear()


def display_url(url: str) -> str:
    """A URL as shown to users: without user name, password or query (which may carry a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _transient(status: int) -> bool:
    return status in {408, 409, 429} or status >= 500


def _lacks_embeddings(error: openai.APIStatusError) -> bool:
    """Whether an error says the endpoint has no embeddings (llama.cpp: HTTP 500 naming `embedding`)."""
    return error.status_code in {400, 404, 405, 501} or (error.status_code == 500 and "embedding" in str(error))


def _refuses_form(error: openai.APIStatusError) -> bool:
    """Whether an error says the endpoint does not accept the request's `response_format`."""
    if error.status_code not in {400, 415, 422, 500, 501}:
        return False
    text = f"{error} {error.body}".lower()
    return any(marker in text for marker in _FORM_MARKERS)


def _no_answer(error: BaseException) -> str:
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


def sdk_client(api_key: str, base_url: str, max_retries: int, timeout_s: float) -> openai.AsyncOpenAI:
    """The SDK client every OpenAI call goes through (the benchmark measures this same client)."""
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=max_retries,
        timeout=timeout_s,
        # The SDK's aiohttp transport (its `aiohttp` extra): the same client, retries and parsing, with
        # about 30% less CPU per request than the default httpx2 transport (measured on 2 cores).
        http_client=openai.DefaultAioHttpClient(),
    )


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


def _arguments(request: CompletionRequest, form: int) -> dict[str, Any]:
    """The SDK's `create` arguments for `request` in structured-output form `form`."""
    settings = request.settings
    arguments = chat_arguments(
        request.messages,
        settings.model,
        settings.max_output_tokens,
        request.schema,
        request.choices,
        form,
        request.sizes,
    )
    if settings.temperature is not None:
        arguments["temperature"] = settings.temperature
    return arguments


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
    usage = _usage(completion.usage)
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
            "invalid", "ValidationError", _first_lines(str(error)), usage=usage, attempts=attempts
        ) from error
    return Completion(answer=answer, model=completion.model or settings.model, usage=usage, attempts=attempts)


def _line_body(line: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a batch line that was answered (HTTP 200); `ProviderError` for an errored one."""
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if line.get("error") or status != 200 or not isinstance(body, dict):
        problem = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        message = problem.get("message") if isinstance(problem, dict) else str(problem)
        raise ProviderError("error", f"BatchLine{status or ''}", _first_lines(str(message or "no answer")))
    return body


def reply_from_body(body: Any) -> Any:
    """A Chat Completions body already decoded (a batch output line's `response.body`) as `_ChatReply`."""
    try:
        return _ChatReply.model_validate(body)
    except ValidationError as error:
        raise ProviderError("malformed", "UnreadableBody", _first_lines(str(error))) from error


def _reply(raw: Any) -> Any:
    """A completion body as `_ChatReply`, or as the SDK reads it when the body does not fit that shape.

    The SDK's own reading builds its whole `ChatCompletion` object tree in Python, about a tenth of the
    engine loop's time per call; pydantic's JSON parser reads the few fields we use much faster. Bodies
    that are not JSON or not of that shape take the SDK's path, so what a provider may send is unchanged.
    """
    try:
        return _ChatReply.model_validate_json(raw.http_response.content)
    except ValidationError:
        return raw.parse()


def _usage(usage: object | None) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    return Usage(
        input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        cached_input_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
        output_tokens=getattr(usage, "completion_tokens", 0) or 0,
    )


def _first_lines(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
