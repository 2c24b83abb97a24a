"""What stages hand the model engine and get back: tasks, answers, failures, run options and estimates."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic

from pydantic import BaseModel
from typing_extensions import TypeVar

T = TypeVar("T", bound=BaseModel)
# What a stage attaches to a task (a cluster, an idea, a variant) and reads back from the result, so a
# reference string is never parsed back into the item. Tasks without one carry None.
X = TypeVar("X", default=None)

# Calls in flight at once inside one asset, unless the run or the environment says otherwise.
DEFAULT_CONCURRENCY = 16


class ModelCallFailed(RuntimeError):
    """A call that produced no usable answer (or was not made: budget, fatal provider error).

    `answer` is set for `rejected` outcomes: the valid answer the stage's check refused, so a stage can
    still use its acceptable parts (it was never cached)."""

    def __init__(
        self,
        stage: str,
        item_ref: str | None,
        outcome: str,
        error_class: str,
        message: str,
        answer: BaseModel | None = None,
    ):
        where = f" for {item_ref}" if item_ref else ""
        super().__init__(f"{stage}{where}: {outcome} ({error_class}): {message}")
        self.stage = stage
        self.item_ref = item_ref
        self.outcome = outcome
        self.error_class = error_class
        self.message = message
        self.answer = answer


@dataclass(frozen=True)
class Generation(Generic[T]):
    """A validated answer and the provenance every generated row records."""

    answer: T
    provider: str
    model: str
    prompt_version: str
    cached: bool = False

    def provenance(self) -> dict[str, str]:
        """Columns `provider`, `model`, `prompt_version` for the rows built from this answer."""
        return {"provider": self.provider, "model": self.model, "prompt_version": self.prompt_version}


@dataclass(frozen=True)
class Task(Generic[T, X]):
    """One structured call a stage wants made: which item, which prompt, what data, which answer shape.

    `ref` names the item in leases, the ledger and messages; `item` is the stage's own value for it,
    handed back with the result. `choices` constrains answer fields that must echo an input (dotted
    schema path -> allowed values, for example `{"clusters.key": [...]}`): providers with structured
    outputs receive them as `enum`s. `check` is the stage's acceptance rule: it returns what is wrong with
    a parsed answer (or None). A refused answer is repaired within the bound, then recorded as `rejected`,
    and never cached.
    """

    ref: str
    prompt_name: str
    data: Mapping[str, Any]
    schema: type[T]
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    check: Callable[[T], str | None] | None = None
    sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    item: X = None  # type: ignore[assignment]  # X defaults to None: tasks without an item


@dataclass(frozen=True)
class ImageTask(Generic[X]):
    """One image a stage wants rendered (`item`: the stage's own value for it, handed back)."""

    ref: str
    prompt: str
    size: str | None = None
    item: X = None  # type: ignore[assignment]  # X defaults to None: tasks without an item


@dataclass(frozen=True)
class EngineOptions:
    """Per-run behaviour of the engine (`force` and `dry_run` come from the stage's run options)."""

    concurrency: int = DEFAULT_CONCURRENCY
    repair_attempts: int = 1
    force: bool = False  # bypass the response cache (answers are still stored)
    max_run_cost_usd: float | None = None
    dry_run: bool = False  # refuse every call: estimates only
    # Bound on one item (all HTTP attempts and repairs): a provider that never answers fails the item here.
    item_timeout_s: float = 90.0
    # Claim items in the store before paying for them, so concurrent runs of a site do not pay twice.
    leases: bool = True
    # Calls in a row that got no answer at all before the endpoint is declared down (1 before any success).
    unreachable_limit: int = 3
    # Send the calls as one provider batch and ingest finished batches instead of calling in real time.
    batch: bool = False
    # Where items whose batch line failed go: "next_batch" or "realtime" (site setting `batch.failed_lines`).
    batch_failed_lines: str = "next_batch"


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """Expected calls, tokens and cost of a stage's tasks, computed without calling anything.

    The engine prices the tasks it is shown; a stage's dry run adds how many items are pending, and
    `pipeline estimate` how many more its upstream stages would create (`projected_items`)."""

    stage: str
    model: str
    pending_items: int = 0
    projected_items: int = 0
    calls: int
    cached: int
    input_tokens: int
    output_tokens: int
    images: int
    cost_usd: float
    # The same calls at the Batch API price (`Catalog.cost(..., batch=True)`).
    batch_cost_usd: float = 0.0
    # Items held back by a review gate (content: proposed ideas) and what they would cost once approved.
    awaiting_approval_items: int = 0
    awaiting_approval_cost_usd: float = 0.0
    awaiting_approval_batch_cost_usd: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """Plain values for JSON output."""
        return asdict(self)


def estimate_tokens(text: str) -> int:
    """Token estimate used before a call (4 characters per token); actual usage comes from the provider."""
    return max(1, len(text) // 4)
