"""What `pipeline costs` and the cost metadata read: a month's ledger rows, and which article each call served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from pipeline.models import Content, ContentVariant, ImagePrompt, ModelCall
from pipeline.store.base import StoreBase, _chunks
from pipeline.store.budgets import month_bounds


@dataclass(frozen=True)
class LedgerRow:
    """The columns of one ledger row a cost report needs."""

    partition: str | None
    stage: str
    model: str
    outcome: str
    item_ref: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    images: int
    cost_usd: float
    batch_id: int | None
    created_at: datetime


class CostsStore(StoreBase):
    """Ledger reads for cost reports."""

    def month_ledger(self, partition: str | None, when: datetime | None = None) -> list[LedgerRow]:
        """The ledger rows of the calendar month (UTC) of `when` (default now), of one partition or all."""
        start, end = month_bounds(when)
        columns = [getattr(ModelCall, name) for name in LedgerRow.__dataclass_fields__]
        statement = select(*columns).where(ModelCall.created_at >= start, ModelCall.created_at < end)
        if partition is not None:
            statement = statement.where(ModelCall.partition == partition)
        with self._sessions() as session:
            return [LedgerRow(*row) for row in session.execute(statement.order_by(ModelCall.id))]

    def mean_paid_cost(self, partition: str | None) -> dict[tuple[str, str], float]:
        """Mean cost of the real-time `ok` calls per (stage, model), over the partition's whole ledger: what a
        cache hit of that stage and model would have cost."""
        statement = (
            select(ModelCall.stage, ModelCall.model, func.avg(ModelCall.cost_usd))
            .where(ModelCall.outcome == "ok", ModelCall.batch_id.is_(None))
            .group_by(ModelCall.stage, ModelCall.model)
        )
        if partition is not None:
            statement = statement.where(ModelCall.partition == partition)
        with self._sessions() as session:
            return {(stage, model): float(mean or 0.0) for stage, model, mean in session.execute(statement)}

    def articles_of_refs(self, refs: Sequence[str]) -> dict[str, tuple[int, str]]:
        """The article (content id, current title) each ledger `item_ref` worked for, where it names one:
        `idea:{id}` (content), `content:{id}:…` (regeneration, optimisation), `variant:{id}` (image
        prompts), `image_prompt:{id}` (images). Refs of other stages are left out."""
        ideas: dict[int, list[str]] = {}
        contents: dict[int, list[str]] = {}
        variants: dict[int, list[str]] = {}
        prompts: dict[int, list[str]] = {}
        for ref in set(refs):
            kind, _, rest = ref.partition(":")
            number = rest.split(":", 1)[0]
            if not number.isdigit():
                continue
            target = {"idea": ideas, "content": contents, "variant": variants, "image_prompt": prompts}.get(kind)
            if target is not None:
                target.setdefault(int(number), []).append(ref)
        content_of: dict[str, int] = {}
        with self._sessions() as session:
            for model, key, found in (
                (Content, Content.idea_id, ideas),
                (ContentVariant, ContentVariant.id, variants),
            ):
                for chunk in _chunks(sorted(found), 500):
                    column = Content.id if model is Content else ContentVariant.content_id
                    for found_id, content_id in session.execute(select(key, column).where(key.in_(chunk))):
                        content_of.update({ref: content_id for ref in found[found_id]})
            for chunk in _chunks(sorted(prompts), 500):
                rows = session.execute(
                    select(ImagePrompt.id, ContentVariant.content_id)
                    .join(ContentVariant, ContentVariant.id == ImagePrompt.variant_id)
                    .where(ImagePrompt.id.in_(chunk))
                )
                for prompt_id, content_id in rows:
                    content_of.update({ref: content_id for ref in prompts[prompt_id]})
            content_of.update({ref: cid for cid, refs_ in contents.items() for ref in refs_})
            titles: dict[int, str] = {}
            for chunk in _chunks(sorted(set(content_of.values())), 500):
                rows = session.execute(
                    select(ContentVariant.content_id, ContentVariant.title)
                    .where(ContentVariant.content_id.in_(chunk))
                    .order_by(ContentVariant.version, ContentVariant.variant)
                )
                for row in rows:
                    titles.setdefault(row.content_id, row.title)
        return {ref: (content_id, titles.get(content_id, "")) for ref, content_id in content_of.items()}
