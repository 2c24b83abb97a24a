"""The review desk in a real browser: Chromium (tests/browser.py) against the desk served by uvicorn.

One desk per module, over the sample site's whole offline chain (articles with images on disk). Each test
takes articles of clusters of its own, so the tests do not depend on each other's order. Every action is
checked twice: on the page the editor sees, and in the store (one review event per change, with the
signed-in editor as actor; one publication per target). The HTTP-level rules (every route, the API) are in
test_desk.py; these prove what only a browser shows: the forms, desk.js, images that load, the A/B layout,
script that does not run, cookies a cross-site page cannot use.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Dialog, Page, expect
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from pipeline import review
from pipeline.models import Content, ContentStatus, Idea, Publication, ReviewEvent
from tests.browser import REPO, outside_playwright_loop, screenshot, serve_asgi
from tests.conftest import Env
from tests.desk_data import HOSTILE_BODY, PASSWORDS, add_hostile_variant_b, desk_app

# The article page in the docs, refreshed by `PIPELINE_UPDATE_DOCS_SCREENSHOTS=1 pytest tests/test_desk_browser.py`.
DOCS_SCREENSHOT = REPO / "docs" / "desk-article.png"
SITE = "sample"


@dataclass
class Desk:
    """The desk being served and the store under it; `clusters` holds (id, name) of the site's clusters."""

    env: Env
    base_url: str
    publish_dir: Path
    clusters: list[tuple[int, str]]
    taken: set[int] = field(default_factory=set)

    def url(self, path: str) -> str:
        return self.base_url + path

    def cluster(self) -> tuple[int, str, list[int]]:
        """A cluster no other test of this module uses, its name and its articles' ids."""
        for cluster_id, name in self.clusters:
            if cluster_id not in self.taken:
                self.taken.add(cluster_id)
                return cluster_id, name, cluster_articles(self.env, cluster_id)
        raise AssertionError("the sample site has run out of clusters for these tests")


def cluster_articles(env: Env, cluster_id: int) -> list[int]:
    """Ids of a cluster's articles, read from the store directly (not through the desk's own queries)."""
    with env.store.transaction() as session:
        statement = select(Content.id).join(Idea, Idea.id == Content.idea_id).where(Idea.cluster_id == cluster_id)
        return sorted(session.scalars(statement))


def events(env: Env, content_id: int) -> list[tuple[str, str, str | None, str]]:
    return [(e.from_status, e.to_status, e.variant, e.actor) for e in env.store.review_events(content_id)]


def status(env: Env, content_id: int) -> str:
    return review.load_article(env.store, content_id).content.status


def publications(env: Env, content_id: int) -> list[tuple[str, str, int | None, str | None]]:
    return [(p.target, p.state, p.version, p.variant) for p in env.store.publication_rows(content_id=content_id)]


def store_state(env: Env) -> dict[str, Any]:
    """What any review action would change: every article's status and note, every review event and
    publication, and the files in the publish folder."""
    with env.store.transaction() as session:
        contents = session.execute(
            select(Content.id, Content.status, Content.review_note, Content.publish_slot).order_by(Content.id)
        ).all()
        review_events = session.execute(
            select(ReviewEvent.id, ReviewEvent.content_id, ReviewEvent.to_status).order_by(ReviewEvent.id)
        ).all()
        published = session.execute(
            select(Publication.id, Publication.content_id, Publication.state).order_by(Publication.id)
        ).all()
    return {
        "content": [tuple(row) for row in contents],
        "events": [tuple(row) for row in review_events],
        "publications": [tuple(row) for row in published],
        "rows": env.row_counts(),
    }


def sign_in(page: Page, desk: Desk, user: str = "ana", *, next_path: str = "/") -> None:
    """Sign in through the form, as an editor would."""
    page.goto(desk.url("/signin?" + urlencode({"next": next_path})))
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("#signin-submit")
    expect(page.locator("#signed-in-as")).to_have_text(user)
    # The element is in the DOM before the stylesheet has loaded; what follows may read computed styles.
    page.wait_for_load_state("load")


def record_dialogs(page: Page, *, accept: bool) -> list[str]:
    """Answer every dialog (confirm, alert) the page opens; returns the list their messages go to."""
    seen: list[str] = []

    def answer(dialog: Dialog) -> None:
        seen.append(f"{dialog.type}: {dialog.message}")
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", answer)
    return seen


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """The sample site through the whole offline chain, and the desk over its store served on a free port."""
    env = Env(tmp_path_factory.mktemp("desk-browser"))
    try:
        # The chain runs while the session's Playwright may already be open (see outside_playwright_loop).
        with outside_playwright_loop():
            env.add_site(SITE)
            assert env.materialize(SITE).success
        clusters = [(c.cluster_id, c.name) for c in env.store.site_clusters(env.store.site(SITE).id) if c.article_count]
        publish_dir = env.root / "site-export"
        with pytest.MonkeyPatch.context() as monkeypatch:
            app = desk_app(env, monkeypatch, publish_dir=publish_dir)
            with serve_asgi(app) as base_url:
                yield Desk(env, base_url, publish_dir, clusters)
    finally:
        env.close()


def test_sign_in_then_the_sites_page(page: Page, desk: Desk) -> None:
    # Signed out, a page sends the browser to the sign-in form, which comes back to it afterwards.
    page.goto(desk.url("/articles?site=sample"))
    assert page.url == desk.url("/signin?next=%2Farticles%3Fsite%3Dsample")
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#signed-in-as")).to_have_count(0)
    page.fill("#username", "ana")
    page.fill("#password", "not-her-password")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_have_text("Unknown user or wrong password.")
    screenshot(page, "desk-signin")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["pipeline_desk"]["httpOnly"] and cookies["pipeline_desk"]["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == "", "the session cookie is out of reach of page script"

    page.fill("#username", "ana")
    page.fill("#password", PASSWORDS["ana"])
    page.click("#signin-submit")
    page.wait_for_url(desk.url("/articles?site=sample"))
    expect(page.locator("#signed-in-as")).to_have_text("ana")

    page.click("header nav >> text=Sites")
    page.wait_for_url(desk.url("/"))
    site = page.locator(f"section#site-{SITE}")
    expect(site).to_be_visible()
    counts = desk.env.store.counts(desk.env.store.site(SITE).id)
    cells = site.locator("table.stages tbody td").all_inner_texts()
    assert cells[:3] == [str(counts.keywords), str(counts.clusters), str(counts.ideas)]
    links = site.locator("table.stages thead a")
    assert links.count() == 7
    assert "partition=sample" in (links.first.get_attribute("href") or "")
    drafts = len(review.review_list(desk.env.store, site=SITE, status=ContentStatus.DRAFT))
    expect(site.locator("a.drafts")).to_contain_text(f"{drafts} drafts waiting")
    screenshot(page, "desk-sites")

    page.click(f"section#site-{SITE} a.drafts")
    page.wait_for_url(desk.url(f"/articles?site={SITE}&status=draft"))
    expect(page.locator("#total")).to_have_text(f"{drafts} matching")

    # Signing out ends the session: the same page asks for a sign-in again.
    page.click("form.signout button")
    page.wait_for_url(desk.url("/signin"))
    page.goto(desk.url("/"))
    assert page.url.startswith(desk.url("/signin?next="))


def test_the_articles_list_filters_by_site_cluster_status_and_title(page: Page, desk: Desk) -> None:
    cluster_id, cluster_name, ids = desk.cluster()
    sign_in(page, desk, next_path="/articles")
    total = len(review.review_list(desk.env.store))
    expect(page.locator("#total")).to_have_text(f"{total} matching")
    # Clusters are offered once a site is chosen.
    expect(page.locator("#filter-cluster option")).to_have_count(1)
    page.select_option("#filter-site", SITE)
    page.click("#filter-apply")
    page.wait_for_url(desk.url(f"/articles?site={SITE}&status=&cluster=&check=&regenerated=&q="))
    every_cluster = desk.env.store.site_clusters(desk.env.store.site(SITE).id)  # those without articles too
    assert page.locator("#filter-cluster option").count() == len(every_cluster) + 1

    page.select_option("#filter-cluster", str(cluster_id))
    page.select_option("#filter-status", "draft")
    page.click("#filter-apply")
    expect(page.locator("#total")).to_have_text(f"{len(ids)} matching")
    shown = sorted(int(v) for v in page.locator("input.select-row").evaluate_all("boxes => boxes.map(b => b.value)"))
    assert shown == ids
    assert set(page.locator("#articles td.status").all_inner_texts()) == {"draft"}
    assert set(page.locator("#articles tbody td:nth-child(5)").all_inner_texts()) == {cluster_name}
    # The form shows the filter it applied.
    expect(page.locator("#filter-cluster")).to_have_value(str(cluster_id))
    expect(page.locator("#filter-status")).to_have_value("draft")
    screenshot(page, "desk-articles")

    # A title search inside the filter: the first article's own title finds it (and only it, here).
    first = review.load_article(desk.env.store, ids[0])
    page.fill("#filter-q", first.variant("A").title)
    page.click("#filter-apply")
    expect(page.locator("#articles tbody tr")).to_have_count(1)
    expect(page.locator(f"tr#row-{ids[0]}")).to_be_visible()
    page.fill("#filter-q", "no article is called this")
    page.click("#filter-apply")
    expect(page.locator("#total")).to_have_text("0 matching")
    expect(page.locator("#articles tbody")).to_contain_text("No articles match.")


def test_an_article_page_shows_its_images_loaded(page: Page, desk: Desk) -> None:
    _, _, ids = desk.cluster()
    content_id = ids[0]
    article = review.load_article(desk.env.store, content_id)
    variant = article.variant("A")
    expected = {
        f"/variants/{variant.id}/images/{prompt.id}"
        for prompt, image in desk.env.store.variant_images(variant.id)
        if image is not None
    }
    assert expected, "the sample chain made images for this article"
    sign_in(page, desk, next_path=f"/articles/{content_id}")
    expect(page.locator("#article-title")).to_have_text(variant.title)
    expect(page.locator("#status")).to_have_text("draft")
    images = page.locator("#variant-A img")
    expect(images.first).to_be_visible()
    page.wait_for_load_state("load")  # every <img> has loaded or failed
    loaded = images.evaluate_all(
        """imgs => imgs.map(i => ({src: new URL(i.src).pathname, complete: i.complete,
                                   width: i.naturalWidth, height: i.naturalHeight}))"""
    )
    assert {i["src"] for i in loaded} == expected
    broken = [i for i in loaded if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert not broken, f"images that did not load: {broken}"
    expect(page.locator("#serp-A .serp-title")).to_have_text(variant.meta_title)
    expect(page.locator("#compare")).to_have_count(0)  # one variant: nothing to compare
    path = screenshot(page, "desk-article")
    if os.environ.get("PIPELINE_UPDATE_DOCS_SCREENSHOTS") == "1":  # never on a plain test run: it is tracked
        DOCS_SCREENSHOT.write_bytes(path.read_bytes())


def test_approve_then_publish_from_the_article_page_each_happens_once_as_the_editor(page: Page, desk: Desk) -> None:
    _, _, ids = desk.cluster()
    content_id = ids[0]
    others = {i: status(desk.env, i) for i in ids[1:]}
    dialogs = record_dialogs(page, accept=True)
    sign_in(page, desk, "ben", next_path=f"/articles/{content_id}")

    page.select_option("#approve-variant", "A")
    page.click("#approve")
    expect(page.locator("#flash-summary")).to_have_text("Approve: 1 of 1 done")
    expect(page.locator("#status")).to_have_text("approved")
    expect(page.locator("#approve")).to_have_count(0)
    assert events(desk.env, content_id) == [("draft", "approved", "A", "desk:ben")]
    assert publications(desk.env, content_id) == []

    page.click("#publish")
    expect(page.locator("#flash-summary")).to_have_text("Publish: 1 of 1 done")
    expect(page.locator("#status")).to_have_text("published")
    expect(page.locator("#publications")).to_contain_text("folder: done")
    expect(page.locator("#publish")).to_have_count(0)
    expect(page.locator("#events td.actor")).to_have_text(["desk:ben", "desk:ben"])
    # Reloading the page after post/redirect/get sends no form again.
    page.reload()
    expect(page.locator("#flash")).to_have_count(0)

    assert events(desk.env, content_id) == [
        ("draft", "approved", "A", "desk:ben"),
        ("approved", "published", "A", "desk:ben"),
    ]
    assert publications(desk.env, content_id) == [("folder", "done", 1, "A")]
    slug = review.load_article(desk.env.store, content_id).slug
    exported = desk.publish_dir / SITE / slug / "index.html"
    assert exported.is_file()
    assert {i: status(desk.env, i) for i in others} == others, "only this article changed"
    assert dialogs == []


def test_a_b_comparison_shows_both_variants_side_by_side_and_a_word_diff(page: Page, desk: Desk) -> None:
    _, _, ids = desk.cluster()
    content_id = ids[0]
    add_hostile_variant_b(desk.env, content_id)
    sign_in(page, desk, next_path=f"/articles/{content_id}")
    compare = page.locator("#compare")
    expect(compare).to_be_visible()
    expect(page.locator("#diff-stats")).to_contain_text("only in A")
    expect(page.locator("#diff-stats")).to_contain_text("only in B")
    removed = page.locator("#diff del")
    added = page.locator("#diff ins")
    expect(removed.first).to_be_visible()
    expect(added.first).to_be_visible()
    assert "fresh beans" in " ".join(added.all_inner_texts()), "B's words are marked as added"
    # Marked words are coloured apart from the unchanged text (to_have_css waits for the stylesheet).
    expect(removed.first).to_have_css("background-color", "rgb(251, 213, 217)")
    expect(added.first).to_have_css("background-color", "rgb(205, 238, 214)")
    expect(page.locator("#diff")).to_have_css("background-color", "rgb(255, 255, 255)")

    a_box = page.locator("#side-by-side > #variant-A").bounding_box()
    b_box = page.locator("#side-by-side > #variant-B").bounding_box()
    assert a_box and b_box
    assert b_box["x"] >= a_box["x"] + a_box["width"] - 1, "B stands to the right of A"
    assert abs(a_box["y"] - b_box["y"]) < 2, "A and B start at the same height"
    expect(page.locator("#variant-A .variant-title")).to_contain_text("A: ")
    expect(page.locator("#variant-B .variant-title")).to_contain_text("B: ")
    screenshot(page, "desk-article-ab")

    # Showing B puts B first and offers B for approval.
    page.click(f"#history a[href='/articles/{content_id}?variant=B']")
    page.wait_for_url(desk.url(f"/articles/{content_id}?variant=B"))
    expect(page.locator("#side-by-side > article").first).to_have_id("variant-B")
    expect(page.locator("#approve-variant")).to_have_value("B")


def test_script_in_a_stored_model_answer_does_not_run_on_the_article_page(page: Page, desk: Desk) -> None:
    # The detector works: the same text in a page of its own (no sanitiser, no CSP) runs at once.
    control = page.context.new_page()
    control_dialogs = record_dialogs(control, accept=True)
    control.set_content(HOSTILE_BODY)
    control.wait_for_function("window.__pwned !== undefined")
    assert control_dialogs == ["alert: pwned"]
    control.close()

    _, _, ids = desk.cluster()
    content_id = ids[0]
    add_hostile_variant_b(desk.env, content_id)
    dialogs = record_dialogs(page, accept=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if message.type == "error" else None)
    sign_in(page, desk, next_path=f"/articles/{content_id}?variant=B")

    title = page.locator("#article-title")
    expect(title).to_contain_text("<script>window.__pwned = 4</script>")  # shown as text
    expect(page.locator("#body-B")).to_contain_text("fresh beans")
    expect(page.locator("#body-B")).to_contain_text("Grind just before brewing.")
    page.wait_for_load_state("load")
    # Hover and click everything the hostile text could have turned into something live.
    for link in page.locator("#body-B a").all():
        link.hover()
    page.locator("#body-B").get_by_text("click", exact=True).click()
    page.wait_for_timeout(300)

    facts = page.evaluate(
        """() => ({
            pwned: typeof window.__pwned,
            title: document.title,
            scripts: [...document.scripts].map(s => s.getAttribute('src')),
            handlers: [...document.querySelectorAll('*')].flatMap(
                e => [...e.attributes].filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name)),
            javascriptLinks: [...document.querySelectorAll('[href], [src]')].map(
                e => e.getAttribute('href') || e.getAttribute('src')).filter(u => /^\\s*javascript:/i.test(u)),
        })"""
    )
    assert facts["pwned"] == "undefined"
    assert facts["scripts"] == ["/static/desk.js"]
    assert facts["handlers"] == [] and facts["javascriptLinks"] == []
    assert facts["title"].startswith(f"#{content_id} ") and "pwned = 4" in facts["title"], facts["title"]
    assert page.url == desk.url(f"/articles/{content_id}?variant=B"), "the javascript: link went nowhere"
    assert dialogs == [] and errors == []
    assert not [m for m in blocked if "Content Security Policy" in m], "nothing was even left for the CSP to block"


def test_bulk_approve_of_a_filtered_page_approves_exactly_those_once(page: Page, desk: Desk) -> None:
    cluster_id, _, ids = desk.cluster()
    _, _, untouched = desk.cluster()  # another cluster: stays as it is
    before = {i: status(desk.env, i) for i in untouched}
    dialogs = record_dialogs(page, accept=True)
    sign_in(page, desk, "ana", next_path=f"/articles?site={SITE}&cluster={cluster_id}&status=draft")
    expect(page.locator("#total")).to_have_text(f"{len(ids)} matching")

    page.check("#select-page")  # desk.js ticks every row of the page
    boxes = page.locator("input.select-row")
    assert boxes.evaluate_all("boxes => boxes.map(b => b.checked)") == [True] * len(ids)
    page.select_option("#bulk-action", "approve")
    page.click("#bulk-submit")
    expect(page.locator("#flash-summary")).to_have_text(f"Approve: {len(ids)} of {len(ids)} done")
    expect(page.locator("#flash li.done")).to_have_count(len(ids))
    # Back on the same filter: nothing of the cluster is a draft any more.
    assert page.url == desk.url(f"/articles?site={SITE}&cluster={cluster_id}&status=draft")
    expect(page.locator("#total")).to_have_text("0 matching")

    for content_id in ids:
        assert events(desk.env, content_id) == [("draft", "approved", "A", "desk:ana")], content_id
        assert status(desk.env, content_id) == ContentStatus.APPROVED
    assert {i: status(desk.env, i) for i in untouched} == before
    assert all(events(desk.env, i) == [] for i in untouched)
    assert dialogs == []


def test_bulk_approve_and_publish_of_all_matching_asks_first_and_cancel_changes_nothing(page: Page, desk: Desk) -> None:
    cluster_id, _, ids = desk.cluster()
    listing = f"/articles?site={SITE}&cluster={cluster_id}"
    sign_in(page, desk, "ben", next_path=listing)
    answers = {"accept": False}
    dialogs: list[str] = []

    def answer(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept() if answers["accept"] else dialog.dismiss()

    page.on("dialog", answer)
    page.check("#select-all-matching")
    page.select_option("#bulk-action", "approve_publish")
    before = store_state(desk.env)
    page.click("#bulk-submit")
    page.wait_for_timeout(300)
    assert dialogs == ["Publish all matching article(s) to the site's targets?"]
    assert page.url == desk.url(listing) and page.locator("#flash").count() == 0
    assert store_state(desk.env) == before, "cancelled: no request was sent"

    answers["accept"] = True
    page.click("#bulk-submit")
    expect(page.locator("#flash-summary")).to_have_text(f"Approve and publish: {len(ids)} of {len(ids)} done")
    expect(page.locator("#flash li.done a.live")).to_have_count(len(ids))
    assert len(dialogs) == 2
    for content_id in ids:
        assert events(desk.env, content_id) == [
            ("draft", "approved", "A", "desk:ben"),
            ("approved", "published", "A", "desk:ben"),
        ], content_id
        assert publications(desk.env, content_id) == [("folder", "done", 1, "A")]
        slug = review.load_article(desk.env.store, content_id).slug
        assert (desk.publish_dir / SITE / slug / "index.html").is_file()


def test_a_double_clicked_approve_and_publish_happens_once(page: Page, desk: Desk) -> None:
    _, _, ids = desk.cluster()
    content_id = ids[0]
    sign_in(page, desk, "ben", next_path=f"/articles/{content_id}")
    page.dblclick("#approve-publish")
    expect(page.locator("#status")).to_have_text("published")
    page.wait_for_load_state("load")
    assert events(desk.env, content_id) == [
        ("draft", "approved", "A", "desk:ben"),
        ("approved", "published", "A", "desk:ben"),
    ]
    assert publications(desk.env, content_id) == [("folder", "done", 1, "A")]


def test_sign_in_never_sends_the_browser_off_the_desk(page: Page, desk: Desk) -> None:
    """`next` is where sign-in returns to: spellings a browser would read as another host stay on the desk."""
    with serve_asgi(Attacker("/", {}).app) as elsewhere:
        host = elsewhere.removeprefix("http://")
        for next_path in (f"//{host}/", f"/\\{host}/", f"\\\\{host}/", f"/\t/{host}/", f"http:{host}/", elsewhere):
            page.context.clear_cookies()
            page.goto(desk.url("/signin?" + urlencode({"next": next_path})))
            page.fill("#username", "ana")
            page.fill("#password", PASSWORDS["ana"])
            page.click("#signin-submit")
            page.wait_for_load_state("load")
            assert page.url.startswith(desk.base_url + "/"), (next_path, page.url)


class Attacker:
    """Another origin's site (127.0.0.1 on another port: the same site for cookies, another origin) whose
    pages auto-submit a form to the desk; counts the pages it served."""

    def __init__(self, target: str, fields: Mapping[str, str]):
        self.target = target
        self.fields = fields
        self.served = 0
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/", self.home), Route("/attack", self.attack)])

    async def home(self, request: Request) -> HTMLResponse:
        return HTMLResponse("<p>nothing here</p>")

    async def attack(self, request: Request) -> HTMLResponse:
        with self.lock:
            self.served += 1
        inputs = "".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in self.fields.items()
        )
        return HTMLResponse(
            f'<form id="f" method="post" action="{self.target}">{inputs}</form>'
            "<script>document.getElementById('f').submit()</script>"
        )


def test_signed_out_requests_and_cross_site_posts_change_nothing(page: Page, desk: Desk) -> None:
    _, _, ids = desk.cluster()
    content_id = ids[0]
    before = store_state(desk.env)

    # Signed out: the article page shows nothing of the article, and a POST with the sign-in form's own
    # (valid, anonymous) CSRF token is refused.
    page.goto(desk.url(f"/articles/{content_id}"))
    assert page.url.startswith(desk.url("/signin?next="))
    title = review.load_article(desk.env.store, content_id).variant("A").title
    expect(page.locator("body")).not_to_contain_text(title)
    anonymous = page.evaluate(
        """async ([id, token]) => {
            const answers = [];
            for (const path of [`/articles/${id}/approve_publish`, '/articles/bulk']) {
                const body = new URLSearchParams({csrf_token: token, action: 'approve_publish', variant: 'A',
                                                  ids: String(id), all_matching: 'true'});
                const answer = await fetch(path, {method: 'POST', body, redirect: 'manual'});
                answers.push([answer.status, await answer.text()]);
            }
            return answers;
        }""",
        [content_id, page.locator("input[name=csrf_token]").first.input_value()],
    )
    assert [status for status, _ in anonymous] == [403, 403], anonymous
    assert all("sign in first" in text for _, text in anonymous), anonymous
    image = page.request.get(desk.url("/variants/1/images/1"), max_redirects=0)
    assert image.status in (303, 403) and not image.body().startswith(b"\x89PNG")
    assert store_state(desk.env) == before

    # Signed in, then lured to another origin whose page posts to the desk: the session cookie goes along
    # (same site, SameSite=Lax), even the real CSRF token (as if it had leaked), and still nothing happens.
    sign_in(page, desk, "ben", next_path=f"/articles/{content_id}")
    token = page.locator("#actions input[name=csrf_token]").first.input_value()
    attacks = {
        "approve-publish, no token": (f"/articles/{content_id}/approve_publish", {"variant": "A"}),
        "approve-publish, leaked token": (
            f"/articles/{content_id}/approve_publish",
            {"variant": "A", "csrf_token": token},
        ),
        "bulk, all matching, leaked token": (
            "/articles/bulk",
            {"csrf_token": token, "action": "approve_publish", "all_matching": "true", "filter_query": ""},
        ),
        "sign out, leaked token": ("/signout", {"csrf_token": token}),
    }
    for label, (path, fields) in attacks.items():
        attacker = Attacker(desk.url(path), fields)
        with serve_asgi(attacker.app) as evil:
            assert evil != desk.base_url
            with page.expect_response(desk.url(path)) as answered:
                page.goto(f"{evil}/attack")
            response = answered.value
            assert response.request.method == "POST" and response.request.all_headers().get("origin") == evil, label
            assert response.status == 403, (label, response.status)
            assert "cross-site request refused" in response.text(), (label, response.text())
            assert attacker.served == 1
        assert store_state(desk.env) == before, label
    # Still signed in (the forged sign-out did nothing either), and the article is still a draft.
    page.goto(desk.url(f"/articles/{content_id}"))
    expect(page.locator("#signed-in-as")).to_have_text("ben")
    expect(page.locator("#status")).to_have_text("draft")
    assert events(desk.env, content_id) == [] and publications(desk.env, content_id) == []
    assert not any((desk.publish_dir / SITE).glob(f"{review.load_article(desk.env.store, content_id).slug}/*"))


def test_the_live_link_of_a_published_article_opens_it(page: Page, desk: Desk) -> None:
    _, _, ids = desk.cluster()
    sign_in(page, desk, "ben", next_path=f"/articles/{ids[0]}")
    page.click("#approve-publish")
    expect(page.locator("#status")).to_have_text("published")
    live = page.locator("#publications a.live")
    expect(live).to_have_count(1)
    with page.expect_navigation() as opened:
        live.click()
    response = opened.value
    assert response is not None and response.ok, (page.url, response and response.status)
    # The folder export, opened through the desk, with its images.
    title = review.load_article(desk.env.store, ids[0]).variant("A").title
    expect(page.locator("h1").first).to_contain_text(title)
    widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
