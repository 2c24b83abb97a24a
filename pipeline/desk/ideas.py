"""The desk's idea review: the Ideas page (proposed ideas per site and cluster, bulk approve / reject with a
note) and its JSON API (`GET /api/ideas`, `POST /api/ideas/approve`, `POST /api/ideas/reject`).

The same store decision as `pipeline ideas approve | reject` (`Store.decide_ideas`): all the named ideas
change or none does. Pages need the signed-in editor and the session's CSRF token; the API needs the bearer
token. The actor recorded on each idea is the editor (`desk:NAME`) or the token's name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from pipeline.desk.auth import ApiEditor, PageEditor, checked_form
from pipeline.desk.pages import FLASH, redirect, render, store_of
from pipeline.models import IdeaStatus
from pipeline.store import IdeaReviewError, Store
from pipeline.store.idea_review import IDEA_STATUSES, IdeaRow

router = APIRouter()
api = APIRouter(prefix="/api", tags=["ideas"])
DECISIONS = {"approve": IdeaStatus.APPROVED, "reject": IdeaStatus.REJECTED}


def _selection(store: Store, site: str | None, status: str | None, cluster: str | None) -> list[IdeaRow]:
    """The ideas a filter names (blank means no filter); unknown values are errors."""
    if status and status not in IDEA_STATUSES:
        raise IdeaReviewError(f"unknown idea status {status!r}; use one of: {', '.join(IDEA_STATUSES)}")
    if cluster and not cluster.isdigit():
        raise IdeaReviewError(f"cluster must be a cluster id, not {cluster!r}")
    site_id = store.site(site).id if site else None
    return store.idea_rows(site_id, status=status or None, cluster_id=int(cluster) if cluster else None)


def _decide(
    store: Store, action: str, *, actor: str, ids: list[int], site: str | None, cluster: int | None, note: str | None
) -> list[int]:
    decision = DECISIONS.get(action)
    if decision is None:
        raise IdeaReviewError(f"unknown action {action!r}; use approve or reject")
    site_id = store.site(site).id if site else None
    return store.decide_ideas(decision, actor=actor, note=note, ids=ids, site_id=site_id, cluster_id=cluster)


@router.get("/ideas", response_class=HTMLResponse)
def ideas_page(
    request: Request,
    editor: PageEditor,
    site: str | None = None,
    status: str | None = IdeaStatus.PROPOSED.value,
    cluster: str | None = None,
) -> HTMLResponse:
    """Ideas by site and cluster (proposed ones unless the filter says otherwise), with bulk approve / reject."""
    store = store_of(request)
    rows = _selection(store, site, status, cluster)
    sites = store.sites()
    slugs = {s.id: s.slug for s in sites}
    groups: dict[tuple[str, int, str], list[IdeaRow]] = {}
    for row in rows:
        groups.setdefault((slugs.get(row.site_id, "?"), row.cluster_id, row.cluster_name or "-"), []).append(row)
    clusters = store.clusters(store.site(site).id) if site else []
    waiting = {s.slug: store.idea_status_counts(s.id)[IdeaStatus.PROPOSED.value] for s in sites}
    return render(
        request,
        "ideas.html",
        groups=groups,
        total=len(rows),
        sites=sites,
        clusters=clusters,
        statuses=IDEA_STATUSES,
        waiting=waiting,
        chosen={"site": site or "", "status": status or "", "cluster": cluster or ""},
    )


@router.post("/ideas/bulk", dependencies=[Depends(checked_form)])
def ideas_bulk(
    request: Request,
    editor: PageEditor,
    action: Annotated[str, Form(pattern="^(approve|reject)$")],
    ids: Annotated[list[int] | None, Form()] = None,
    note: Annotated[str | None, Form(max_length=2000)] = None,
    cluster: Annotated[int | None, Form()] = None,
    site: Annotated[str | None, Form(max_length=100)] = None,
    back: Annotated[str, Form(max_length=500)] = "/ideas",
) -> RedirectResponse:
    """Approve or reject (with a note) the ticked ideas, or every proposed idea of `cluster`."""
    store = store_of(request)
    try:
        done = _decide(
            store,
            action,
            actor=editor.actor,
            ids=list(ids or []) if cluster is None else [],
            site=site or None,
            cluster=cluster,
            note=note,
        )
    except IdeaReviewError as error:
        request.session[FLASH] = request.app.state.flashes.put({"error": str(error), "results": []})
    else:
        verb = "Approved" if action == "approve" else "Rejected"
        summary = f"{verb} {len(done)} idea{'' if len(done) == 1 else 's'}" + (f": {_listed(done)}" if done else "")
        request.session[FLASH] = request.app.state.flashes.put({"summary": summary, "results": []})
    return redirect(back if back.startswith("/ideas") else "/ideas")


class IdeaModel(BaseModel):
    """One idea with its review state."""

    id: int
    site: str
    cluster_id: int
    cluster_name: str | None
    title: str
    content_type: str
    target_keywords: list[str]
    estimated_word_count: int
    status: str
    reviewed_by: str | None
    reviewed_at: str | None
    review_note: str | None
    content_id: int | None


class IdeaDecision(BaseModel):
    """Ideas to approve or reject: `ids`, or every proposed idea of `cluster`."""

    ids: list[int] = Field(default_factory=list, max_length=5000)
    cluster: int | None = Field(default=None, description="every proposed idea of this cluster (instead of ids)")
    site: str | None = Field(default=None, description="when given, every idea must belong to this site")
    note: str | None = Field(default=None, max_length=2000, description="required to reject")


class IdeaDecisionResult(BaseModel):
    """What was decided."""

    status: str
    ids: list[int]


@api.get("/ideas")
def api_ideas(
    request: Request,
    editor: ApiEditor,
    site: str | None = None,
    status: Annotated[str | None, Query(description="proposed, approved or rejected")] = None,
    cluster: str | None = None,
) -> list[IdeaModel]:
    """Ideas with their review status (all, or of a site, a status, a cluster)."""
    store = store_of(request)
    slugs = {s.id: s.slug for s in store.sites()}
    try:
        rows = _selection(store, site, status, cluster)
    except IdeaReviewError as error:
        raise HTTPException(422, str(error)) from error
    return [IdeaModel.model_validate(row.as_dict() | {"site": slugs.get(row.site_id, "?")}) for row in rows]


@api.post("/ideas/{action}")
def api_decide(
    request: Request, editor: ApiEditor, action: Literal["approve", "reject"], body: IdeaDecision
) -> IdeaDecisionResult:
    """Approve or reject (with `note`) ideas; all of them or, with a 422 naming the ideas at fault, none."""
    try:
        done = _decide(
            store_of(request),
            action,
            actor=editor.actor,
            ids=body.ids,
            site=body.site,
            cluster=body.cluster,
            note=body.note,
        )
    except IdeaReviewError as error:
        raise HTTPException(422, str(error)) from error
    return IdeaDecisionResult(status=DECISIONS[action].value, ids=done)


def _listed(ids: list[int], shown: int = 30) -> str:
    return ", ".join(f"#{i}" for i in ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
