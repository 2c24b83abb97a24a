"""Review actions of the desk and its API: the CLI's review gate and publishing path, on a selection.

Nothing here decides anything the CLI would decide differently: approvals and rejections are
`review.approve_many` / `review.reject_many` (one compare-and-set and one review event per article, with
the editor as actor), publishing is `publishing.publish`. An article that cannot take the action is
skipped with the reason, and the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline import publishing, review
from pipeline.models import ContentStatus
from pipeline.sites import SiteSettingsError
from pipeline.store import Store

# A selection is bounded: a bulk publish runs inside one request, and each article may mean several
# calls to WordPress.
MAX_SELECTION = 500


class Action(StrEnum):
    """What an editor can do to a selection of articles."""

    APPROVE = "approve"
    REJECT = "reject"
    PUBLISH = "publish"
    APPROVE_AND_PUBLISH = "approve_publish"

    @property
    def label(self) -> str:
        """How the desk names the action (`Approve and publish`)."""
        return {"approve_publish": "Approve and publish"}.get(self.value, self.value.capitalize())


@dataclass(frozen=True)
class ActionResult:
    """What one action did to one article: `done` with a message, or skipped with the reason."""

    content_id: int
    done: bool
    message: str
    url: str | None = None  # where the article is live, after a publish


class SelectionError(review.ReviewError):
    """A selection or its note that cannot be acted on; nothing was changed."""


def apply(
    store: Store,
    action: Action,
    ids: Sequence[int],
    *,
    actor: str,
    publish_root: Path,
    note: str | None = None,
    variant: str | None = None,
) -> list[ActionResult]:
    """Do `action` to each article of `ids` (in order, each once), as `actor`."""
    unique = list(dict.fromkeys(ids))
    if not unique:
        raise SelectionError("select at least one article")
    if len(unique) > MAX_SELECTION:
        raise SelectionError(f"{len(unique)} articles selected; act on at most {MAX_SELECTION} at a time")
    if action is Action.REJECT:
        if not (note or "").strip():
            raise SelectionError("a rejection needs a note saying what to change")
        return [_outcome(o) for o in review.reject_many(store, note=note or "", ids=unique, actor=actor)]
    results: dict[int, ActionResult] = {}
    to_publish = unique
    if action in (Action.APPROVE, Action.APPROVE_AND_PUBLISH):
        for outcome in review.approve_many(store, ids=unique, variant=variant, actor=actor):
            results[outcome.content_id] = _outcome(outcome)
        if action is Action.APPROVE:
            return [results[content_id] for content_id in unique]
        # Approve-and-publish also publishes selected articles that were approved already.
        to_publish = [i for i in unique if results[i].done or _status(store, i) == ContentStatus.APPROVED]
    # After an approval, publishing takes the variant just approved.
    publish_variant = variant if action is Action.PUBLISH else None
    for content_id in to_publish:
        results[content_id] = _publish(
            store, content_id, actor=actor, publish_root=publish_root, variant=publish_variant
        )
    return [results[content_id] for content_id in unique]


def _publish(store: Store, content_id: int, *, actor: str, publish_root: Path, variant: str | None) -> ActionResult:
    status = _status(store, content_id)
    if status == ContentStatus.PUBLISHED:
        # A double-submitted form must not push the article again; `pipeline review publish` can.
        return ActionResult(content_id, False, "already published")
    if status != ContentStatus.APPROVED:
        return ActionResult(content_id, False, f"is {status}: approve it before publishing")
    try:
        done = publishing.publish(store, content_id, publish_root, variant=variant, actor=actor)
    except (review.ReviewError, SiteSettingsError) as error:
        return ActionResult(content_id, False, str(error))
    urls = [placed.url for placed in done.placed if placed.url]
    where = ", ".join(f"{placed.target} ({placed.action})" for placed in done.placed)
    return ActionResult(
        content_id, True, f"published version {done.version} {done.variant} on {where}", urls[0] if urls else None
    )


def _status(store: Store, content_id: int) -> str:
    try:
        return review.load_article(store, content_id).content.status
    except review.UnknownContent:
        return "unknown"


def _outcome(outcome: review.ReviewOutcome) -> ActionResult:
    moved = outcome.done
    if moved is None:
        return ActionResult(outcome.content_id, False, outcome.skipped or "skipped")
    message = f"{moved.from_status} -> {moved.to_status} (version {moved.version}"
    message += f" {moved.variant})" if moved.variant else ")"
    if moved.slot is not None:
        message += f", slot {review.format_slot(moved.slot, moved.timezone)}"
    return ActionResult(outcome.content_id, True, message)
