"""What providers see and return: the wire types of one model call, and the provider protocol.

Providers (`pipeline/llm/offline.py`, `pipeline/llm/openai_provider.py`) depend on this module only, never
on the engine that orchestrates them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from pipeline.llm.catalog import StageModel, Usage
from pipeline.prompts import Prompt

__all__ = [
    "Completion",
    "CompletionRequest",
    "EmbeddingRequest",
    "Embeddings",
    "ImageRequest",
    "Provider",
    "ProviderError",
    "RenderedImage",
    "Usage",
]


@dataclass(frozen=True)
class CompletionRequest:
    """What a provider needs for one structured call."""

    stage: str
    prompt: Prompt
    data: Mapping[str, Any]
    schema: type[BaseModel]
    settings: StageModel
    # Set on a repair attempt: what was wrong with the previous answer, told to the model as data.
    repair_note: str | None = None
    # Answer fields that must echo one of the inputs: (dotted path in the schema, allowed values). Sent to
    # the provider as `enum`s of a per-request JSON schema; the stage still checks the parsed answer.
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Arrays whose length is known: (dotted path, min items, max items), sent as `minItems`/`maxItems`.
    sizes: tuple[tuple[str, int, int], ...] = ()

    @functools.cached_property
    def messages(self) -> list[dict[str, str]]:
        """The rendered chat messages (instructions + delimited data [+ repair note]), rendered once."""
        messages = self.prompt.messages(self.data)
        if self.repair_note:
            messages.append(
                {
                    "role": "user",
                    "content": "Your previous answer was rejected: "
                    f"{self.repair_note}\nAnswer again with JSON that matches the schema exactly.",
                }
            )
        return messages


@dataclass(frozen=True)
class Completion:
    """A provider's parsed answer with the model that produced it, usage, and HTTP attempts made."""

    answer: BaseModel
    model: str
    usage: Usage
    attempts: int = 1


@dataclass(frozen=True)
class ImageRequest:
    """What a provider needs to render one image."""

    stage: str
    prompt: str
    size: str
    settings: StageModel


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts to turn into vectors with the stage's embedding model."""

    stage: str
    texts: list[str]
    settings: StageModel


@dataclass(frozen=True)
class Embeddings:
    """One vector per requested text, in request order."""

    vectors: list[list[float]]
    model: str
    usage: Usage
    attempts: int = 1


@dataclass(frozen=True)
class RenderedImage:
    """PNG bytes from a provider, with the model that produced them."""

    png: bytes
    model: str
    usage: Usage
    attempts: int = 1


class ProviderError(Exception):
    """A failed provider call, classified.

    `outcome` is one of: `error` (transport/HTTP, after the SDK's retries), `malformed` (body not JSON),
    `invalid` (JSON not matching the schema), `truncated` (hit the token limit), `refused`, `rejected` (a
    valid answer the stage's check refused; it was paid for, and is never cached).
    `fatal` errors (bad credentials, forbidden) stop the engine from issuing further calls; `unreachable`
    ones (no answer: timeout, closed or refused connection) stop it when they show the endpoint is down.
    """

    def __init__(
        self,
        outcome: str,
        error_class: str,
        message: str,
        *,
        usage: Usage | None = None,
        attempts: int = 1,
        fatal: bool = False,
        unreachable: bool = False,
        answer: BaseModel | None = None,
    ):
        super().__init__(message)
        self.outcome = outcome
        self.error_class = error_class
        self.usage = usage or Usage()
        self.attempts = attempts
        self.fatal = fatal
        self.unreachable = unreachable
        self.answer = answer


class Provider(Protocol):
    """A model provider: the offline composer, or OpenAI (and compatible servers)."""

    name: str
    identity: str  # provider + endpoint, part of the cache key
    endpoint: str  # what a user is shown: the base URL (no credentials), or "offline"
    cacheable: bool  # False for free, deterministic providers: caching them would only cost writes
    secrets: tuple[str, ...]  # values that must never appear in messages, logs or the store

    @property
    def embeddings(self) -> bool:
        """Whether `embed` is available (the semantic clustering backend needs it)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer one structured request with an instance of `request.schema`, or raise `ProviderError`."""
        ...

    async def image(self, request: ImageRequest) -> RenderedImage:
        """Render one image as PNG bytes, or raise `ProviderError`."""
        ...

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Embed texts, or raise `ProviderError` (providers without embeddings set `embeddings = False`)."""
        ...

    async def aclose(self) -> None:
        """Release connections (called on the engine's loop)."""
        ...
