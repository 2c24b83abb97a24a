"""The desk's JSON API: the same reads and review actions as its pages, for other tools (a CMS, a chat bot).

Every route needs `Authorization: Bearer <PIPELINE_DESK_API_TOKEN>`; the review history records the
token's name (`PIPELINE_DESK_API_ACTOR`, default `api`) as the actor. The OpenAPI schema is served to the
same callers at `/api/openapi.json`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pipeline import review, settings
from pipeline.desk import views
from pipeline.desk.actions import Action, apply
from pipeline.desk.auth import ApiEditor
from pipeline.desk.pages import ListFilter, month_start, store_of

router = APIRouter(prefix="/api", tags=["review"])


class ActionRequest(BaseModel):
    """A review action on one article (the path names it) or on several (`ids`)."""

    note: str | None = Field(default=None, max_length=2000, description="required to reject")
    variant: str | None = Field(default=None, pattern="^[AB]$", description="variant to approve or publish")


class BulkRequest(ActionRequest):
    """A review action on a selection."""

    action: Action
    ids: list[int] = Field(min_length=1, max_length=500)


class ActionResultModel(BaseModel):
    """What the action did to one article."""

    content_id: int
    done: bool
    message: str
    url: str | None = None


class ArticleRow(BaseModel):
    """One article of a listing."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    site: str
    title: str
    status: str
    version: int
    variants: list[str]
    cluster_id: int | None
    cluster_name: str | None
    updated_at: datetime
    approved_at: datetime | None
    publish_slot: datetime | None
    published_at: datetime | None
    failing_checks: list[str]
    review_note: str | None


class ArticleList(BaseModel):
    """A page of the listing and how many articles match in all."""

    total: int
    offset: int
    items: list[ArticleRow]


@router.get("/sites")
def api_sites(request: Request, editor: ApiEditor) -> list[dict[str, Any]]:
    """Per site: counts per stage, drafts waiting, cost this month, failed calls and failing checks."""
    return [_plain(o) for o in store_of(request).site_overviews(month_start())]


@router.get("/articles")
def api_articles(
    request: Request,
    editor: ApiEditor,
    chosen: ListFilter,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ArticleList:
    """Articles matching the filters (the articles page's: site, status, cluster, check, regenerated, q), newest
    change first."""
    rows, total = store_of(request).desk_articles(chosen, offset=offset, limit=limit)
    return ArticleList(total=total, offset=offset, items=[ArticleRow.model_validate(r) for r in rows])


@router.get("/articles/{content_id}")
def api_article(request: Request, editor: ApiEditor, content_id: int) -> dict[str, Any]:
    """One article: every variant of its current version, check failures, review events, publications and its
    newest A/B experiment (periods, live variant, decision; null if it never had one)."""
    page = _page(request, content_id)
    article = page.article
    shown = [page.shown] + ([page.other] if page.other else [])
    return {
        "id": article.content.id,
        "site": article.site.slug,
        "slug": article.slug,
        "status": article.content.status,
        "version": article.version,
        "review_note": article.content.review_note,
        "variants": [_variant(v) for v in sorted(shown, key=lambda v: v.variant.variant)],
        "failing_checks": [{"check": c, "variant": v, "version": n, "detail": d} for c, v, n, d in page.failures],
        "events": [
            {
                "at": e.created_at.isoformat(),
                "from": e.from_status,
                "to": e.to_status,
                "version": e.version,
                "variant": e.variant,
                "actor": e.actor,
                "note": e.note,
            }
            for e in page.events
        ],
        "publications": [
            {"target": p.target, "url": p.url, "state": p.state, "version": p.version, "variant": p.variant}
            for p in page.publications
        ],
        "experiment": page.experiment.as_dict() if page.experiment else None,
    }


@router.post("/articles/{content_id}/{action}")
def api_article_action(
    request: Request, editor: ApiEditor, content_id: int, action: Action, body: ActionRequest | None = None
) -> list[ActionResultModel]:
    """Approve, reject (with `note`), publish, or approve and publish one article."""
    given = body or ActionRequest()
    return _apply(request, action, [content_id], editor.actor, given.note, given.variant)


@router.post("/review")
def api_bulk(request: Request, editor: ApiEditor, body: BulkRequest) -> list[ActionResultModel]:
    """One review action on each article of `ids`, in order; an article that cannot take it is skipped."""
    return _apply(request, body.action, body.ids, editor.actor, body.note, body.variant)


@router.get("/openapi.json", include_in_schema=False)
def api_schema(request: Request, editor: ApiEditor) -> JSONResponse:
    """The OpenAPI schema of this API."""
    return JSONResponse(request.app.openapi())


def _apply(
    request: Request, action: Action, ids: list[int], actor: str, note: str | None, variant: str | None
) -> list[ActionResultModel]:
    try:
        results = apply(
            store_of(request), action, ids, actor=actor, publish_root=settings.publish_dir(), note=note, variant=variant
        )
    except review.ReviewError as error:
        raise HTTPException(422, str(error)) from error
    return [ActionResultModel(content_id=r.content_id, done=r.done, message=r.message, url=r.url) for r in results]


def _page(request: Request, content_id: int) -> views.ArticlePage:
    try:
        return views.article_page(store_of(request), content_id)
    except review.UnknownContent as error:
        raise HTTPException(404, str(error)) from error


def _variant(view: views.VariantView) -> dict[str, Any]:
    v = view.variant
    return {
        "variant": v.variant,
        "version": v.version,
        "title": v.title,
        "meta_title": v.meta_title,
        "meta_description": v.meta_description,
        "primary_keyword": v.primary_keyword,
        "secondary_keywords": list(v.secondary_keywords),
        "tags": list(v.tags),
        "categories": list(v.categories),
        "word_count": v.word_count,
        "body_html": str(view.body),
        "images": [{"kind": i.kind, "alt": i.alt, "url": i.url} for i in view.featured + view.images],
        "links": [{"href": h, "text": t} for h, t in view.links],
    }


def _plain(value: Any) -> dict[str, Any]:
    data = asdict(value)
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}
