"""The review gate (`pipeline.review`): an article's status machine, from draft to approved to published.

    draft --approve--> approved --publish--> published
    draft | approved --reject (with a note)--> draft
    published --> draft only when the article is regenerated (new versions), never from here

Every transition is a compare-and-set on the stored status together with a `review_events` row, in one
transaction (`Store.transition_content`). Approve and publish act on a variant of the current (highest)
version. Publishing itself (exporting the variant, then committing `approved -> published` through
`publishable` and `mark_published` here) is `pipeline.publishing`.

Approval records when it happened (`approved_at`) and then gives the site's approved articles their
calendar slots in approval order (`Store.assign_publish_slots`, the site's `schedule` setting); a rejection
clears both. Bulk review (`approve_many`, `reject_many`) selects articles by ids, by site or by cluster and
still makes one transition, with one review event and its actor, per article.

Everything is imported from here. The modules: `model` (errors, records), `gate` (the status machine:
statuses, variants, one article's actions, the transitions), `bulk` (`approve_many`, `reject_many`),
`publish` (the gate's side of publishing).
"""

from pipeline.review.bulk import approve_many, reject_many
from pipeline.review.gate import (
    ACTIONS,
    DEFAULT_VARIANT,
    STATUSES,
    VARIANTS,
    approve,
    assign_slots,
    default_actor,
    format_slot,
    load_article,
    reject,
    review_list,
    show,
)
from pipeline.review.model import (
    Article,
    ArticleReview,
    InvalidTransition,
    PublishError,
    ReviewError,
    ReviewItem,
    ReviewOutcome,
    Transition,
    UnknownContent,
)
from pipeline.review.publish import mark_published, publishable, published_variant

__all__ = [
    "ACTIONS",
    "DEFAULT_VARIANT",
    "STATUSES",
    "VARIANTS",
    "Article",
    "ArticleReview",
    "InvalidTransition",
    "PublishError",
    "ReviewError",
    "ReviewItem",
    "ReviewOutcome",
    "Transition",
    "UnknownContent",
    "approve",
    "approve_many",
    "assign_slots",
    "default_actor",
    "format_slot",
    "load_article",
    "mark_published",
    "publishable",
    "published_variant",
    "reject",
    "reject_many",
    "review_list",
    "show",
]
