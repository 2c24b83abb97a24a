"""`ModelEngine`: the single path every model call takes.

A stage asks the engine for a structured answer (`generate_each` / `generate`) or an image
(`generate_image`); the engine resolves the stage's model and the prompt, calls the provider, validates
the answer against the stage's Pydantic schema, prices it from the catalog and writes a ledger row for
every call, successful or not. Stages never talk to a provider directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.llm.catalog import Catalog, StageModel, Usage
from pipeline.prompts import Prompt, PromptRegistry

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class CompletionRequest:
    """What a provider needs for one structured call."""

    stage: str
    prompt: Prompt
    data: Mapping[str, Any]
    schema: type[BaseModel]
    settings: StageModel

    @property
    def messages(self) -> list[dict[str, str]]:
        """The rendered chat messages (instructions + delimited data)."""
        return self.prompt.messages(self.data)


@dataclass(frozen=True)
class Completion:
    """A provider's parsed answer with the model that produced it and the usage it reported."""

    answer: BaseModel
    model: str
    usage: Usage


@dataclass(frozen=True)
class ImageRequest:
    """What a provider needs to render one image."""

    stage: str
    prompt: str
    size: str
    settings: StageModel


@dataclass(frozen=True)
class RenderedImage:
    """PNG bytes from a provider, with the model that produced them."""

    png: bytes
    model: str
    usage: Usage


class Provider(Protocol):
    """A model provider: the offline composer, or OpenAI (and compatible servers)."""

    name: str

    def complete(self, request: CompletionRequest) -> Completion:
        """Answer one structured request with an instance of `request.schema`."""
        ...

    def image(self, request: ImageRequest) -> RenderedImage:
        """Render one image as PNG bytes."""
        ...


class Ledger(Protocol):
    """Where call records go (the store implements it)."""

    def record_call(self, values: Mapping[str, Any]) -> None:
        """Append one ledger row."""
        ...


class ModelCallFailed(RuntimeError):
    """A call that produced no usable answer; already recorded in the ledger."""

    def __init__(self, stage: str, item_ref: str | None, outcome: str, error_class: str, message: str):
        where = f" for {item_ref}" if item_ref else ""
        super().__init__(f"{stage}{where}: {outcome} ({error_class}): {message}")
        self.stage = stage
        self.item_ref = item_ref
        self.outcome = outcome
        self.error_class = error_class


@dataclass(frozen=True)
class Generation(Generic[T]):
    """A validated answer and the provenance every generated row records."""

    answer: T
    provider: str
    model: str
    prompt_version: str

    def provenance(self) -> dict[str, str]:
        """Columns `provider`, `model`, `prompt_version` for the rows built from this answer."""
        return {"provider": self.provider, "model": self.model, "prompt_version": self.prompt_version}


@dataclass(frozen=True)
class Task(Generic[T]):
    """One structured call a stage wants made: which item, which prompt, what data, which answer shape."""

    ref: str
    prompt_name: str
    data: Mapping[str, Any]
    schema: type[T]


@dataclass
class UsageTotals:
    """Running totals of the calls an engine made, for asset metadata."""

    calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    cost_usd: float = 0.0
    by_outcome: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, usage: Usage, cost: float) -> None:
        """Count one call."""
        self.calls += 1
        self.failed_calls += outcome != "ok"
        self.input_tokens += usage.input_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.output_tokens += usage.output_tokens
        self.images += usage.images
        self.cost_usd = round(self.cost_usd + cost, 8)
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1


class ModelEngine:
    """Makes, validates, prices and records model calls for one run and partition."""

    def __init__(
        self,
        provider: Provider,
        *,
        catalog: Catalog,
        prompts: PromptRegistry,
        ledger: Ledger,
        run_id: str | None = None,
        partition: str | None = None,
        site_prompt_overrides: Mapping[str, Mapping[str, str]] | None = None,
    ):
        self.provider = provider
        self.catalog = catalog
        self.prompts = prompts
        self.ledger = ledger
        self.run_id = run_id
        self.partition = partition
        self.site_prompt_overrides = site_prompt_overrides or {}
        self.totals = UsageTotals()

    def generate(self, stage: str, task: Task[T]) -> Generation[T]:
        """Make one structured call; raise `ModelCallFailed` if it yields no valid answer."""
        return self._complete(stage, task)

    def generate_each(
        self, stage: str, tasks: Iterable[Task[T]]
    ) -> Iterator[tuple[Task[T], Generation[T] | ModelCallFailed]]:
        """Make each call and yield `(task, generation or failure)` as each completes.

        Yielding per item lets the stage persist finished work before the next call, so one item's
        failure never loses another's. (Sequential today; the interface allows concurrency.)
        """
        for task in tasks:
            try:
                yield task, self._complete(stage, task)
            except ModelCallFailed as failure:
                yield task, failure

    def generate_image(
        self, stage: str, prompt: str, *, item_ref: str | None = None, size: str | None = None
    ) -> RenderedImage:
        """Render one image; raise `ModelCallFailed` on failure."""
        settings = self.catalog.stage(stage)
        request = ImageRequest(stage=stage, prompt=prompt, size=size or self.catalog.image_size, settings=settings)
        started = time.perf_counter()
        try:
            image = self.provider.image(request)
        except Exception as exc:
            self._record(stage, "image", "-", settings.model, Usage(), started, "error", item_ref, exc)
            raise ModelCallFailed(stage, item_ref, "error", type(exc).__name__, str(exc)) from exc
        self._record(stage, "image", "-", image.model, image.usage, started, "ok", item_ref)
        return image

    def _complete(self, stage: str, task: Task[T]) -> Generation[T]:
        settings = self.catalog.stage(stage)
        prompt = self.prompts.get(task.prompt_name, site_overrides=self.site_prompt_overrides)
        request = CompletionRequest(stage=stage, prompt=prompt, data=task.data, schema=task.schema, settings=settings)
        started = time.perf_counter()
        try:
            completion = self.provider.complete(request)
        except Exception as exc:
            self._record(stage, prompt.name, prompt.ref, settings.model, Usage(), started, "error", task.ref, exc)
            raise ModelCallFailed(stage, task.ref, "error", type(exc).__name__, str(exc)) from exc
        try:
            answer = task.schema.model_validate(completion.answer.model_dump())
        except ValidationError as exc:
            # The tokens were billed even though the answer is unusable: record them.
            self._record(
                stage, prompt.name, prompt.ref, completion.model, completion.usage, started, "invalid", task.ref, exc
            )
            raise ModelCallFailed(stage, task.ref, "invalid", "ValidationError", str(exc)) from exc
        self._record(stage, prompt.name, prompt.ref, completion.model, completion.usage, started, "ok", task.ref)
        return Generation(answer=answer, provider=self.provider.name, model=completion.model, prompt_version=prompt.ref)

    def _record(
        self,
        stage: str,
        prompt_name: str,
        prompt_version: str,
        model: str,
        usage: Usage,
        started: float,
        outcome: str,
        item_ref: str | None,
        error: BaseException | None = None,
    ) -> None:
        cost = self.catalog.cost(model, usage)
        self.totals.add(outcome, usage, cost)
        self.ledger.record_call(
            {
                "stage": stage,
                "provider": self.provider.name,
                "model": model,
                "prompt_name": prompt_name,
                "prompt_version": prompt_version,
                "input_tokens": usage.input_tokens,
                "cached_input_tokens": usage.cached_input_tokens,
                "output_tokens": usage.output_tokens,
                "images": usage.images,
                "cost_usd": cost,
                "latency_ms": int((time.perf_counter() - started) * 1000),
                "attempts": 1,
                "outcome": outcome,
                "error_class": type(error).__name__ if error else None,
                "item_ref": item_ref,
                "run_id": self.run_id,
                "partition": self.partition,
            }
        )
