"""One item's provider call, by kind: what an attempt sends, which answer it accepts, how it is repaired.

The repair loop (`with_repairs`, at the end) runs every kind the same way; the kinds differ only in what is
written above it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.llm.catalog import StageModel, Usage
from pipeline.llm.limits import RateLimiter
from pipeline.llm.tasks import EngineOptions, Task
from pipeline.llm.window import Attempt
from pipeline.llm.wire import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    Provider,
    ProviderError,
    RenderedImage,
)
from pipeline.prompts import Prompt

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R", Completion, RenderedImage, Embeddings)  # what one provider call returns

# Beyond these sizes an `enum` is not sent (OpenAI's strict mode limits enums); the stage's check applies.
MAX_ENUM_VALUES = 500
MAX_ENUM_CHARS = 15_000


class ProviderCall(Generic[R]):
    """One item's call to `provider`, attempted until it succeeds or cannot be repaired."""

    provider: Provider
    model: str
    repairable: frozenset[str] = frozenset()  # outcomes another attempt may fix
    # Structured calls: the item's time bound covers every attempt, and a call queued behind one that
    # found the provider unusable is not made. Images and embeddings have always had the bound per attempt
    # and no such stop; they keep it.
    whole_item_bound = False
    stop_when_fatal = False

    def tokens(self) -> int:
        """Tokens to take from the rate limiter before an attempt."""
        raise NotImplementedError

    def send(self) -> Coroutine[Any, Any, R]:
        """One attempt's provider call."""
        raise NotImplementedError

    def accept(self, result: R) -> R:
        """The result as handed on, or a `ProviderError` for an answer that must be repaired or fail."""
        return result

    def revise(self, error: ProviderError) -> None:
        """Change what the next attempt sends after a repairable `error`."""


class StructuredCall(ProviderCall[Completion]):
    """A structured completion: validated into the schema, checked by the stage, repaired with a note."""

    repairable = frozenset({"malformed", "invalid", "truncated", "rejected"})
    whole_item_bound = True
    stop_when_fatal = True

    def __init__(
        self,
        provider: Provider,
        request: CompletionRequest,
        input_tokens: int,
        check: Callable[[Any], str | None] | None,
    ):
        self.provider = provider
        self.model = request.settings.model
        self.request = request
        self.input_tokens = input_tokens
        self.check = check

    def tokens(self) -> int:
        return self.input_tokens + self.request.settings.max_output_tokens

    def send(self) -> Coroutine[Any, Any, Completion]:
        return self.provider.complete(self.request)

    def accept(self, result: Completion) -> Completion:
        answer = result.answer
        if type(answer) is not self.request.schema:  # providers validate into the schema; others are checked
            try:
                answer = self.request.schema.model_validate(answer.model_dump())
            except ValidationError as exc:
                raise ProviderError("invalid", "ValidationError", str(exc), usage=result.usage) from exc
            result = dataclasses.replace(result, answer=answer)
        problem = self.check(answer) if self.check is not None else None
        if problem:  # a valid answer the stage refused: paid for, repaired like an invalid one
            raise ProviderError(
                "rejected", "RejectedByStage", problem, usage=result.usage, attempts=result.attempts, answer=answer
            )
        return result

    def revise(self, error: ProviderError) -> None:
        settings = self.request.settings
        if error.outcome == "truncated":
            bigger = settings.model_copy(update={"max_output_tokens": min(settings.max_output_tokens * 2, 128_000)})
            self.request = dataclasses.replace(self.request, settings=bigger)
        else:  # what was wrong, told to the model as data
            self.request = dataclasses.replace(self.request, repair_note=clip(str(error), 600))


class PlainCall(ProviderCall[R]):
    """A call without a structured answer (image, embeddings): an unreadable body is asked for again."""

    repairable = frozenset({"malformed"})

    def __init__(self, provider: Provider, model: str, tokens: int, invoke: Callable[[], Coroutine[Any, Any, R]]):
        self.provider = provider
        self.model = model
        self._tokens = tokens
        self._invoke: Callable[[], Coroutine[Any, Any, R]] = invoke

    def tokens(self) -> int:
        return self._tokens

    def send(self) -> Coroutine[Any, Any, R]:
        return self._invoke()


class EmbeddingCall(PlainCall[Embeddings]):
    """An embeddings request: one vector per text, or the batch is invalid."""

    def __init__(self, provider: Provider, request: EmbeddingRequest, tokens: int):
        super().__init__(provider, request.settings.model, tokens, lambda: provider.embed(request))
        self.texts = len(request.texts)

    def accept(self, result: Embeddings) -> Embeddings:
        if len(result.vectors) != self.texts:
            raise ProviderError("invalid", "WrongCount", f"{len(result.vectors)} vectors for {self.texts} texts")
        return result


async def within(provider: Provider, call: Coroutine[Any, Any, R], bound_s: float, waited_s: float) -> R:
    """Await a provider call within what is left of the item's time bound."""
    try:
        return await asyncio.wait_for(call, max(bound_s - waited_s, 0.001))
    except TimeoutError:
        raise ProviderError(
            "error",
            "Timeout",
            f"provider at {getattr(provider, 'endpoint', provider.name)} did not answer within {bound_s:g} s",
            unreachable=True,
        ) from None


def request_for(stage: str, prompt: Prompt, task: Task[Any, Any], settings: StageModel) -> CompletionRequest:
    """The provider request of a structured task, its choices and sizes in stable, hashable form."""
    sizes = tuple(sorted((path, low, high) for path, (low, high) in task.sizes.items()))
    return CompletionRequest(
        stage, prompt, task.data, task.schema, settings, choices=choices_of(task.choices), sizes=sizes
    )


def choices_of(choices: Mapping[str, Sequence[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A task's choices in a stable, hashable form, leaving out empty and oversized ones."""
    stable = []
    for path, values in sorted(choices.items()):
        unique = tuple(dict.fromkeys(str(value) for value in values))
        if unique and len(unique) <= MAX_ENUM_VALUES and sum(map(len, unique)) <= MAX_ENUM_CHARS:
            stable.append((path, unique))
    return tuple(stable)


def accepted(task: Task[T, Any], raw: Any) -> T | None:
    """A cached answer, if it still fits the schema and the stage's check."""
    try:
        answer = task.schema.model_validate(raw)
    except ValidationError:
        return None
    if task.check is not None and task.check(answer):
        return None
    return answer


def add_usage(a: Usage, b: Usage) -> Usage:
    """The sum of two usages (a call's attempts are billed together)."""
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        images=a.images + b.images,
    )


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def with_repairs(
    call: ProviderCall[R], options: EngineOptions, limiter: RateLimiter | None, fatal: Callable[[], str | None]
) -> Attempt[R]:
    """Call with repair attempts; never raises (errors are returned for the caller's thread to record).

    Every kind of call takes this one path: a failure the call may repair (`call.repairable`: a
    malformed, schema-invalid or truncated answer, or one the stage's check refused) is retried within
    `repair_attempts`, the call revising its request first (a repair note telling the model what was
    wrong, as data; a bigger token limit); any other failure ends the item.
    """
    started = time.perf_counter()
    attempts = 0
    billed = Usage()
    waited = 0.0  # seconds spent waiting on the provider, bounded by `item_timeout_s`
    for repair in range(options.repair_attempts + 1):
        if call.stop_when_fatal and (fatal_error := fatal()):  # queued behind a call that found the provider unusable
            return Attempt(None, ProviderError("not_started", "ProviderUnavailable", fatal_error, attempts=0), 0.0)
        if limiter:
            await limiter.acquire(call.tokens())
        call_started = time.perf_counter()
        try:
            bound_used = waited if call.whole_item_bound else 0.0
            sent = within(call.provider, call.send(), options.item_timeout_s, bound_used)
            result = call.accept(await sent)
        except ProviderError as error:
            attempts += error.attempts
            billed = add_usage(billed, error.usage)
            if error.outcome not in call.repairable or repair == options.repair_attempts:
                error.attempts, error.usage = attempts, billed
                return Attempt(None, error, time.perf_counter() - started)
            waited += time.perf_counter() - call_started
            call.revise(error)
            continue
        except Exception as exc:  # a provider or check bug must not kill the other calls
            failure = ProviderError("error", type(exc).__name__, str(exc), usage=billed, attempts=attempts + 1)
            return Attempt(None, failure, time.perf_counter() - started)
        attempts += result.attempts
        billed = add_usage(billed, result.usage)
        done = dataclasses.replace(result, usage=billed, attempts=attempts)
        return Attempt(done, None, time.perf_counter() - started)
    raise AssertionError("unreachable")
