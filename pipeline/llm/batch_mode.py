"""Batch mode: a stage's calls sent as provider batches (half price, answered within 24 hours), and the
answers of finished batches ingested by the next run of the stage.

A batch-mode run of a stage goes over its tasks once:

- a cached answer is served as always;
- an item answered by a finished batch is ingested: its output line is validated exactly as a real-time
  answer (the provider's reading, the schema, the stage's check), written to the ledger at the batch
  price (`model_calls.batch_id`), cached, and handed to the stage to store;
- an item in a batch the provider still holds waits (it is never sent twice);
- every other item (new, or whose line errored or failed validation, or left unanswered by an expired or
  cancelled batch) goes into a new batch: recorded in the store first (`intent`, with a local key that
  travels in the batch's metadata), then uploaded and created, then marked `submitted`. A process killed
  in between leaves an intent that the next run or sensor tick reconciles by that key: adopted if the
  provider has it, abandoned (its items pending again) if not.

The step ends without waiting. The `model_batches` sensor polls open batches and, when one finishes,
requests a run of its stage for its partition in batch mode, which is the ingestion. A finished batch is
claimed for ingestion once (`claim_ingestion`), however often the sensor ticks or runs overlap.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from pipeline.llm.batch_api import CHAT_ENDPOINT, IMAGES_ENDPOINT, BatchAPI, RemoteBatch
from pipeline.llm.calls import StructuredCall
from pipeline.llm.catalog import Usage
from pipeline.llm.ledger import cache_entry
from pipeline.llm.tasks import Generation, ImageTask, ModelCallFailed, Task, estimate_tokens
from pipeline.llm.wire import Completion, CompletionRequest, ImageRequest, ProviderError, RenderedImage
from pipeline.models import BatchStatus, ModelBatch, as_utc, utcnow
from pipeline.prompts import Prompt

if TYPE_CHECKING:
    from pipeline.llm.engine import ModelEngine
    from pipeline.store.batches import BatchesStore

T = TypeVar("T", bound=BaseModel)
I = TypeVar("I")  # noqa: E741 - the item type of the tasks

# The Batch API takes at most 50,000 requests per file.
MAX_LINES = 50_000
# An intent younger than this may still be on its way to the provider (the submitting run is alive).
RECONCILE_AFTER = timedelta(minutes=2)
# Results handed to the stage per batch of ingested answers (one store transaction each).
HAND_OVER = 64
Endpoint = Literal["/v1/chat/completions", "/v1/images/generations"]
FINISHED = (BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED, BatchStatus.FAILED)


@runtime_checkable
class BatchCapable(Protocol):
    """A provider with a Batch API (`OpenAIProvider`)."""

    def batch_api(self) -> BatchAPI: ...

    def batch_body(self, request: CompletionRequest) -> dict[str, Any]: ...

    def batch_answer(self, request: CompletionRequest, line: Mapping[str, Any]) -> Completion: ...

    def batch_image_body(self, request: ImageRequest) -> dict[str, Any]: ...

    def batch_image(self, request: ImageRequest, line: Mapping[str, Any]) -> RenderedImage: ...


def follow_batch(store: BatchesStore, api: BatchAPI, batch: ModelBatch) -> ModelBatch:
    """Bring one open batch up to date with the provider: an old intent is reconciled by its local key
    (adopted, or abandoned when the provider never received it), a submitted batch gets its new status and
    file ids. Returns the batch as stored now."""
    if batch.status == BatchStatus.INTENT:
        if utcnow() - as_utc(batch.created_at) < RECONCILE_AFTER:
            return batch
        found = api.find(batch.local_key)
        if found is None:
            store.update_batch(
                batch.id,
                status=BatchStatus.ABANDONED,
                finished_at=utcnow(),
                error="never received by the provider (the submitting process stopped before creating it)",
            )
            return store.batch(batch.id)
        store.mark_batch_sent(batch.id, found.id, found.remote_status, found.input_file_id)
        batch = store.batch(batch.id)
    if batch.status == BatchStatus.SUBMITTED and batch.remote_id:
        _store_remote(store, batch.id, api.retrieve(batch.remote_id))
    return store.batch(batch.id)


def _store_remote(store: BatchesStore, batch_id: int, remote: RemoteBatch) -> None:
    values: dict[str, Any] = {
        "remote_status": remote.remote_status,
        "output_file_id": remote.output_file_id,
        "error_file_id": remote.error_file_id,
    }
    if remote.status != BatchStatus.SUBMITTED:
        values |= {"status": remote.status, "finished_at": utcnow(), "error": remote.errors}
    store.update_batch(batch_id, **values)


class BatchMode:
    """The batch-mode path of one engine (see the module docstring)."""

    def __init__(self, engine: ModelEngine):
        self.engine = engine
        self.store: BatchesStore = engine.store  # type: ignore[assignment]  # the full store in every run

    def generate(
        self, stage: str, tasks: Iterable[Task[T, I]]
    ) -> Iterator[list[tuple[Task[T, I], Generation[T] | ModelCallFailed]]]:
        """Serve, ingest, wait or send each structured task (see the module docstring); results in
        hand-overs."""
        engine = self.engine
        settings = engine.catalog.stage(stage)
        opened = self._open(stage, engine.provider)
        if isinstance(opened, str):
            yield [
                (task, ModelCallFailed(stage, task.ref, "not_started", "BatchUnavailable", opened)) for task in tasks
            ]
            return
        provider, api, partition = opened
        answers, claimed = self._claim_answers(api, stage, partition)
        waiting = self.store.waiting_batch_ids(stage, partition)
        settled: dict[int, dict[str, tuple[str, str | None]]] = defaultdict(dict)
        outbox = Outbox()
        realtime: list[Task[T, I]] = []
        ready: list[tuple[Task[T, I], Generation[T] | ModelCallFailed]] = []
        for task in tasks:
            prompt, request, rendered, key = engine.completion_parts(stage, settings, task)
            if key is None:
                raise AssertionError("batch mode needs cacheable (paid) providers")
            cached = not engine.options.force and key in engine._cached_keys(stage)
            if cached and (served := engine.cache_hit(stage, prompt, task, key)):
                ready.append(served)
                continue
            if key in answers:
                batch_id, line = answers.pop(key)
                outcome = self._ingest(stage, prompt, request, rendered, task, key, batch_id, line)
                settled[batch_id][key] = (
                    ("answered", None) if isinstance(outcome, Generation) else ("failed", str(outcome)[:500])
                )
                if isinstance(outcome, Generation):
                    ready.append((task, outcome))
                    continue
                if engine.options.batch_failed_lines == "realtime":
                    realtime.append(task)
                    continue
            elif key in waiting:
                engine.totals.batch_waiting += 1
                continue
            usage = Usage(input_tokens=estimate_tokens(rendered), output_tokens=settings.expected_output_tokens)
            cost = engine.catalog.cost(settings.model, usage, batch=True)
            if refused := self._admit(stage, outbox, Outgoing(task, key, provider.batch_body(request), cost)):
                ready.append((task, refused))
            if len(ready) >= HAND_OVER:
                engine.flush()
                yield ready
                ready = []
        self._settle(answers, settled, claimed)
        ready += self._send(api, stage, partition, settings.model, CHAT_ENDPOINT, outbox.items)
        if ready:
            yield ready
        if realtime:
            yield from engine._batches(stage, realtime, lambda task: engine._prepare_completion(stage, settings, task))

    def generate_images(
        self, stage: str, tasks: Iterable[ImageTask[I]]
    ) -> Iterator[list[tuple[ImageTask[I], RenderedImage | ModelCallFailed]]]:
        """Ingest, wait or send each image task, as `generate` does for structured ones (images are not
        cached; a line's key is derived from the provider, model, size, prompt and item)."""
        engine = self.engine
        settings = engine.catalog.stage(stage)
        opened = self._open(stage, engine.image_provider)
        if isinstance(opened, str):
            yield [
                (task, ModelCallFailed(stage, task.ref, "not_started", "BatchUnavailable", opened)) for task in tasks
            ]
            return
        provider, api, partition = opened
        answers, claimed = self._claim_answers(api, stage, partition)
        waiting = self.store.waiting_batch_ids(stage, partition)
        settled: dict[int, dict[str, tuple[str, str | None]]] = defaultdict(dict)
        outbox = Outbox()
        ready: list[tuple[ImageTask[I], RenderedImage | ModelCallFailed]] = []
        prompt = Prompt("image", "-", "")
        for task in tasks:
            request = ImageRequest(stage, task.prompt, task.size or engine.catalog.image_size, settings)
            key = image_key(engine.image_provider.identity, request, task.ref)
            if key in answers:
                batch_id, line = answers.pop(key)
                try:
                    image = provider.batch_image(request, line)
                except ProviderError as error:
                    engine.ledger.record(
                        stage,
                        prompt,
                        engine.image_provider,
                        settings.model,
                        error.usage,
                        0.0,
                        error.outcome,
                        task.ref,
                        error,
                        batch_id=batch_id,
                    )
                    settled[batch_id][key] = ("failed", str(error)[:500])
                else:
                    engine.ledger.record(
                        stage,
                        prompt,
                        engine.image_provider,
                        image.model,
                        image.usage,
                        0.0,
                        "ok",
                        task.ref,
                        attempts=1,
                        batch_id=batch_id,
                    )
                    settled[batch_id][key] = ("answered", None)
                    engine.totals.batch_answered += 1
                    ready.append((task, image))
                    continue
            elif key in waiting:
                engine.totals.batch_waiting += 1
                continue
            cost = engine.catalog.cost(settings.model, Usage(images=1), batch=True)
            if refused := self._admit(stage, outbox, Outgoing(task, key, provider.batch_image_body(request), cost)):
                ready.append((task, refused))
            if len(ready) >= HAND_OVER:
                engine.flush()
                yield ready
                ready = []
        self._settle(answers, settled, claimed)
        ready += self._send(api, stage, partition, settings.model, IMAGES_ENDPOINT, outbox.items)
        if ready:
            yield ready

    def _admit(self, stage: str, outbox: Outbox, item: Outgoing) -> ModelCallFailed | None:
        """Put `item` in the outbox if the budgets take it beside what the outbox holds, else the refusal."""
        refused = self.engine._gate(stage, item.task.ref, outbox.reserved + item.cost)
        if isinstance(refused, ModelCallFailed):
            return refused
        outbox.reserved += item.cost
        outbox.items.append(item)
        return None

    def _open(self, stage: str, provider: Any) -> tuple[BatchCapable, BatchAPI, str] | str:
        """The provider's Batch API with this stage's open batches brought up to date, or why there is none
        (which also stops the run, with that message)."""
        engine = self.engine
        partition = engine.partition
        why = None
        if engine.options.dry_run:
            why = "a dry run calls no model"
        elif not isinstance(provider, BatchCapable):
            why = f"the {provider.name} provider has no Batch API; run without batch"
        elif partition is None:
            why = "batch mode needs a partition"
        if why or partition is None or not isinstance(provider, BatchCapable):
            engine.fatal_error = engine.fatal_error or why
            return why or "batch mode unavailable"
        api = provider.batch_api()
        for batch in self.store.batches(
            partition=partition, stage=stage, statuses=(BatchStatus.INTENT, BatchStatus.SUBMITTED)
        ):
            follow_batch(self.store, api, batch)
        return provider, api, partition

    def _settle(
        self,
        answers: Mapping[str, tuple[int, Mapping[str, Any]]],
        settled: dict[int, dict[str, tuple[str, str | None]]],
        claimed: Sequence[int],
    ) -> None:
        """Write the ledger, then each claimed batch's item states (answers nobody asked for: `skipped`,
        produced meanwhile by another path or outside this run's selection) and its ingestion."""
        for key, (batch_id, _) in answers.items():
            settled[batch_id][key] = ("skipped", None)
        self.engine.flush()
        for batch_id in claimed:
            self.store.settle_batch_items(batch_id, settled.get(batch_id, {}))
            self.store.finish_ingestion(batch_id)

    def _claim_answers(
        self, api: BatchAPI, stage: str, partition: str
    ) -> tuple[dict[str, tuple[int, Mapping[str, Any]]], list[int]]:
        """The output lines of finished batches of this stage and partition that this run claimed for
        ingestion (custom id -> (batch id, line)), and those batches' ids."""
        answers: dict[str, tuple[int, Mapping[str, Any]]] = {}
        claimed = []
        for batch in self.store.batches(partition=partition, stage=stage, statuses=FINISHED):
            if batch.ingested_at is not None or not self.store.claim_ingestion(batch.id):
                continue
            claimed.append(batch.id)
            for line in [*api.lines(batch.output_file_id), *api.lines(batch.error_file_id)]:
                answers.setdefault(line["custom_id"], (batch.id, line))
        return answers, claimed

    def _ingest(
        self,
        stage: str,
        prompt: Prompt,
        request: CompletionRequest,
        rendered: str,
        task: Task[T, I],
        key: str,
        batch_id: int,
        line: Mapping[str, Any],
    ) -> Generation[T] | ModelCallFailed:
        """One output line as a result: validated like a real-time answer, on the ledger at batch price."""
        engine = self.engine
        provider = engine.provider
        assert isinstance(provider, BatchCapable)
        try:
            completion = provider.batch_answer(request, line)
            completion = StructuredCall(provider, request, estimate_tokens(rendered), task.check).accept(completion)
        except ProviderError as error:
            engine.ledger.record(
                stage,
                prompt,
                engine.provider,
                request.settings.model,
                error.usage,
                0.0,
                error.outcome,
                task.ref,
                error,
                batch_id=batch_id,
            )
            return ModelCallFailed(stage, task.ref, error.outcome, error.error_class, str(error))
        engine.totals.batch_answered += 1
        cache = cache_entry(key, stage, engine.provider, prompt, completion)
        engine.ledger.record(
            stage,
            prompt,
            engine.provider,
            completion.model,
            completion.usage,
            0.0,
            "ok",
            task.ref,
            attempts=1,
            cache=cache,
            batch_id=batch_id,
        )
        return Generation(completion.answer, engine.provider.name, completion.model, prompt.ref)  # type: ignore[arg-type]

    def _claimed(self, stage: str, partition: str, items: list[Outgoing]) -> list[Outgoing]:
        """The items this run may send: claimed like real-time calls (a concurrent run of the site skips
        them), and not in a batch another run recorded since this one looked."""
        engine = self.engine
        if not items:
            return items
        granted = engine._leases.claim(stage, [item.task.ref for item in items], engine.options.item_timeout_s + 600)
        waiting = self.store.waiting_batch_ids(stage, partition)
        kept = [item for item in items if item.task.ref in granted and item.key not in waiting]
        engine.totals.in_progress_elsewhere += len(items) - len(kept)
        return kept

    def _send(
        self, api: BatchAPI, stage: str, partition: str, model: str, endpoint: Endpoint, items: list[Outgoing]
    ) -> list[tuple[Any, ModelCallFailed]]:
        """Claim, record, upload and create batches for `items`; the items of a batch the provider refused
        are returned as failures (and are pending again)."""
        engine = self.engine
        items = self._claimed(stage, partition, items)
        failures: list[tuple[Any, ModelCallFailed]] = []
        for start in range(0, len(items), MAX_LINES):
            chunk = items[start : start + MAX_LINES]
            local_key = uuid.uuid4().hex
            lines = [{"custom_id": item.key, "method": "POST", "url": endpoint, "body": item.body} for item in chunk]
            batch = self.store.record_batch_intent(
                local_key,
                stage=stage,
                partition=partition,
                run_id=engine.run_id,
                provider=engine.provider.name,
                endpoint=engine.provider.endpoint,
                model=model,
                items=[(item.key, item.task.ref) for item in chunk],
                expected_cost_usd=round(sum(item.cost for item in chunk), 8),
            )
            try:
                remote = api.submit(lines, local_key, endpoint)
            except ProviderError as error:
                message = f"batch not created: {error}"
                self.store.update_batch(batch.id, status=BatchStatus.ABANDONED, finished_at=utcnow(), error=message)
                failures += [
                    (item.task, ModelCallFailed(stage, item.task.ref, "error", error.error_class, message))
                    for item in chunk
                ]
                continue
            self.store.mark_batch_sent(batch.id, remote.id, remote.remote_status, remote.input_file_id)
            if remote.status != BatchStatus.SUBMITTED:  # answered (or refused) at once
                _store_remote(self.store, batch.id, remote)
            engine.totals.batch_submitted += len(chunk)
            engine.totals.batches_created.append(batch.id)
        return failures


@dataclass(frozen=True)
class Outgoing:
    """One request for a new batch: the task, its line's custom id and its body."""

    task: Any
    key: str
    body: dict[str, Any]
    cost: float  # expected, at the batch price


@dataclass
class Outbox:
    """The requests a run will send as new batches, and what they are expected to cost."""

    items: list[Outgoing] = field(default_factory=list)
    reserved: float = 0.0


def image_key(identity: str, request: ImageRequest, ref: str) -> str:
    """The custom id of an image request: what determines the image, and the item it is for."""
    text = "\0".join((identity, request.settings.model, request.size, request.prompt, ref))
    return hashlib.sha256(text.encode()).hexdigest()
