"""Bulk review: approve or reject a site's drafts, a cluster or a list of ids, one review event per article.

The sample chain (offline provider) proves `--site sample --all` on real drafts; the other tests build
small sites of their own (`tests.review_data`), so each can mix statuses freely.
"""

from __future__ import annotations

import pytest

from pipeline import review
from pipeline.cli import main as pipeline_main
from pipeline.models import ContentStatus, utcnow
from tests.conftest import Env
from tests.review_data import add_articles, content_row, publish

ONE_SITE = {"espresso": 3, "grinders": 2}


@pytest.fixture
def sample_env(sample_run):
    """The module's sample chain: the sample site's real drafts."""
    return sample_run[0]


def approvals(env: Env, content_id: int) -> list[tuple[str, str, str | None, str]]:
    return [(e.from_status, e.to_status, e.variant, e.actor) for e in env.store.review_events(content_id)]


def test_approve_all_of_the_sample_site_approves_every_draft_with_one_event_each_by_the_actor(
    sample_env, monkeypatch, capsys
):
    monkeypatch.setenv("DATABASE_URL", sample_env.url)
    drafts = [item.id for item in review.review_list(sample_env.store, site="sample", status="draft")]
    assert len(drafts) > 1
    assert pipeline_main(["review", "approve", "--site", "sample", "--all", "--actor", "editor:ana"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"Approved {len(drafts)} articles of site sample; 0 skipped."
    assert len(out) == len(drafts) + 1
    for content_id in drafts:
        assert content_row(sample_env, content_id).status == ContentStatus.APPROVED
        assert approvals(sample_env, content_id) == [("draft", "approved", "A", "editor:ana")]
    # The sample site has no schedule: every article is due at once.
    site_id = sample_env.store.site("sample").id
    assert sorted(sample_env.store.due_for_publishing(site_id, utcnow())) == sorted(drafts)


def test_approve_by_cluster_acts_on_that_cluster_only_and_reports_a_published_article_as_skipped(env, cli, capsys):
    ids = add_articles(env, "cafe", ONE_SITE)
    published, *drafts = ids["espresso"]
    review.approve(env.store, published, actor="ed")
    publish(env, published, at=utcnow())
    cluster = next(c for c in env.store.clusters(env.store.site("cafe").id) if c.key == "espresso")

    assert cli("review", "approve", "--site", "cafe", "--cluster", str(cluster.id), "--actor", "ana") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Skipped content {published}: is 'published': cannot approve")
    assert out[1].startswith(f"Approved content {drafts[0]} (version 1, variant A), slot ")
    assert out[-1] == "Approved 2 articles of site cafe; 1 skipped."
    assert [content_row(env, i).status for i in drafts] == ["approved", "approved"]
    assert [content_row(env, i).status for i in ids["grinders"]] == ["draft", "draft"]
    assert all(approvals(env, i) == [("draft", "approved", "A", "ana")] for i in drafts)
    assert len(env.store.review_events(published)) == 2, "the skipped article got no event"


def test_a_cluster_can_be_named_by_its_key(env):
    ids = add_articles(env, "cafe", ONE_SITE)
    outcomes = review.approve_many(env.store, site="cafe", cluster="grinders", actor="ana")
    assert [(o.content_id, o.skipped) for o in outcomes] == [(i, None) for i in ids["grinders"]]


def test_approve_by_ids_reports_each_article_and_skips_those_already_approved(env, cli, capsys):
    ids = add_articles(env, "cafe", ONE_SITE)
    first, second, third = ids["espresso"]
    review.approve(env.store, second, actor="ed")
    assert cli("review", "approve", str(first), str(second), str(third), "--actor", "ana") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(f"Skipped content {second}: is 'approved': cannot approve; allowed: publish, reject")
    assert out[-1] == "Approved 2 articles of site cafe; 1 skipped."
    assert approvals(env, second) == [("draft", "approved", "A", "ed")]
    assert approvals(env, third) == [("draft", "approved", "A", "ana")]


def test_reject_with_a_note_sends_drafts_and_approved_articles_back_with_one_event_each(env, cli, capsys):
    ids = add_articles(env, "cafe", ONE_SITE)
    approved, *drafts = ids["espresso"]
    review.approve(env.store, approved, actor="ed")
    published = ids["grinders"][0]
    review.approve(env.store, published, actor="ed")
    publish(env, published, at=utcnow())

    selected = [approved, *drafts, published]
    args = ["review", "reject", *map(str, selected), "--note", "Cite the sources.", "--actor", "ana"]
    assert cli(*args) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"Rejected content {approved}: approved -> draft, note: Cite the sources." in out
    assert out[-1] == "Rejected 3 articles of site cafe; 1 skipped."
    for content_id in [approved, *drafts]:
        row = content_row(env, content_id)
        assert (row.status, row.review_note, row.publish_slot) == ("draft", "Cite the sources.", None)
        last = env.store.review_events(content_id)[-1]
        assert (last.to_status, last.note, last.actor) == ("draft", "Cite the sources.", "ana")
    assert content_row(env, published).status == "published"


def test_reject_all_drafts_of_a_site_needs_a_note(env, cli, capsys):
    ids = add_articles(env, "cafe", ONE_SITE)
    assert cli("review", "reject", "--site", "cafe", "--all", "--note", " ") == 2
    assert "a rejection needs a note" in capsys.readouterr().err
    outcomes = review.reject_many(env.store, site="cafe", all_drafts=True, note="Shorter.", actor="ana")
    assert sorted(o.content_id for o in outcomes if o.done) == sorted(ids["espresso"] + ids["grinders"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing selected to approve: give content ids, or --site SLUG with --all or --cluster ID"),
        (["--all"], "--all and --cluster need --site SLUG"),
        (["--site", "nowhere", "--all"], "site 'nowhere' is not registered"),
        (["--site", "cafe", "--cluster", "teapots"], "site cafe has no cluster with id or key 'teapots'"),
        (["--site", "cafe", "--cluster", "999999"], "cluster 999999 does not exist"),
        (["999998", "999999", "--actor", "ana"], "content 999998, 999999 does not exist; nothing was changed"),
        (["1", "--site", "cafe", "--all"], "give content ids or --all/--cluster, not both"),
    ],
)
def test_selecting_nothing_or_something_unknown_is_an_error_naming_it_and_changes_nothing(
    env, cli, capsys, args, message
):
    ids = add_articles(env, "cafe", ONE_SITE)
    assert cli("review", "approve", *args) == 2
    assert message in capsys.readouterr().err
    assert all(content_row(env, i).status == "draft" for i in ids["espresso"] + ids["grinders"])


def test_a_cluster_of_another_site_is_refused(env):
    add_articles(env, "cafe", ONE_SITE)
    add_articles(env, "tea", {"oolong": 1})
    oolong = env.store.clusters(env.store.site("tea").id)[0]
    with pytest.raises(review.ReviewError, match=f"cluster {oolong.id} is not a cluster of site cafe"):
        review.approve_many(env.store, site="cafe", cluster=oolong.id)


def test_when_every_selected_article_is_skipped_the_exit_code_is_1(env, cli, capsys):
    first, second = add_articles(env, "cafe", {"espresso": 2})["espresso"]
    review.approve(env.store, first, actor="ed")
    review.approve(env.store, second, actor="ed")
    assert cli("review", "approve", str(first), str(second)) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "Approved 0 articles of site cafe; 2 skipped."


def test_one_id_keeps_the_single_article_form(env, cli, capsys):
    (content_id,) = add_articles(env, "cafe", {"espresso": 1})["espresso"]
    assert cli("review", "approve", str(content_id)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Approved content {content_id} (version 1, variant A)."
    assert out[-1] == f"Next: pipeline review publish {content_id}"
    assert cli("review", "approve", str(content_id)) == 2
    assert f"content {content_id} is 'approved': cannot approve" in capsys.readouterr().err
