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
are in `pipeline/llm/structured_output.py`; reading bodies and errors in `openai_replies.py`). Likewise an
endpoint without embeddings is remembered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import ValidationError

from pipeline.llm.batch_api import BatchAPI
from pipeline.llm.catalog import Usage
from pipeline.llm.openai_replies import (
    batch_line_body,
    first_lines,
    lacks_embeddings,
    no_answer_cause,
    read_completion,
    read_reply,
    refuses_form,
    reply_from_body,
    transient_status,
)
from pipeline.llm.structured_output import STRUCTURED_FORMS, chat_arguments
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
        body: dict[str, Any] = arguments["extra_body"]  # the JSON body the SDK sends (`chat_arguments`)
        return dict(body)

    def batch_answer(self, request: CompletionRequest, line: Mapping[str, Any]) -> Completion:
        """A batch output (or error) file's line for `request`, read and validated exactly as a real-time
        answer; `ProviderError` says what was wrong (an errored line, no JSON body, a schema violation)."""
        body = batch_line_body(line)
        return read_completion(lambda: reply_from_body(body), request, 1)

    def batch_image_body(self, request: ImageRequest) -> dict[str, Any]:
        """The Images API body a batch line sends for `request` (what `image` sends)."""
        return {"model": request.settings.model, "prompt": request.prompt, "size": request.size, "n": 1}

    def batch_image(self, request: ImageRequest, line: Mapping[str, Any]) -> RenderedImage:
        """A batch line's image for `request`, read as `image` reads a real-time answer."""
        body = batch_line_body(line)
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
                    refusal=refuses_form,
                )
            except openai.APIStatusError as error:
                if (*key, form) not in _confirmed and form + 1 < len(STRUCTURED_FORMS) and refuses_form(error):
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
        return read_completion(lambda: read_reply(raw), request, attempts)

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
            if refusal(error) or not transient_status(error.status_code):
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
                refusal=lacks_embeddings,
            )
        except openai.APIStatusError as error:
            if lacks_embeddings(error):
                with _learnt:  # remembered, so `auto` clustering goes lexical without asking again
                    _no_embeddings[self.base_url] = f"HTTP {error.status_code}: {first_lines(str(error), 160)}"
            probed = not confirmed and self.max_retries > 0 and lacks_embeddings(error)
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
            return ProviderError("error", type(error).__name__, first_lines(str(error)), attempts=1, fatal=True)
        if isinstance(error, openai.APIConnectionError):  # APITimeoutError included
            # The SDK's aiohttp transport reports refused and closed connections as timeouts too: what
            # happened is read from the cause, so each is reported as what it was.
            what = {
                "refused": "refused the connection",
                "closed": "closed the connection without an answer",
            }.get(no_answer_cause(error), f"did not answer within {self.timeout_s:g} s")
            return ProviderError(
                "error",
                type(error).__name__,
                f"provider at {self.endpoint} {what} ({retried} attempts)",
                attempts=retried,
                unreachable=True,
            )
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            attempts = retried if transient_status(status) else 1
            return ProviderError(
                "error", type(error).__name__, f"HTTP {status}: {first_lines(str(error))}", attempts=attempts
            )
        return ProviderError("error", type(error).__name__, first_lines(str(error)))


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
        arguments["extra_body"]["temperature"] = settings.temperature
    return arguments
