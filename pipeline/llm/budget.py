"""The engine's side of a site's monthly budget: a block of it reserved in the store, drawn from locally.

Checking the ledger before every call would cost a query per call, and writing a reservation per call a
write per call. Instead the engine reserves a block (the larger of `BLOCK_CALLS` calls' expected cost and
`BLOCK_SHARE` of the budget, never more than is left) in one transaction that sees the month's spend and
every other holder's live reservation (`BudgetsStore.reserve_budget`), then admits calls while its own
unflushed cost, its calls in flight and the next call fit in the block. When real costs reach the ledger
(the engine's flush) the block shrinks by them (written back once a quarter of it is spent); when the
engine closes its row is deleted; a killed process's row lapses at `expires_at`. So, across runs and processes:

    month's ledger spend + every live reservation <= budget

and no call starts that does not fit (calls are reserved at their expected cost, as for the run's budget).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from pipeline.llm.ledger import lease_holder

BLOCK_CALLS = 10
BLOCK_SHARE = 0.05
# The block's row is shrunk in the store once a quarter of it has reached the ledger (or half its expiry
# has passed): until then others see a little more reserved than is, which errs on the safe side.
SHRINK_SHARE = 0.25


class BudgetStore(Protocol):
    """The store's monthly-budget side (`pipeline.store.budgets.BudgetsStore`)."""

    def reserve_budget(
        self,
        holder: str,
        partition: str,
        budget_usd: float,
        need_usd: float,
        want_usd: float,
        ttl_s: float,
        held_usd: float = 0.0,
    ) -> tuple[float, float, float]: ...

    def shrink_reservation(self, holder: str, partition: str, amount_usd: float, ttl_s: float) -> None: ...

    def release_reservation(self, holder: str, partition: str) -> None: ...


class MonthlyBudget:
    """One engine's hold on a site's monthly budget (`SiteSettings.monthly_budget_usd`)."""

    def __init__(self, store: BudgetStore, partition: str, budget_usd: float, run_id: str | None, ttl_s: float):
        self.store = store
        self.partition = partition
        self.budget_usd = budget_usd
        self.ttl_s = ttl_s
        # Unique per engine: two engines of one run in one process hold separate blocks.
        self.holder = f"{lease_holder(run_id)}#{uuid.uuid4().hex[:8]}"[-120:]
        self.granted_usd = 0.0  # this engine's reservation in the store, minus what reached the ledger since
        self.spent_usd = 0.0  # the month's ledger spend at the last reservation (for messages)
        self.others_usd = 0.0  # other holders' live reservations at the last reservation
        self._settled_usd = 0.0  # this engine's cost already on the ledger (and taken off the block)
        self._held = False
        self._stored_usd = 0.0  # the amount the store's row holds (as last written)
        self._block_usd = 0.0  # the block as last reserved
        self._stored_at = 0.0  # when the row was last written (monotonic)
        self._room_usd: float | None = None  # what a definitive refusal left: smaller calls may still fit

    def refusal(self, engine_cost_usd: float, in_flight_usd: float, call_usd: float) -> str | None:
        """None if a call expected to cost `call_usd` fits (reserving another block when needed), else why not.

        `engine_cost_usd` is everything this engine has recorded (flushed or not), `in_flight_usd` the
        reservations of its calls in flight."""
        unflushed = engine_cost_usd - self._settled_usd  # recorded, not on the ledger yet
        need = round(unflushed + in_flight_usd + call_usd, 8)
        if need <= self.granted_usd:
            return None
        settled = unflushed == 0 and in_flight_usd == 0
        if settled and self._room_usd is not None and need > self._room_usd:
            spent, others = self.spent_usd, self.others_usd  # refused before: no round trip per item
        else:
            block = max(BLOCK_CALLS * call_usd, BLOCK_SHARE * self.budget_usd)
            granted, spent, others = self.store.reserve_budget(
                self.holder, self.partition, self.budget_usd, need, need + block, self.ttl_s, self.granted_usd
            )
            self._held = True
            self.spent_usd, self.others_usd = spent, others
            self._stored_at = time.monotonic()
            if granted >= need:
                self.granted_usd = self._stored_usd = self._block_usd = granted
                self._room_usd = None
                return None
            self._stored_usd = self.granted_usd  # refused: the row keeps what is left of the block
            if settled:
                self._room_usd = round(self.budget_usd - spent - others, 8)
        month = datetime.now(UTC).strftime("%Y-%m")
        return (
            f"site '{self.partition}': the monthly budget of ${self.budget_usd:.4f} for {month} would be exceeded "
            f"(spent ${spent + unflushed:.4f} this month, reserved by other runs ${others:.4f}, "
            f"in flight ${in_flight_usd:.4f}, this call ~${call_usd:.4f}); finished work is kept"
        )

    def settled(self, engine_cost_usd: float) -> None:
        """The engine flushed its ledger rows: their cost leaves the block (written to the store once a
        `SHRINK_SHARE` of the block is on the ledger, or half the row's expiry has passed)."""
        paid = round(engine_cost_usd - self._settled_usd, 8)
        if paid <= 0:
            return
        self._settled_usd = engine_cost_usd
        self.granted_usd = max(round(self.granted_usd - paid, 8), 0.0)
        due = self._stored_usd - self.granted_usd >= SHRINK_SHARE * self._block_usd
        if self._held and (due or time.monotonic() - self._stored_at > self.ttl_s / 2):
            self.store.shrink_reservation(self.holder, self.partition, self.granted_usd, self.ttl_s)
            self._stored_usd, self._stored_at = self.granted_usd, time.monotonic()

    def release(self) -> None:
        """Give the rest of the block back (the engine closed)."""
        if self._held:
            self._held = False
            self.granted_usd = 0.0
            self.store.release_reservation(self.holder, self.partition)
