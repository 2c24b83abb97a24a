"""The OpenAI provider: the official `openai` SDK (async client), or any OpenAI-compatible server.

Structured answers use Chat Completions with a strict JSON schema built from the stage's Pydantic model
(the request `chat.completions.parse` sends), images use the Images API (base64 PNG). The SDK itself retries connection
errors, timeouts, 408/409/429 and 5xx with backoff that honours `Retry-After`; this module classifies
what is left into `ProviderError`s the engine understands, with the attempts the SDK made.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from typing import Any

import openai
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel, ValidationError

from pipeline.llm.catalog import Usage
from pipeline.llm.engine import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    ImageRequest,
    ProviderError,
    RenderedImage,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider:
    """Calls OpenAI (or a compatible `base_url`) through `openai.AsyncOpenAI`."""

    name = "openai"
    cacheable = True
    embeddings = True

    def __init__(self, *, api_key: str, base_url: str | None = None, max_retries: int = 3, timeout_s: float = 120.0):
        if not api_key:
            raise ValueError("the OpenAI provider needs an API key (OPENAI_API_KEY); any string for a local server")
        self._api_key = api_key
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.identity = f"openai@{self.base_url}"
        self.secrets = (api_key,)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self._client: openai.AsyncOpenAI | None = None

    def _sdk(self) -> openai.AsyncOpenAI:
        # Created on first use, on the engine's event loop, which owns its connections.
        if self._client is None:
            self._client = sdk_client(self._api_key, self.base_url, self.max_retries, self.timeout_s)
        return self._client

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def complete(self, request: CompletionRequest) -> Completion:
        """One structured Chat Completions call (strict JSON schema), validated into `request.schema`."""
        settings = request.settings
        arguments = chat_arguments(request.messages, settings.model, settings.max_output_tokens, request.schema)
        if settings.temperature is not None:
            arguments["temperature"] = settings.temperature
        try:
            raw = await self._sdk().chat.completions.with_raw_response.create(**arguments)
        except openai.APIError as error:
            raise self._classify(error) from error
        attempts = raw.retries_taken + 1
        try:
            completion = raw.parse()
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
            answer = request.schema.model_validate_json(choice.message.content)
        except ValidationError as error:
            raise ProviderError(
                "invalid", "ValidationError", _first_lines(str(error)), usage=usage, attempts=attempts
            ) from error
        return Completion(answer=answer, model=completion.model or settings.model, usage=usage, attempts=attempts)

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
            png = base64.b64decode(response.data[0].b64_json or "", validate=True)
        except (json.JSONDecodeError, ValidationError, binascii.Error, IndexError, TypeError) as error:
            raise ProviderError(
                "malformed", type(error).__name__, "image response had no valid base64 image", attempts=attempts
            ) from error
        if not png:
            raise ProviderError("malformed", "EmptyImage", "image response had no image data", attempts=attempts)
        return RenderedImage(png=png, model=request.settings.model, usage=Usage(images=1), attempts=attempts)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Vectors for a batch of texts from the Embeddings API, in input order."""
        try:
            raw = await self._sdk().embeddings.with_raw_response.create(
                model=request.settings.model, input=request.texts
            )
        except openai.APIError as error:
            raise self._classify(error) from error
        attempts = raw.retries_taken + 1
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

    def _classify(self, error: openai.APIError) -> ProviderError:
        """Map an SDK error (raised after the SDK's own retries) to a `ProviderError`."""
        retried = self.max_retries + 1
        if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderError("error", type(error).__name__, _first_lines(str(error)), attempts=1, fatal=True)
        if isinstance(error, openai.APITimeoutError | openai.APIConnectionError):
            return ProviderError("error", type(error).__name__, _first_lines(str(error)), attempts=retried)
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            attempts = retried if status in {408, 409, 429} or status >= 500 else 1
            return ProviderError(
                "error", type(error).__name__, f"HTTP {status}: {_first_lines(str(error))}", attempts=attempts
            )
        return ProviderError("error", type(error).__name__, _first_lines(str(error)))


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


def chat_arguments(
    messages: list[dict[str, str]], model: str, max_output_tokens: int, schema: type[BaseModel]
) -> dict[str, Any]:
    """Keyword arguments of `chat.completions.create` for one strict-schema call.

    The messages and the schema travel in `extra_body`, which the SDK merges into the JSON body as-is
    (top-level keys of `extra_body` replace the typed ones): passed as typed parameters, the SDK would walk
    both through its parameter transform on every call, which costs about a third of its client CPU per
    request (measured; neither holds anything the transform would change: no aliases, files or dates).
    """
    return {
        "model": model,
        "messages": [],  # required by the signature; replaced by `extra_body["messages"]`
        "max_completion_tokens": max_output_tokens,
        "extra_body": {"messages": messages, "response_format": response_format(schema)},
    }


@functools.cache
def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    """The strict `json_schema` response format for `schema`, built once per class.

    It is exactly what `chat.completions.parse` sends; building it per call costs more client CPU than
    the HTTP request itself, so the provider calls `create` with this and validates the answer itself.
    """
    return type_to_response_format_param(schema)  # type: ignore[return-value]


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
