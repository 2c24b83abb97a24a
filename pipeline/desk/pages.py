"""The desk's pages: sign-in, sites, the articles list with bulk actions, and one article.

Every page depends on `page_editor` (signed in, or redirected to sign in) and every form post on
`checked_form` (same origin, the session's CSRF token). After a post the browser is redirected back to a
page (post/redirect/get), with what happened kept in the session for that page to show once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.status import HTTP_303_SEE_OTHER

from pipeline import review, settings
from pipeline.content_checks import CHECKS
from pipeline.desk import views
from pipeline.desk.actions import Action, ActionResult, apply
from pipeline.desk.auth import PageEditor, checked_form, csrf_token, current_editor, desk_config, sign_in, sign_out
from pipeline.models import ContentStatus
from pipeline.store import Store
from pipeline.store.desk import ArticleFilter

PAGE_SIZE = 50
FLASH = "flash"

router = APIRouter()
public = APIRouter()


def store_of(request: Request) -> Store:
    """The store the app was built with."""
    store: Store = request.app.state.store
    return store


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A page from its template, with the editor, the CSRF token and any message left by the last post."""
    templates = request.app.state.templates
    context.update(
        editor=current_editor(request),
        csrf_token=csrf_token(request),
        flash=request.app.state.flashes.take(request.session.pop(FLASH, None)),
        dagster_url=desk_config(request).dagster_url,
    )
    response: HTMLResponse = templates.TemplateResponse(request, template, context)
    return response


def redirect(path: str) -> RedirectResponse:
    """See-other to a page of the desk (only ever a local path)."""
    # `//host` and `/\host` are other sites to a browser: only a plain local path is followed.
    local = path.startswith("/") and not path.startswith(("//", "/\\"))
    return RedirectResponse(path if local else "/", HTTP_303_SEE_OTHER)


@public.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request, next: str = "/") -> HTMLResponse:
    """The sign-in form."""
    return render(request, "signin.html", next=next, error=None)


@public.post("/signin", dependencies=[Depends(checked_form)], response_model=None)
def signin(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the password against its stored hash and start a session; the same answer for any mistake."""
    if desk_config(request).check_password(username, password):
        sign_in(request, username)
        return redirect(next)
    response = render(request, "signin.html", next=next, error="Unknown user or wrong password.")
    response.status_code = 401
    return response


@router.post("/signout", dependencies=[Depends(checked_form)])
def signout(request: Request, editor: PageEditor) -> RedirectResponse:
    """End the session."""
    sign_out(request)
    return redirect("/signin")


@router.get("/", response_class=HTMLResponse)
def sites_page(request: Request, editor: PageEditor) -> HTMLResponse:
    """Per site: counts per stage, drafts waiting, cost this month, failed calls and checks."""
    month = month_start()
    overviews = store_of(request).site_overviews(month)
    links = {o.site: views.dagster_links(desk_config(request).dagster_url, o.site) for o in overviews}
    store = store_of(request)
    waiting = {s.slug: store.idea_status_counts(s.id)["proposed"] for s in store.sites()}
    return render(request, "sites.html", overviews=overviews, links=links, month=month, ideas_waiting=waiting)


def list_filter(
    site: str | None = None,
    status: str | None = None,
    cluster: str | None = None,
    check: str | None = None,
    regenerated: str | None = None,
    q: str | None = None,
) -> ArticleFilter:
    """The articles list's filter from the query parameters of the page and of the API."""
    return article_filter(site, status, cluster, check, regenerated, q)


ListFilter = Annotated[ArticleFilter, Depends(list_filter)]


def month_start() -> datetime:
    """The first instant of this month (UTC): where "cost this month" starts."""
    return datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@router.get("/articles", response_class=HTMLResponse)
def articles_page(
    request: Request, editor: PageEditor, chosen: ListFilter, page: Annotated[int, Query(ge=1)] = 1
) -> HTMLResponse:
    """The filterable, paginated list of articles, with bulk approve / reject / publish of a selection."""
    store = store_of(request)
    site = chosen.site
    rows, total = store.desk_articles(chosen, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    sites = store.sites()
    clusters = store.site_clusters(store.site(site).id) if site else []
    query = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return render(
        request,
        "articles.html",
        rows=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        filter=chosen,
        query=query,
        query_string=urlencode(query),
        sites=sites,
        clusters=clusters,
        statuses=review.STATUSES,
        checks=sorted(CHECKS),
        now=datetime.now(UTC),
    )


@router.post("/articles/bulk", dependencies=[Depends(checked_form)])
def bulk_action(
    request: Request,
    editor: PageEditor,
    action: Annotated[Action, Form()],
    ids: Annotated[list[int] | None, Form()] = None,
    note: Annotated[str | None, Form(max_length=2000)] = None,
    all_matching: Annotated[bool, Form()] = False,
    filter_query: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Approve, reject (with a note), publish, or approve and publish the selected articles."""
    store = store_of(request)
    selected = list(ids or [])
    if all_matching:
        params = dict(_pairs(filter_query))
        chosen = article_filter(
            params.get("site"),
            params.get("status"),
            params.get("cluster"),
            params.get("check"),
            params.get("regenerated"),
            params.get("q"),
        )
        selected = store.desk_article_ids(chosen)
    _act(request, action, selected, editor.actor, note=note)
    return redirect("/articles" + (f"?{filter_query}" if filter_query else ""))


@router.get("/articles/{content_id}", response_class=HTMLResponse)
def article_page(request: Request, editor: PageEditor, content_id: int, variant: str = "A") -> HTMLResponse:
    """One article: the variant rendered with its images, its search snippet, checks, links, history, A/B."""
    page = views.article_page(store_of(request), content_id, variant=variant)
    return render(request, "article.html", page=page, article=page.article, statuses=ContentStatus)


@router.post("/articles/{content_id}/{action}", dependencies=[Depends(checked_form)])
def article_action(
    request: Request,
    editor: PageEditor,
    content_id: int,
    action: Action,
    note: Annotated[str | None, Form(max_length=2000)] = None,
    variant: Annotated[str | None, Form(pattern="^[AB]$")] = None,
) -> RedirectResponse:
    """Approve (a variant), reject with a note, publish, or approve and publish this article."""
    _act(request, action, [content_id], editor.actor, note=note, variant=variant)
    return redirect(f"/articles/{content_id}" + (f"?variant={variant}" if variant else ""))


@router.get("/articles/{content_id}/export/{name:path}")
def exported(request: Request, editor: PageEditor, content_id: int, name: str) -> Response:
    """The folder export of a published article as a browser shows it (`index.html` and its `images/`)."""
    path = views.exported_file(store_of(request), content_id, name or "index.html", settings.publish_dir())
    if path is None:
        return Response("not exported (publish the article first)", status_code=404, media_type="text/plain")
    return FileResponse(path)


@router.get("/variants/{variant_id}/images/{prompt_id}")
def image(request: Request, editor: PageEditor, variant_id: int, prompt_id: int) -> Response:
    """An image file of a variant (only files inside the media folder are ever served)."""
    path = views.image_file(store_of(request), variant_id, prompt_id, settings.media_dir())
    if path is None:
        return Response("no such image", status_code=404, media_type="text/plain")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


def article_filter(
    site: str | None,
    status: str | None,
    cluster: str | None,
    check: str | None,
    regenerated: str | None,
    query: str | None,
) -> ArticleFilter:
    """The list's filter from its query parameters (blank means no filter); unknown values are errors."""
    if status and status not in review.STATUSES:
        raise review.ReviewError(f"unknown status {status!r}; use one of: {', '.join(review.STATUSES)}")
    if cluster and not cluster.isdigit():
        raise review.ReviewError(f"cluster must be a cluster id, not {cluster!r}")
    flags = {"yes": True, "no": False, "": None}
    if (regenerated or "") not in flags:
        raise review.ReviewError("regenerated must be yes or no")
    return ArticleFilter(
        site=site or None,
        status=status or None,
        cluster_id=int(cluster) if cluster else None,
        failing_check=check or None,
        regenerated=flags[regenerated or ""],
        query=(query or "").strip() or None,
    )


def _act(
    request: Request, action: Action, ids: list[int], actor: str, *, note: str | None, variant: str | None = None
) -> list[ActionResult]:
    try:
        results = apply(
            store_of(request), action, ids, actor=actor, publish_root=settings.publish_dir(), note=note, variant=variant
        )
    except review.ReviewError as error:
        request.session[FLASH] = request.app.state.flashes.put({"error": str(error), "results": []})
        return []
    done = sum(1 for r in results if r.done)
    # The outcome can be long (one line per article): it waits in the app, the cookie carries only its key.
    request.session[FLASH] = request.app.state.flashes.put(
        {"summary": f"{action.label}: {done} of {len(results)} done", "results": results}
    )
    return results


def _pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=False)
