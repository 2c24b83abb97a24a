"""Idea review (issue 16, part 2): with `ideas_need_approval` on, ideas wait as `proposed` and no article is
paid for until a person approves them (CLI, desk page, desk API); the estimate counts approved ideas only,
prices the waiting ones apart, and shows the batch price beside the real-time one."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from pipeline.estimate import estimate_site
from pipeline.models import Idea, IdeaStatus
from pipeline.store import IdeaReviewError
from resources import LLMResource
from tests.conftest import Env
from tests.desk_data import API_TOKEN, csrf_of, desk_app, signed_in
from tests.review_data import add_articles

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {key: value.value for key, value in event.materialization.metadata.items()}


def gated_site(env: Env, slug: str = "sample") -> int:
    """The sample site with the approval gate on, planned up to its ideas (all `proposed`)."""
    site = env.add_site(slug)
    env.store.update_site_settings(site.id, {"ideas_need_approval": True})
    assert env.materialize(slug, selection=["keywords", "clusters", "ideas"]).success
    return env.store.site(slug).id


def statuses(env: Env, site_id: int) -> dict[str, int]:
    return env.store.idea_status_counts(site_id)


def first_cluster(env: Env, site_id: int) -> tuple[int, list[int]]:
    """The first cluster with ideas, and its ideas' ids."""
    ideas = env.store.ideas(site_id)
    cluster_id = ideas[0].cluster_id
    return cluster_id, [i.id for i in ideas if i.cluster_id == cluster_id]


def articles_of(env: Env, site_id: int) -> set[int]:
    return set(env.store.content_ids_by_idea(site_id))


# -- the gate -----------------------------------------------------------------------------------------


def test_the_gate_holds_proposed_ideas_until_a_cluster_is_approved_then_writes_exactly_those(env):
    site_id = gated_site(env)
    counts = statuses(env, site_id)
    assert counts["proposed"] > 0 and counts["approved"] == 0 and counts["rejected"] == 0

    blocked = env.materialize(selection=["content"])
    assert blocked.success
    shown = metadata_of(blocked, "content")
    assert shown["articles_written"] == 0
    assert shown["ideas_awaiting_approval"] == counts["proposed"]
    assert articles_of(env, site_id) == set()

    cluster_id, cluster_ideas = first_cluster(env, site_id)
    done = env.store.decide_ideas(IdeaStatus.APPROVED, actor="test:lead", cluster_id=cluster_id, site_id=site_id)
    assert done == sorted(cluster_ideas)
    written = env.materialize(selection=["content"])
    assert written.success
    assert articles_of(env, site_id) == set(cluster_ideas)
    shown = metadata_of(written, "content")
    assert shown["articles_written"] == len(cluster_ideas)
    assert shown["ideas_awaiting_approval"] == counts["proposed"] - len(cluster_ideas)
    approved = env.store.idea(cluster_ideas[0])
    assert (approved.status, approved.reviewed_by) == ("approved", "test:lead") and approved.reviewed_at

    # A forced run rewrites approved ideas only: still no article for a proposed idea.
    forced = env.materialize(selection=["content"], run_config=_force_content())
    assert forced.success and articles_of(env, site_id) == set(cluster_ideas)


def _force_content() -> dict[str, Any]:
    return {"ops": {"content": {"config": {"force": True}}}}


def test_without_the_setting_ideas_are_approved_at_once(env):
    env.add_site()
    assert env.materialize(selection=["keywords", "clusters", "ideas"]).success
    site_id = env.store.site("sample").id
    counts = statuses(env, site_id)
    assert counts["approved"] == len(env.store.ideas(site_id)) > 0 and counts["proposed"] == 0


def test_reject_records_the_note_and_an_idea_with_an_article_cannot_be_rejected(env):
    ids = add_articles(env, "cafe", {"espresso": 2})
    site_id = env.store.site("cafe").id
    written = env.store.content(ids["espresso"][0]).idea_id
    cluster_id = env.store.idea(written).cluster_id
    with env.store.transaction() as session:
        fresh = Idea(
            site_id=site_id,
            cluster_id=cluster_id,
            key="fresh",
            title="Fresh idea",
            angle="",
            content_type="post",
            outline=["A"],
            target_keywords=["espresso"],
            estimated_word_count=900,
            status="proposed",
            provider="offline",
            model="m",
            prompt_version="t",
        )
        session.add(fresh)
        session.flush()
        fresh_id = fresh.id
    done = env.store.decide_ideas(IdeaStatus.REJECTED, actor="test:ed", note="off topic", ids=[fresh_id])
    assert done == [fresh_id]
    rejected = env.store.idea(fresh_id)
    assert (rejected.status, rejected.review_note, rejected.reviewed_by) == ("rejected", "off topic", "test:ed")
    # Approving a rejected idea is a re-decision.
    env.store.decide_ideas(IdeaStatus.APPROVED, actor="test:lead", ids=[fresh_id])
    assert env.store.idea(fresh_id).status == "approved"

    with pytest.raises(IdeaReviewError, match=rf"idea {written} .*already has an article") as raised:
        env.store.decide_ideas(IdeaStatus.REJECTED, actor="test:ed", note="no", ids=[fresh_id, written])
    assert "nothing changed" in str(raised.value)
    assert env.store.idea(fresh_id).status == "approved" and env.store.idea(written).status == "approved"
    with pytest.raises(IdeaReviewError, match="no idea with id 99999"):
        env.store.decide_ideas(IdeaStatus.APPROVED, actor="x", ids=[fresh_id, 99999])
    with pytest.raises(IdeaReviewError, match="needs a note"):
        env.store.decide_ideas(IdeaStatus.REJECTED, actor="x", ids=[fresh_id])


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_lists_approves_and_rejects_with_exit_codes(env, cli, capsys):
    site_id = gated_site(env)
    cluster_id, cluster_ideas = first_cluster(env, site_id)
    capsys.readouterr()

    assert cli("ideas", "list", "--site", "sample", "--status", "proposed", "--cluster", str(cluster_id)) == 0
    table = capsys.readouterr().out
    assert all(str(i) in table for i in cluster_ideas) and f"{len(cluster_ideas)} proposed" in table

    assert cli("ideas", "approve", "--site", "sample", "--cluster", str(cluster_id), "--actor", "cli:lead") == 0
    out = capsys.readouterr().out
    assert f"Approved {len(cluster_ideas)} ideas" in out
    assert all(env.store.idea(i).reviewed_by == "cli:lead" for i in cluster_ideas)

    other = next(i.id for i in env.store.ideas(site_id) if i.status == "proposed")
    assert cli("ideas", "reject", str(other), "--note", "duplicate of another post") == 0
    assert "Rejected 1 idea" in capsys.readouterr().out
    assert env.store.idea(other).review_note == "duplicate of another post"

    # Errors go to stderr with exit 2 and change nothing.
    assert cli("ideas", "approve", str(other), "424242") == 2
    err = capsys.readouterr().err
    assert "no idea with id 424242" in err and env.store.idea(other).status == "rejected"
    assert cli("ideas", "approve", "--site", "sample") == 2
    assert "give idea ids or --cluster" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("ideas", "reject", str(other))  # --note is required

    assert cli("ideas", "list", "--site", "sample", "--status", "rejected", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["status"], row["site"], row["review_note"]) == (
        other,
        "rejected",
        "sample",
        "duplicate of another post",
    )


# -- estimate ----------------------------------------------------------------------------------------


def test_estimate_counts_approved_ideas_prices_the_waiting_ones_apart_and_shows_the_batch_price(env, cli, capsys):
    site_id = gated_site(env)
    cluster_id, cluster_ideas = first_cluster(env, site_id)
    env.store.decide_ideas(IdeaStatus.APPROVED, actor="t", cluster_id=cluster_id)
    waiting = statuses(env, site_id)["proposed"]
    with LLMResource().engine(env.store, run_id=None, partition="sample") as engine:
        estimates = {e.stage: e for e in estimate_site(env.store, engine, "sample")}
    content = estimates["content"]
    assert (content.pending_items, content.calls) == (len(cluster_ideas), len(cluster_ideas))
    assert content.awaiting_approval_items == waiting
    assert content.awaiting_approval_cost_usd > content.cost_usd > 0
    assert content.batch_cost_usd == pytest.approx(content.cost_usd / 2, abs=1e-4)
    assert content.awaiting_approval_batch_cost_usd == pytest.approx(content.awaiting_approval_cost_usd / 2, abs=1e-4)
    # Their image prompts and images follow the waiting ideas, not the approved count.
    assert estimates["image_prompts"].awaiting_approval_items == waiting
    assert estimates["images"].awaiting_approval_items == waiting * 3
    assert estimates["images"].images == len(cluster_ideas) * 3

    capsys.readouterr()
    assert cli("estimate", "--site", "sample") == 0
    out = capsys.readouterr().out
    assert "batch_cost_usd" in out and "awaiting_approval_cost_usd" in out
    assert f"{waiting} idea(s) wait for approval and are not counted above" in out
    assert cli("estimate", "--site", "sample", "--stage", "content", "--json") == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["awaiting_approval_items"] == waiting and shown["batch_cost_usd"] == content.batch_cost_usd
    assert env.store.model_calls() == [] or all(c.stage != "content" for c in env.store.model_calls())


def test_the_content_dry_run_reports_the_batch_price_and_the_waiting_count(env):
    site_id = gated_site(env)
    result = env.materialize(selection=["content"], run_config={"ops": {"content": {"config": {"dry_run": True}}}})
    assert result.success
    shown = metadata_of(result, "content")
    assert shown["pending_items"] == 0 and shown["ideas_awaiting_approval"] == statuses(env, site_id)["proposed"]
    assert "estimated_batch_cost_usd" in shown


# -- desk --------------------------------------------------------------------------------------------


def proposed_site(env: Env) -> tuple[int, int, list[int]]:
    """A small gated site without running the chain: one cluster with three proposed ideas and none written."""
    ids = add_articles(env, "cafe", {"espresso": 1}, settings={"ideas_need_approval": True})
    site_id = env.store.site("cafe").id
    cluster_id = env.store.idea(env.store.content(ids["espresso"][0]).idea_id).cluster_id
    with env.store.transaction() as session:
        fresh = [
            Idea(
                site_id=site_id,
                cluster_id=cluster_id,
                key=f"idea-{n}",
                title=f"Proposed idea {n}",
                angle="",
                content_type="post",
                outline=["A"],
                target_keywords=["espresso"],
                estimated_word_count=900,
                status="proposed",
                provider="offline",
                model="m",
                prompt_version="t",
            )
            for n in range(3)
        ]
        session.add_all(fresh)
        session.flush()
        return site_id, cluster_id, [i.id for i in fresh]


def test_desk_ideas_page_needs_sign_in_and_the_csrf_token(env, monkeypatch):
    _, _, idea_ids = proposed_site(env)
    app = desk_app(env, monkeypatch)
    anonymous = TestClient(app, base_url="http://127.0.0.1:3001")
    page = anonymous.get("/ideas", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/signin?next=")
    assert anonymous.post("/ideas/bulk", data={"action": "approve", "ids": [str(idea_ids[0])]}).status_code == 403
    assert anonymous.get("/api/ideas").status_code == 401
    assert anonymous.post("/api/ideas/approve", json={"ids": idea_ids}).status_code == 401

    client = signed_in(app)
    assert "3 ideas waiting for approval" in client.get("/").text
    shown = client.get("/ideas?site=cafe")
    assert shown.status_code == 200 and "Proposed idea 0" in shown.text and 'href="/ideas"' in shown.text
    assert "cafe: 3 waiting for approval" in shown.text
    assert client.post("/ideas/bulk", data={"action": "approve", "ids": [str(idea_ids[0])]}).status_code == 403
    token = csrf_of(shown.text)
    cross = client.post(
        "/ideas/bulk",
        data={"csrf_token": token, "action": "approve", "ids": [str(idea_ids[0])]},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert all(env.store.idea(i).status == "proposed" for i in idea_ids)


def test_desk_bulk_actions_record_the_signed_in_editor(env, monkeypatch):
    _, cluster_id, idea_ids = proposed_site(env)
    client = signed_in(desk_app(env, monkeypatch), "ben")
    token = csrf_of(client.get("/ideas?site=cafe").text)
    approved = client.post(
        "/ideas/bulk", data={"csrf_token": token, "action": "approve", "ids": [str(i) for i in idea_ids[:2]]}
    )
    assert approved.status_code == 200 and "Approved 2 ideas" in approved.text
    assert [env.store.idea(i).reviewed_by for i in idea_ids[:2]] == ["desk:ben", "desk:ben"]

    unnoted = client.post("/ideas/bulk", data={"csrf_token": token, "action": "reject", "ids": [str(idea_ids[2])]})
    assert "needs a note" in unnoted.text and env.store.idea(idea_ids[2]).status == "proposed"
    rejected = client.post(
        "/ideas/bulk",
        data={"csrf_token": token, "action": "reject", "cluster": str(cluster_id), "site": "cafe", "note": "later"},
    )
    assert "Rejected 1 idea" in rejected.text
    idea = env.store.idea(idea_ids[2])
    assert (idea.status, idea.reviewed_by, idea.review_note) == ("rejected", "desk:ben", "later")
    assert "later" in client.get("/ideas?site=cafe&status=rejected").text


def test_desk_api_lists_and_decides_ideas_with_the_bearer_token(env, monkeypatch):
    site_id, cluster_id, idea_ids = proposed_site(env)
    client = TestClient(desk_app(env, monkeypatch))
    listed = client.get("/api/ideas?site=cafe&status=proposed", headers=BEARER)
    assert listed.status_code == 200 and [i["id"] for i in listed.json()] == idea_ids
    assert client.get("/api/ideas?status=bogus", headers=BEARER).status_code == 422

    done = client.post("/api/ideas/approve", json={"ids": idea_ids[:1]}, headers=BEARER)
    assert done.status_code == 200 and done.json() == {"status": "approved", "ids": idea_ids[:1]}
    assert env.store.idea(idea_ids[0]).reviewed_by == "api"

    bad = client.post("/api/ideas/approve", json={"ids": [idea_ids[1], 777777]}, headers=BEARER)
    assert bad.status_code == 422 and "777777" in bad.json()["detail"]
    assert env.store.idea(idea_ids[1]).status == "proposed"

    written = next(i.id for i in env.store.ideas(site_id) if i.id not in idea_ids)
    refused = client.post("/api/ideas/reject", json={"ids": [written], "note": "x"}, headers=BEARER)
    assert refused.status_code == 422 and f"idea {written}" in refused.json()["detail"]

    by_cluster = client.post("/api/ideas/reject", json={"cluster": cluster_id, "note": "not now"}, headers=BEARER)
    assert by_cluster.json()["ids"] == idea_ids[1:]
    schema = client.get("/api/openapi.json", headers=BEARER).json()
    assert "/api/ideas" in schema["paths"] and "/api/ideas/{action}" in schema["paths"]
