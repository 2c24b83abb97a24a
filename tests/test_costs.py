"""`pipeline costs` and the cost metadata: every total equals the ledger's, with cache, batch and failed rows;
and prompts that put what a site's items share before the item's data (provider prompt caching)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete

from pipeline.cli import main as pipeline_main
from pipeline.llm.catalog import DEFAULT_CATALOG, Usage
from pipeline.models import Content, ContentVariant, ImagePrompt, ModelCall, utcnow
from pipeline.prompts import PromptRegistry, encode_data
from pipeline.stages import RunSite
from pipeline.stages.content import article_data
from pipeline.store.budgets import month_bounds


def row(stage: str, model: str, ref: str | None, usage: Usage, **values) -> dict[str, Any]:
    values.setdefault("cost_usd", DEFAULT_CATALOG.cost(model, usage))
    return {
        "stage": stage,
        "provider": "openai",
        "model": model,
        "prompt_name": stage,
        "prompt_version": f"{stage}@1",
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "images": usage.images,
        "outcome": "ok",
        "item_ref": ref,
        "run_id": "r",
        "partition": "sample",
        "error_class": None,
        "batch_id": None,  # every row has every key: one executemany takes the first row's columns
        **values,
    }


def test_every_materialization_carries_the_months_totals(sample_run):
    _, result = sample_run
    metadata = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    calls = sum(m["model_calls"].value for m in metadata.values() if "model_calls" in m)
    cache_hits = sum(m["cache_hits"].value for m in metadata.values() if "cache_hits" in m)
    # The last stage of the chain reports the month so far: every call of the run, nothing earlier.
    last = metadata["images"]
    assert last["month"].value == utcnow().strftime("%Y-%m")
    assert last["month_calls"].value == calls > 0 and last["month_cache_hits"].value == cache_hits
    assert last["month_cost_usd"].value == 0.0  # offline calls cost nothing
    assert "month_budget_usd" not in last  # the sample site has no monthly budget


@pytest.fixture
def ledger(sample_run, monkeypatch):
    """The sample site's articles with a hand-written ledger of this month (plus rows that must not count)."""
    env, _ = sample_run
    monkeypatch.setenv("DATABASE_URL", env.url)
    site = env.store.site("sample")
    env.store.update_site_settings(site.id, {"monthly_budget_usd": 1.0})
    with env.store.transaction() as session:
        session.execute(delete(ModelCall))
    with env.store.transaction() as session:
        first, second = session.query(Content).order_by(Content.id).limit(2).all()
        variant = session.query(ContentVariant).filter_by(content_id=first.id).order_by(ContentVariant.id).first()
        prompt = session.query(ImagePrompt).filter_by(variant_id=variant.id).first()
        ids = {
            "first": first.id,
            "first_idea": first.idea_id,
            "second": second.id,
            "second_idea": second.idea_id,
            "variant": variant.id,
            "prompt": prompt.id,
        }
    start, _ = month_bounds()
    day1, day2 = start + timedelta(hours=1), start + timedelta(days=1, hours=1)
    content_usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=2_000)
    batch_usage = Usage(input_tokens=10_000, output_tokens=2_000)
    rows = [
        row("content", "gpt-5", f"idea:{ids['first_idea']}", content_usage, created_at=day1),
        row(
            "content",
            "gpt-5",
            f"idea:{ids['second_idea']}",
            batch_usage,
            cost_usd=DEFAULT_CATALOG.cost("gpt-5", batch_usage, batch=True),
            batch_id=7,
            created_at=day1,
        ),
        row(
            "content",
            "gpt-5",
            f"idea:{ids['first_idea']}",
            Usage(input_tokens=10_000, output_tokens=500),
            outcome="invalid",
            error_class="ValidationError",
            created_at=day2,
        ),
        row(
            "content", "gpt-5", f"idea:{ids['first_idea']}", Usage(), cost_usd=0.0, outcome="cache_hit", created_at=day2
        ),
        row(
            "image_prompts",
            "gpt-5-mini",
            f"variant:{ids['variant']}",
            Usage(input_tokens=2_000, output_tokens=250),
            created_at=day2,
        ),
        row(
            "images", "gpt-image-2", f"image_prompt:{ids['prompt']}", Usage(images=1), cost_usd=0.04003, created_at=day2
        ),
        row("clusters", "gpt-5-mini", "clusters:a..b", Usage(input_tokens=4_000, output_tokens=1_000), created_at=day2),
        # Not this month; not this site.
        row("content", "gpt-5", None, content_usage, created_at=start - timedelta(days=2)),
        row("content", "gpt-5", None, content_usage, partition="other", created_at=day2),
    ]
    env.store.record_calls(rows)
    return env, ids, rows


def test_costs_json_equals_the_ledger(ledger, capsys):
    _env, ids, rows = ledger
    assert pipeline_main(["costs", "--site", "sample", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    month = rows[:7]
    paid = [r for r in month if r["outcome"] != "cache_hit"]
    total = sum(r["cost_usd"] for r in month)
    assert report["site"] == "sample" and report["month"] == utcnow().strftime("%Y-%m")
    assert report["cost_usd"] == pytest.approx(total) and report["calls"] == len(paid) == 6
    assert report["failed_calls"] == 1 and report["failed_cost_usd"] == pytest.approx(rows[2]["cost_usd"])
    # A cache hit is worth what the site's real-time ok calls of that stage and model cost on average.
    assert report["cache_hits"] == 1 and report["cache_saved_usd"] == pytest.approx(rows[0]["cost_usd"])
    real_time = DEFAULT_CATALOG.cost("gpt-5", Usage(input_tokens=10_000, output_tokens=2_000))
    assert report["batch_calls"] == 1 and report["batch_cost_usd"] == pytest.approx(real_time / 2)
    assert report["batch_saved_usd"] == pytest.approx(real_time / 2)
    assert report["input_tokens"] == sum(r["input_tokens"] for r in month)
    assert report["cached_input_tokens"] == 4_000
    assert report["cached_input_share"] == pytest.approx(round(4_000 / report["input_tokens"], 4))
    assert report["budget_usd"] == 1.0 and report["budget_left_usd"] == pytest.approx(1.0 - total)
    by_stage = {r["stage"]: r for r in report["by_stage"]}
    assert by_stage["content"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in month[:4]))
    assert by_stage["content"]["calls"] == 3 and by_stage["images"]["cost_usd"] == pytest.approx(0.04003)
    by_model = {r["model"]: r["cost_usd"] for r in report["by_model"]}
    assert by_model["gpt-5-mini"] == pytest.approx(rows[4]["cost_usd"] + rows[6]["cost_usd"])
    by_day = [r["cost_usd"] for r in report["by_day"]]
    assert by_day == [pytest.approx(rows[0]["cost_usd"] + rows[1]["cost_usd"]), pytest.approx(total - by_day[0])]
    articles = {r["content_id"]: r for r in report["by_article"]}
    # The first article: its content calls, its image prompts and its image; clusters belong to no article.
    first = rows[0]["cost_usd"] + rows[2]["cost_usd"] + rows[4]["cost_usd"] + 0.04003
    assert articles[ids["first"]]["cost_usd"] == pytest.approx(first) and articles[ids["first"]]["calls"] == 4
    assert articles[ids["second"]]["cost_usd"] == pytest.approx(rows[1]["cost_usd"])
    assert set(articles) == {ids["first"], ids["second"]} and articles[ids["first"]]["title"]


def test_costs_text_shows_the_same_numbers_as_aligned_tables(ledger, capsys):
    _, _, rows = ledger
    assert pipeline_main(["costs", "--site", "sample"]) == 0
    text = capsys.readouterr().out
    total = sum(r["cost_usd"] for r in rows[:7])
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert lines["cost_usd"] == [f"{total:.4f}"] and lines["calls"] == ["6"] and lines["cache_hits"] == ["1"]
    assert lines["budget_left_usd"] == [f"{1.0 - total:.4f}"] and lines["failed_calls"] == ["1"]
    assert lines["images"] == ["1", f"{0.04003:.4f}"]  # the stage table's images row (the total line comes first)
    assert lines["content"] == ["3", f"{sum(r['cost_usd'] for r in rows[:4]):.4f}"]
    header = next(line for line in text.splitlines() if line.startswith("stage"))
    body = next(line for line in text.splitlines() if line.startswith("content "))
    assert header.index("calls") == body.index("3")  # aligned columns


def test_costs_of_all_sites_and_of_another_month(ledger, capsys):
    _, _, rows = ledger
    assert pipeline_main(["costs", "--json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert everything["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows[:7]) + rows[8]["cost_usd"])
    assert everything["budget_usd"] is None
    last = (month_bounds()[0] - timedelta(days=2)).strftime("%Y-%m")
    assert pipeline_main(["costs", "--site", "sample", "--month", last, "--json"]) == 0
    earlier = json.loads(capsys.readouterr().out)
    assert earlier["month"] == last and earlier["cost_usd"] == pytest.approx(rows[7]["cost_usd"])
    assert pipeline_main(["costs", "--month", "2026-13"]) == 2


def test_prompts_put_what_a_sites_items_share_before_the_items_data(sample_run):
    env, _ = sample_run
    store = env.store
    site = RunSite.of(store, "sample")
    clusters = {c.id: c for c in store.clusters(site.site.id)}
    by_cluster = {idea.cluster_id: idea for idea in store.ideas(site.site.id)}
    assert len(by_cluster) >= 2
    prompt = PromptRegistry().get("article")
    first, second = (
        prompt.messages(article_data(site.prompt_data(), idea, clusters[cid], None))
        for cid, idea in list(by_cluster.items())[:2]
    )
    # Instructions first, identical for every item of the site.
    assert first[0] == second[0] and first[0]["content"] == prompt.instructions
    a, b = first[1]["content"], second[1]["content"]
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    # Then the site's context, byte for byte the same; the items' data (cluster, idea) only after it.
    site_context = "<data>\n" + encode_data({"site": site.prompt_data(), "taxonomy": None})[:-1] + ","
    assert a.startswith(site_context) and shared >= len(site_context)
    assert a[len(site_context) :].startswith('"cluster":') and "idea" not in a[:shared]
    assert len(json.dumps(site.prompt_data())) > 50
