"""The engine's ledger side: usage totals, ledger and cache rows, cache keys, redaction and item leases.

Rows are buffered on the caller's thread and written in one transaction per hand-over (`CallLedger.flush`),
before the caller sees the results they paid for.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from pipeline.llm.catalog import Catalog, Usage
from pipeline.llm.window import PendingCall
from pipeline.llm.wire import Completion, CompletionRequest, Provider, ProviderError
from pipeline.prompts import Prompt

I = TypeVar("I")  # noqa: E741 - the item type of a window of calls
R = TypeVar("R")
O = TypeVar("O")  # noqa: E741


class LedgerStore(Protocol):
    """The engine's view of the store: the ledger, the response cache, item leases and the run's spend."""

    def record_calls(
        self,
        calls: Sequence[Mapping[str, Any]],
        cache: Sequence[Mapping[str, Any]] = (),
        hits: Sequence[str] = (),
    ) -> None: ...

    def claim_items(
        self, stage: str, partition: str, refs: Sequence[str], holder: str, ttl_s: float, take_over: Sequence[str] = ()
    ) -> set[str]: ...

    def lease_holders(self, stage: str, partition: str, refs: Sequence[str]) -> dict[str, str]: ...

    def release_leases(self, holder: str) -> None: ...

    def cache_keys(self, stage: str) -> set[str]: ...

    def cached_keys_among(self, keys: Sequence[str]) -> set[str]: ...

    def cached_response(self, key: str) -> dict[str, Any] | None: ...

    def run_cost(self, run_id: str) -> float: ...


@dataclass
class UsageTotals:
    """Running totals of the calls an engine made, for asset metadata."""

    calls: int = 0
    failed_calls: int = 0
    cache_hits: int = 0
    not_started: int = 0
    in_progress_elsewhere: int = 0  # items another run had claimed: skipped here, not paid twice
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    attempts: int = 0
    cost_usd: float = 0.0
    by_outcome: dict[str, int] = field(default_factory=dict)
    # Batch mode: items sent in a new batch, left waiting in an open one, answered from a finished one.
    batch_submitted: int = 0
    batch_waiting: int = 0
    batch_answered: int = 0
    batches_created: list[int] = field(default_factory=list)

    def add(self, outcome: str, usage: Usage, cost: float, attempts: int) -> None:
        """Count one ledger row."""
        if outcome == "cache_hit":
            self.cache_hits += 1
        else:
            self.calls += 1
            self.failed_calls += outcome != "ok"
        self.input_tokens += usage.input_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.output_tokens += usage.output_tokens
        self.images += usage.images
        self.attempts += attempts
        self.cost_usd = round(self.cost_usd + cost, 8)
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1


class CallLedger:
    """One engine's ledger rows, cache entries and cache-hit counts, buffered until `flush`."""

    def __init__(self, store: LedgerStore, catalog: Catalog, run_id: str | None, partition: str | None):
        self.store = store
        self.catalog = catalog
        self.run_id = run_id
        self.partition = partition
        self.totals = UsageTotals()
        self._calls: list[dict[str, Any]] = []
        self._cache: list[dict[str, Any]] = []
        self._hits: list[str] = []

    def record(
        self,
        stage: str,
        prompt: Prompt,
        provider: Provider,
        model: str,
        usage: Usage,
        latency: float,
        outcome: str,
        item_ref: str | None,
        error: ProviderError | None = None,
        *,
        attempts: int | None = None,
        cache: Mapping[str, Any] | None = None,
        batch_id: int | None = None,
    ) -> None:
        """Count one call (or cache hit) and buffer its ledger row (and its cache entry, if accepted); a
        call answered by provider batch `batch_id` costs the batch price."""
        cost = 0.0 if outcome == "cache_hit" else self.catalog.cost(model, usage, batch=batch_id is not None)
        attempts = error.attempts if error is not None else (1 if attempts is None else attempts)
        self.totals.add(outcome, usage, cost, attempts)
        self._calls.append(
            {
                "stage": stage,
                "provider": provider.name,
                "model": model,
                "prompt_name": prompt.name,
                "prompt_version": prompt.ref,
                "input_tokens": usage.input_tokens,
                "cached_input_tokens": usage.cached_input_tokens,
                "output_tokens": usage.output_tokens,
                "images": usage.images,
                "cost_usd": cost,
                "latency_ms": int(latency * 1000),
                "attempts": attempts,
                "outcome": outcome,
                "error_class": error.error_class if error else None,
                "item_ref": item_ref,
                "run_id": self.run_id,
                "partition": self.partition,
                "batch_id": batch_id,
            }
        )
        if cache is not None:
            self._cache.append(dict(cache))

    def hit(self, key: str) -> None:
        """Count a use of the cache entry `key` (its `last_used` and hit count are updated on flush)."""
        self._hits.append(key)

    def flush(self) -> None:
        """Write buffered ledger rows, cache entries and cache-hit counts to the store."""
        if self._calls or self._cache or self._hits:
            calls, cache, hits = self._calls, self._cache, self._hits
            self._calls, self._cache, self._hits = [], [], []
            self.store.record_calls(calls, cache, hits)


def cache_entry(key: str, stage: str, provider: Provider, prompt: Prompt, completion: Completion) -> dict[str, Any]:
    """The response-cache row of an accepted answer."""
    return {
        "key": key,
        "stage": stage,
        "provider": provider.name,
        "model": completion.model,
        "prompt_version": prompt.ref,
        "answer": completion.answer.model_dump(mode="json"),
    }


def cache_key(identity: str, request: CompletionRequest, rendered: str | None = None) -> str:
    """Same provider endpoint, model, prompt version and text, rendered input, schema and parameters."""
    material = {
        "provider": identity,
        "model": request.settings.model,
        "max_output_tokens": request.settings.max_output_tokens,
        "temperature": request.settings.temperature,
        "prompt": request.prompt.ref,
        "messages": rendered if rendered is not None else json.dumps(request.messages),
        "schema": schema_fingerprint(request.schema),
    }
    if request.choices or request.sizes:  # only constrained requests: other keys stay as they were
        material["choices"] = [request.choices, request.sizes]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@functools.cache
def schema_fingerprint(schema: type[BaseModel]) -> str:
    """A hash of the answer schema, computed once per class (pydantic's schema generation is slow)."""
    return hashlib.sha256(json.dumps(schema.model_json_schema(), sort_keys=True).encode()).hexdigest()


_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-*]{6,}")


def redact(text: str, providers: Iterable[Provider]) -> str:
    """`text` without the providers' secrets or anything shaped like an API key."""
    for provider in providers:
        for secret in provider.secrets:
            if secret:
                text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("sk-***", text)


# -- item leases -------------------------------------------------------------------------------------

_HOST = socket.gethostname()[:40]
SAME_RUN_POLL_S = 1.0  # how often a step's retry looks whether its earlier attempt let go of an item


def lease_holder(run_id: str | None) -> str:
    """Who holds this engine's leases: the run, and the host and process it runs in (so a process of the
    same host can tell a dead holder from a live one)."""
    return f"{run_id or 'engine-' + uuid.uuid4().hex[:12]}@{_HOST}:{os.getpid()}"


def holder_is_gone(holder: str) -> bool:
    """Whether `holder` ran on this host in a process that is gone (other hosts: only expiry tells)."""
    _, _, place = holder.rpartition("@")
    host, _, pid = place.rpartition(":")
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Leases:
    """The items one engine claimed in the store, held under its run, process and host until released."""

    def __init__(self, store: LedgerStore, run_id: str | None, partition: str | None):
        self.store = store
        self.partition = partition or ""
        self.holder = lease_holder(run_id)
        self._held = False

    def claim(self, stage: str, refs: Sequence[str], ttl_s: float) -> set[str]:
        """Claim `refs` for this engine; returns those granted (others are held by live runs).

        Items held by a process of this machine that no longer exists (a killed run) are taken over now
        rather than at expiry, so a re-run after a crash finishes the work.

        Items held by another attempt of this same run's step (a Celery worker that died mid-step on another
        host, or one still running beside its redelivered copy after a broker restart) are waited for,
        up to `ttl_s`: until released (that attempt ended; its answers are cached and served, not paid
        again) or expired (it died). Dropping them instead would let the retry end with them unwritten."""
        self._held = True
        granted = self.store.claim_items(stage, self.partition, refs, self.holder, ttl_s)
        if len(granted) == len(refs):
            return granted
        holders = self.store.lease_holders(stage, self.partition, [r for r in refs if r not in granted])
        dead = sorted({h for h in holders.values() if holder_is_gone(h)})
        if dead:
            granted |= self.store.claim_items(stage, self.partition, refs, self.holder, ttl_s, take_over=dead)
        run = self.holder.rpartition("@")[0]
        waiting = [r for r, h in holders.items() if r not in granted and h.rpartition("@")[0] == run]
        deadline = time.monotonic() + ttl_s
        while waiting and time.monotonic() < deadline:
            time.sleep(SAME_RUN_POLL_S)
            gone = sorted({holders[r] for r in waiting if holder_is_gone(holders[r])})
            got = self.store.claim_items(stage, self.partition, waiting, self.holder, ttl_s, take_over=gone)
            granted |= got
            waiting = [r for r in waiting if r not in got]
        return granted

    def sort(
        self, stage: str, calls: list[PendingCall[I, R, O]], ttl_s: float
    ) -> tuple[list[PendingCall[I, R, O]], list[tuple[I, O]], int]:
        """Claim the calls' items: the calls to pay for, results served without paying, and how many items
        another run holds (dropped here).

        Claimed items that another run answered since this one looked (its answer is in the response cache
        now) are served from the cache.
        """
        refs = [call.lease for call in calls if call.lease is not None]
        if not refs:
            return calls, [], 0
        granted = self.claim(stage, refs, ttl_s)
        keys = [call.cache_key for call in calls if call.cache_key and call.lease in granted]
        answered = self.store.cached_keys_among(keys) if keys else set()
        kept, served, elsewhere = [], [], 0
        for call in calls:
            if call.lease is not None and call.lease not in granted:
                elsewhere += 1
            elif call.cache_key in answered and call.from_cache is not None and (hit := call.from_cache()):
                served.append(hit)
            else:
                kept.append(call)
        return kept, served, elsewhere

    def release(self) -> None:
        """Release every lease this engine took (its stage is over, every finished item stored)."""
        if self._held:
            self._held = False
            self.store.release_leases(self.holder)
