"""`ModelEngine`: the single path every model call takes.

A stage hands the engine `Task`s (or `ImageTask`s) and gets back, per task and as each completes, a
validated `Generation` (or `RenderedImage`) or a `ModelCallFailed`. For each call the engine:

1. resolves the stage's model settings (catalog) and the prompt (run override -> site override -> file);
2. returns a cached answer when the same provider, model, prompt version, rendered input, schema, choices
   and parameters were answered before (unless `force`) and the stage's check still accepts it, costing
   nothing; only accepted answers are ever cached;
3. refuses to start calls that would exceed the run's budget or the site's monthly budget (`budget.py`;
   or any call in a dry run), keeping finished work, and claims each paid item in the store first, so a
   concurrent run of the site skips it;
4. waits for the process-wide request/token rate limits, then calls the provider with bounded
   concurrency (an asyncio loop in one background thread; the SDK retries 429/5xx/timeouts itself),
   starting with one call in flight and doubling the window per finished call until one succeeds;
   each item is bounded in time, and an endpoint that gives no answer at all stops the stage's calls;
5. repairs a malformed, schema-invalid or truncated answer, or one the stage's `check` refused, with a
   bounded number of extra attempts; refusals and client errors (400/401/403) fail without retries, and
   401/403 stop further calls;
6. writes one ledger row per call or cache hit (tokens, cost, latency, attempts, outcome, run, partition).

Ledger and cache rows are written on the caller's thread, in one transaction per hand-over, before the
caller sees the results: a crash can never leave a stored item whose call is missing from the ledger, the
event loop never blocks on the database, and under load (results arriving faster than the caller stores
them) hand-overs grow, so the per-call write cost shrinks exactly when it would limit throughput.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from pipeline.llm.batch_mode import BatchMode
from pipeline.llm.budget import BudgetStore, MonthlyBudget
from pipeline.llm.calls import (
    EmbeddingCall,
    PlainCall,
    ProviderCall,
    StructuredCall,
    accepted,
    request_for,
    with_repairs,
)
from pipeline.llm.catalog import Catalog, StageModel, Usage
from pipeline.llm.ledger import CallLedger, Leases, LedgerStore, UsageTotals, cache_entry, cache_key, redact
from pipeline.llm.limits import RateLimiter
from pipeline.llm.tasks import (
    EngineOptions,
    Estimate,
    Generation,
    ImageTask,
    ModelCallFailed,
    Task,
    estimate_tokens,
)
from pipeline.llm.window import WAIT, Attempt, CallWindow, PendingCall, Prepared, Wait, one_by_one
from pipeline.llm.wire import (
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    ImageRequest,
    Provider,
    RenderedImage,
)
from pipeline.prompts import Prompt, PromptRegistry

T = TypeVar("T", bound=BaseModel)
I = TypeVar("I")  # noqa: E741 - the item type of a window of calls
R = TypeVar("R", Completion, RenderedImage, Embeddings)  # what one provider call returns

EmbeddingBatch = tuple[str, list[str]]  # (ref, texts) of one embeddings request
Cache = Mapping[str, Any] | None  # the response-cache row of an accepted answer, if it is cached


class ModelEngine:
    """Makes, validates, caches, prices, limits and records model calls for one run and partition."""

    def __init__(
        self,
        provider: Provider,
        *,
        catalog: Catalog,
        prompts: PromptRegistry,
        store: LedgerStore,
        run_id: str | None = None,
        partition: str | None = None,
        options: EngineOptions = EngineOptions(),
        run_prompt_overrides: Mapping[str, Mapping[str, str]] | None = None,
        site_prompt_overrides: Mapping[str, Mapping[str, str]] | None = None,
        limiter: Callable[[str], RateLimiter] | None = None,
        image_provider: Provider | None = None,
        embedding_provider: Provider | None = None,
        monthly_budget_usd: float | None = None,
    ):
        self.provider = provider  # structured (text) calls
        self.image_provider = image_provider or provider
        self.embedding_provider = embedding_provider or provider
        self.catalog = catalog
        self.prompts = prompts
        self.store = store
        self.run_id = run_id
        self.partition = partition
        self.options = options
        self.run_prompt_overrides = run_prompt_overrides or {}
        self.site_prompt_overrides = site_prompt_overrides or {}
        self._limiter = limiter
        self.ledger = CallLedger(store, catalog, run_id, partition)
        self.fatal_error: str | None = None
        self.budget_exhausted = False
        self._spent_before = store.run_cost(run_id) if (run_id and options.max_run_cost_usd is not None) else 0.0
        self._known_keys: dict[str, set[str]] = {}
        self._window = CallWindow(options.concurrency)
        self._unreachable_in_a_row = 0
        # Leases: held under this engine's run, process and host until the engine closes (its stage is
        # over, every finished item stored), or until they expire.
        self._leases = Leases(store, run_id, partition)
        # The site's monthly budget, shared with every run and process of the partition (`budget.py`).
        self.monthly_budget: MonthlyBudget | None = None
        if monthly_budget_usd is not None and partition:
            ttl = options.item_timeout_s * (options.repair_attempts + 1) + 60
            self.monthly_budget = MonthlyBudget(cast(BudgetStore, store), partition, monthly_budget_usd, run_id, ttl)

    @property
    def totals(self) -> UsageTotals:
        """Running totals of this engine's calls and cache hits, for asset metadata."""
        return self.ledger.totals

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> ModelEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Write buffered ledger rows, release leases, close the provider's connections and stop the loop."""
        self.flush()
        self._leases.release()
        if self.monthly_budget:
            self.monthly_budget.release()
        self._window.close(self.distinct_providers())

    def distinct_providers(self) -> list[Provider]:
        """The text, image and embedding providers, each once (kinds may share one)."""
        return list({id(p): p for p in (self.provider, self.image_provider, self.embedding_provider)}.values())

    def flush(self) -> None:
        """Write buffered ledger rows, cache entries and cache-hit counts to the store."""
        self.ledger.flush()
        if self.monthly_budget:
            self.monthly_budget.settled(self.totals.cost_usd)

    # -- structured calls ------------------------------------------------------------------------

    def generate(self, stage: str, task: Task[T, Any]) -> Generation[T]:
        """Make one structured call; raise `ModelCallFailed` if it yields no valid answer."""
        results = list(self.generate_each(stage, [task]))
        if not results:
            raise ModelCallFailed(stage, task.ref, "not_started", "InProgressElsewhere", "another run is making it")
        [(_, outcome)] = results
        if isinstance(outcome, ModelCallFailed):
            raise outcome
        return outcome

    def generate_each(
        self, stage: str, tasks: Iterable[Task[T, I]]
    ) -> Iterator[tuple[Task[T, I], Generation[T] | ModelCallFailed]]:
        """Run the tasks with bounded concurrency; yield `(task, generation or failure)` as each completes.

        The caller persists each result before asking for the next, so finished work is saved even if a
        later item fails or the process dies. Tasks are pulled lazily from `tasks`.
        """
        return one_by_one(self.generate_batches(stage, tasks))

    def generate_batches(
        self, stage: str, tasks: Iterable[Task[T, I]]
    ) -> Iterator[list[tuple[Task[T, I], Generation[T] | ModelCallFailed]]]:
        """Like `generate_each`, but hands over every result finished since the last hand-over, so a stage
        can store them in one transaction when it falls behind (a single result when it keeps up)."""
        if self.options.batch:
            return BatchMode(self).generate(stage, tasks)
        settings = self.catalog.stage(stage)
        return self._batches(stage, tasks, lambda task: self._prepare_completion(stage, settings, task))

    def generate_images(
        self, stage: str, tasks: Iterable[ImageTask[I]]
    ) -> Iterator[tuple[ImageTask[I], RenderedImage | ModelCallFailed]]:
        """Render images with bounded concurrency; yield `(task, image or failure)` as each completes."""
        if self.options.batch:
            return one_by_one(BatchMode(self).generate_images(stage, tasks))
        settings = self.catalog.stage(stage)
        return one_by_one(self._batches(stage, tasks, lambda task: self._prepare_image(stage, settings, task)))

    def embed(self, stage: str, texts: list[str], batch_size: int = 256) -> list[list[float]]:
        """Vectors for `texts` (in order), in concurrent batches; raise `ModelCallFailed` if any batch fails."""
        settings = self.catalog.stage(stage)
        batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
        tasks = [(f"{stage}:{index}", batch) for index, batch in enumerate(batches)]
        vectors: dict[str, list[list[float]]] = {}
        prepare = functools.partial(self._prepare_embedding, stage, settings)
        for batch in self._batches(stage, tasks, prepare):
            for (ref, _), outcome in batch:
                if isinstance(outcome, ModelCallFailed):
                    raise outcome
                vectors[ref] = outcome.vectors
        return [vector for ref, _ in tasks for vector in vectors[ref]]

    def estimate(self, stage: str, tasks: Iterable[Task[Any, Any] | ImageTask[Any]]) -> Estimate:
        """Expected calls, tokens and cost of `tasks` without calling anything (cache hits cost nothing)."""
        settings = self.catalog.stage(stage)
        calls = cached = input_tokens = output_tokens = images = 0
        for task in tasks:
            if isinstance(task, ImageTask):
                calls += 1
                images += 1
                continue
            prompt = self._prompt(task.prompt_name)
            request = CompletionRequest(stage, prompt, task.data, task.schema, settings)
            rendered = json.dumps(request.messages)
            cacheable = self.provider.cacheable and not self.options.force
            if cacheable and cache_key(self.provider.identity, request, rendered) in self._cached_keys(stage):
                cached += 1
                continue
            calls += 1
            input_tokens += estimate_tokens(rendered)
            output_tokens += settings.expected_output_tokens
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, images=images)
        return Estimate(
            stage=stage,
            model=settings.model,
            calls=calls,
            cached=cached,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            images=images,
            cost_usd=self.catalog.cost(settings.model, usage),
            batch_cost_usd=self.catalog.cost(settings.model, usage, batch=True),
        )

    # -- the window: admission, leases -----------------------------------------------------------

    def _batches(
        self, stage: str, items: Iterable[I], prepare: Callable[[I], Prepared[I, Any, Any]]
    ) -> Iterator[list[tuple[I, Any]]]:
        return self._window.batches(items, prepare, functools.partial(self._claimed, stage), self.flush)

    def _claimed(
        self, stage: str, calls: list[PendingCall[I, R, Any]]
    ) -> tuple[list[PendingCall[I, R, Any]], list[tuple[I, Any]]]:
        """The calls this run may pay for, and results served from the cache after all (see `Leases`)."""
        ttl = self.options.item_timeout_s * (self.options.repair_attempts + 1) + 60
        kept, served, elsewhere = self._leases.sort(stage, calls, ttl)
        self.totals.in_progress_elsewhere += elsewhere
        return kept, served

    def _gate(self, stage: str, ref: str, reserve_usd: float) -> ModelCallFailed | Wait | None:
        """Why a call must not start (fatal provider error, budget), `WAIT` to wait, or None to go.

        Reservations of calls in flight are estimates; a call that does not fit beside them waits until
        they have settled their real cost, so the budget is neither exceeded nor left unused.
        """
        if self.options.dry_run:
            self.totals.not_started += 1
            return ModelCallFailed(stage, ref, "not_started", "DryRun", "a dry run calls no model")
        if self.fatal_error:
            self.totals.not_started += 1
            return ModelCallFailed(stage, ref, "not_started", "ProviderUnavailable", self.fatal_error)
        budget = self.options.max_run_cost_usd
        reserved = self._window.reserved_usd
        if budget is not None and self._spent_before + self.totals.cost_usd + reserved + reserve_usd > budget:
            if self._window.calls_in_flight:
                return WAIT
            self.budget_exhausted = True
            self.totals.not_started += 1
            spent = self._spent_before + self.totals.cost_usd
            return ModelCallFailed(
                stage,
                ref,
                "not_started",
                "BudgetExceeded",
                f"the run's budget of ${budget:.4f} would be exceeded (spent ${spent:.4f}, "
                f"in flight ${reserved:.4f}, this call ~${reserve_usd:.4f}); finished work is kept",
            )
        monthly = self.monthly_budget and self.monthly_budget.refusal(self.totals.cost_usd, reserved, reserve_usd)
        if monthly:
            if self._window.calls_in_flight:
                return WAIT
            self.budget_exhausted = True
            self.totals.not_started += 1
            return ModelCallFailed(stage, ref, "not_started", "BudgetExceeded", monthly)
        return None

    def _leasing(self, provider: Provider) -> bool:
        # Free providers (offline) cost nothing to run twice; only paid calls are claimed.
        return self.options.leases and provider.cacheable and self.partition is not None

    # -- preparing calls -------------------------------------------------------------------------

    def _prepare_completion(
        self, stage: str, settings: StageModel, task: Task[T, I]
    ) -> Prepared[Task[T, I], Completion, Generation[T] | ModelCallFailed]:
        prompt, request, rendered, key = self.completion_parts(stage, settings, task)

        def from_cache() -> tuple[Task[T, I], Generation[T]] | None:
            return self.cache_hit(stage, prompt, task, key)

        if key and not self.options.force and key in self._cached_keys(stage) and (served := from_cache()):
            return served
        input_tokens = estimate_tokens(rendered)
        reserve = self.catalog.cost(
            settings.model, Usage(input_tokens=input_tokens, output_tokens=settings.expected_output_tokens)
        )
        refused = self._gate(stage, task.ref, reserve)
        if refused is WAIT:
            return WAIT
        if refused:
            return task, refused

        def finish(result: Attempt[Completion]) -> Generation[T] | ModelCallFailed:
            if result.error is not None or result.value is None:
                return self._failed(stage, prompt, self.provider, settings.model, task.ref, result)
            completion = result.value
            # Only answers the stage's check accepted get here: nothing else is ever replayed.
            cache = cache_entry(key, stage, self.provider, prompt, completion) if key else None
            self._succeeded(stage, prompt, self.provider, completion, task.ref, result.latency, cache)
            return Generation(completion.answer, self.provider.name, completion.model, prompt.ref)  # type: ignore[arg-type]

        lease = task.ref if self._leasing(self.provider) else None
        recheck = key if key and not self.options.force else None
        call = StructuredCall(self.provider, request, input_tokens, task.check)
        return PendingCall(task, self._attempts(call), reserve, finish, lease, recheck, from_cache)

    def completion_parts(
        self, stage: str, settings: StageModel, task: Task[T, Any]
    ) -> tuple[Prompt, CompletionRequest, str, str | None]:
        """A task's prompt, request, rendered messages and response-cache key (None: not cacheable)."""
        prompt = self._prompt(task.prompt_name)
        request = request_for(stage, prompt, task, settings)
        rendered = json.dumps(request.messages)
        key = cache_key(self.provider.identity, request, rendered) if self.provider.cacheable else None
        return prompt, request, rendered, key

    def cache_hit(
        self, stage: str, prompt: Prompt, task: Task[T, I], key: str | None
    ) -> tuple[Task[T, I], Generation[T]] | None:
        """The cached answer to `task` as a result (ledger row and hit counted), or None: no entry, or a
        stale one (the schema or the stage's rules changed since), which is called again."""
        hit = self.store.cached_response(key) if key else None
        answer = accepted(task, hit["answer"]) if hit is not None and key else None
        if answer is None or hit is None or key is None:
            return None
        self.ledger.hit(key)
        self.ledger.record(stage, prompt, self.provider, hit["model"], Usage(), 0.0, "cache_hit", task.ref, attempts=0)
        return task, Generation(answer, self.provider.name, hit["model"], prompt.ref, cached=True)

    def _prepare_image(
        self, stage: str, settings: StageModel, task: ImageTask[I]
    ) -> Prepared[ImageTask[I], RenderedImage, RenderedImage | ModelCallFailed]:
        request = ImageRequest(stage, task.prompt, task.size or self.catalog.image_size, settings)
        reserve = self.catalog.cost(settings.model, Usage(images=1))
        provider = self.image_provider
        call = PlainCall(provider, settings.model, 0, lambda: provider.image(request))
        return self._prepare_plain(stage, task, task.ref, "image", reserve, call)

    def _prepare_embedding(
        self, stage: str, settings: StageModel, task: EmbeddingBatch
    ) -> Prepared[EmbeddingBatch, Embeddings, Embeddings | ModelCallFailed]:
        ref, texts = task
        tokens = sum(estimate_tokens(text) for text in texts)
        reserve = self.catalog.cost(settings.model, Usage(input_tokens=tokens))
        call = EmbeddingCall(self.embedding_provider, EmbeddingRequest(stage, texts, settings), tokens)
        return self._prepare_plain(stage, task, ref, "embeddings", reserve, call, lease=False)

    def _prepare_plain(
        self,
        stage: str,
        item: I,
        ref: str,
        label: str,
        reserve: float,
        call: PlainCall[R],
        *,
        lease: bool = True,
    ) -> Prepared[I, R, R | ModelCallFailed]:
        """A call without a structured answer (image, embeddings): budget gate, the repair loop, ledger row."""
        refused = self._gate(stage, ref, reserve)
        if refused is WAIT:
            return WAIT
        if refused:
            return item, refused
        prompt = Prompt(label, "-", "")
        provider = call.provider

        def finish(result: Attempt[R]) -> R | ModelCallFailed:
            if result.error is not None or result.value is None:
                return self._failed(stage, prompt, provider, call.model, ref, result)
            self._succeeded(stage, prompt, provider, result.value, ref, result.latency)
            return result.value

        held = ref if lease and self._leasing(provider) else None
        return PendingCall(item, self._attempts(call), reserve, finish, held)

    # -- the repair loop -------------------------------------------------------------------------

    def _attempts(self, call: ProviderCall[R]) -> Coroutine[Any, Any, Attempt[R]]:
        limiter = self._limiter
        return with_repairs(call, self.options, limiter and limiter(call.model), lambda: self.fatal_error)

    # -- finishing calls (on the caller's thread) ------------------------------------------------

    def _succeeded(
        self, stage: str, prompt: Prompt, provider: Provider, result: R, ref: str, latency: float, cache: Cache = None
    ) -> None:
        self._unreachable_in_a_row = 0
        usage, attempts = result.usage, result.attempts
        self.ledger.record(
            stage, prompt, provider, result.model, usage, latency, "ok", ref, attempts=attempts, cache=cache
        )

    def _failed(
        self, stage: str, prompt: Prompt, provider: Provider, model: str, ref: str, result: Attempt[Any]
    ) -> ModelCallFailed:
        error = result.error
        assert error is not None
        self.ledger.record(stage, prompt, provider, model, error.usage, result.latency, error.outcome, ref, error)
        message = redact(str(error), self.distinct_providers())
        if error.fatal and not self.fatal_error:
            self.fatal_error = f"provider rejected the request ({error.error_class}: {message}); no further calls made"
        if error.unreachable:
            # No answer at all (timeout, closed or refused connection), after the SDK's own retries: before
            # any success one such call shows the endpoint is down; after one, a few in a row do.
            self._unreachable_in_a_row += 1
            limit = self.options.unreachable_limit if self._window.proven else 1
            if self._unreachable_in_a_row >= limit and not self.fatal_error:
                self.fatal_error = f"{message}; no further calls made"
        return ModelCallFailed(stage, ref, error.outcome, error.error_class, message, answer=error.answer)

    # -- helpers ---------------------------------------------------------------------------------

    def _cached_keys(self, stage: str) -> set[str]:
        if stage not in self._known_keys:
            self._known_keys[stage] = self.store.cache_keys(stage)
        return self._known_keys[stage]

    def _prompt(self, name: str) -> Prompt:
        return self.prompts.get(
            name, run_overrides=self.run_prompt_overrides, site_overrides=self.site_prompt_overrides
        )
