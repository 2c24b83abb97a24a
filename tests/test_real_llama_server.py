"""The engine against a real OpenAI-compatible server: llama.cpp (llama-cpp-python) with SmolLM2-135M.

`tests/llama_server.py` starts the server from `.venv-llm` (`make llm-server-venv`). First the server's
behaviour the engine relies on is pinned down with the bare `openai` SDK (a new llama-cpp-python version
that changes it fails here, not somewhere deep in a run); then the whole six-stage chain runs against it.

Slow (a real model generates every answer), and run in the SQLite pass only: the PostgreSQL pass would
repeat the same minutes of generation for the same engine code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import select

from pipeline.article_html import read_sections
from pipeline.keywords import normalize_keyword
from pipeline.models import Content, ContentVariant, ModelCall
from pipeline.prompts.schemas import ClusterNames
from tests.conftest import BACKEND, SIX_ASSETS, Env
from tests.llama_server import LlamaServer
from tests.sdk_params import content, json_schema_format

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        BACKEND != "sqlite",
        reason="real llama.cpp server tests run in the SQLite pass only (same engine code, minutes of generation)",
    ),
]

COFFEE_KEYWORDS = """keyword,volume,difficulty,intent
espresso grind size,2400,30,informational
how fine to grind espresso,880,22,informational
best grinder for espresso,5400,55,commercial
espresso grinder burr vs blade,320,25,commercial
cold brew coffee ratio,3600,28,informational
how to make cold brew at home,6600,35,informational
cold brew concentrate recipe,1900,24,informational
best coffee for cold brew,2900,40,commercial
"""
MODEL_ASSETS = ["clusters", "ideas", "content", "image_prompts", "images"]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    """Base URL (`http://127.0.0.1:PORT/v1`) of a llama.cpp server running for this module."""
    with LlamaServer.start() as server:
        print(f"llama.cpp server ready after {server.ready_after_s:.1f} s at {server.base_url}")
        yield server.base_url


@pytest.fixture
def fresh_llama_server() -> Iterator[str]:
    """A server of its own (started in under a second). The sampler's seeded random state advances with
    every answer, so on a shared server the chain's answers would depend on which tests ran before it; on
    a fresh one, the same build gives the same answers run after run."""
    with LlamaServer.start() as server:
        yield server.base_url


def sdk(base_url: str) -> openai.OpenAI:
    # No SDK retries: each answer (or error) below is the server's first.
    return openai.OpenAI(base_url=base_url, api_key="any-non-empty-key", max_retries=0, timeout=60)


MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You name clusters of search keywords. Answer with JSON only."},
    {
        "role": "user",
        "content": 'Name each cluster.\n<data>{"clusters": [{"key": "c-1", "keywords": '
        '["espresso grind size", "how fine to grind espresso"]}]}</data>',
    },
]


def test_llama_server_answers_json_object_with_schema(llama_server):
    """What the engine's structured-output discovery assumes of llama.cpp: strict `json_schema` is refused
    (HTTP 500, not 400); `json_object` with a `schema` (its extension) is grammar-constrained to the schema,
    enums included; plain `json_object` is JSON of any shape."""
    client = sdk(llama_server)
    strict = json_schema_format(ClusterNames)
    schema = json.loads(json.dumps(strict["json_schema"]["schema"]))
    cluster = schema["$defs"]["ClusterName"] if "$defs" in schema else None
    assert cluster is not None, schema
    cluster["properties"]["key"]["enum"] = ["c-1"]  # how the engine sends `choices`

    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, response_format=strict, max_tokens=50)
    assert refused.value.status_code == 500
    assert "json_object" in str(refused.value), "the error names the response formats the server accepts"

    # As the engine sends it: the response format in `extra_body` (the typed parameter has no `schema`).
    answer = client.chat.completions.create(
        model="gpt-5-mini",
        messages=MESSAGES,
        extra_body={"response_format": {"type": "json_object", "schema": schema}},
        max_tokens=300,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice
    names = ClusterNames.model_validate_json(content(answer))  # extra="forbid": exactly the schema
    # The grammar enforces the enum, not the list's length: a tiny model may repeat (or omit) entries.
    assert {c.key for c in names.clusters} <= {"c-1"}, names
    assert answer.model == "gpt-5-mini", "the answer echoes the requested model name (any name is served)"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.prompt_tokens_details is None, "no cached-token details: the ledger records 0 cached"

    loose = client.chat.completions.create(
        model="gpt-5-mini", messages=MESSAGES, response_format={"type": "json_object"}, max_tokens=150
    )
    if loose.choices[0].finish_reason == "stop":
        json.loads(content(loose))  # valid JSON, of whatever shape the model chose


def test_llama_server_limits_and_missing_endpoints(llama_server):
    """Output limits, and the endpoints this server does not have (images, embeddings without
    `--embedding true`), as the engine's per-endpoint configuration expects."""
    client = sdk(llama_server)
    capped = client.chat.completions.create(
        model="m", messages=MESSAGES, extra_body={"response_format": {"type": "json_object"}}, max_tokens=4
    )
    assert capped.usage is not None
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 4

    with pytest.raises(openai.InternalServerError) as no_embeddings:
        client.embeddings.create(model="text-embedding-3-small", input=["espresso grind size"])
    assert "embedding=True" in str(no_embeddings.value)

    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="gpt-image-2", prompt="a cup of espresso", size="256x256", n=1)

    listed = client.models.list().data
    assert len(listed) == 1 and listed[0].id.endswith(".gguf"), "one model, listed under its file path"


# -- the whole chain ----------------------------------------------------------------------------------


def metadata_of(result: Any) -> dict[str, dict[str, Any]]:
    """Asset name -> metadata values (plain Python values) of its materialization in `result`."""
    return {
        e.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


def failure_report(result: Any) -> str:
    """Every step failure of a run, for an assertion message."""
    lines = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            error = data.user_failure_data.description if data.user_failure_data else None
            lines.append(f"{event.step_key}: {error or (data.error.message if data.error else '?')}")
    return "\n".join(lines) or "(no step failures)"


def test_small_site_runs_all_six_stages_against_real_llama_server(fresh_llama_server, env: Env, tmp_path: Path):
    """Keywords to images in one run, the text stages answered by a real model on llama.cpp.

    The server has no json_schema, no embeddings and no images: the engine must find json_object with a
    schema for text, clustering must fall back to lexical, and images come from the offline provider."""
    from resources.llm import EndpointConfig, LLMResource, ModelOverride  # the engine's per-endpoint interface

    llama_server = fresh_llama_server

    keywords_file = tmp_path / "coffee.csv"
    keywords_file.write_text(COFFEE_KEYWORDS)
    site = env.add_site("coffee", keywords=keywords_file, name="Coffee Corner")
    env.store.update_site_settings(
        site.id,
        # Two ideas per cluster: a 135M model fails some articles (too short, cut off); one must get through.
        {"ideas_per_cluster": 2, "in_article_images": 1, "target_cluster_size": 4, "clustering_backend": "auto"},
    )
    env.resources["llm"] = LLMResource(
        provider="openai",
        base_url=llama_server,
        images=EndpointConfig(provider="offline"),
        image_size="256x256",
        # llama.cpp's server answers one request at a time: a second one in flight only waits in its queue,
        # and on a loaded CI machine an item's repairs can take minutes, so bound items loosely.
        concurrency=1,
        timeout_s=120,
        item_timeout_s=600,
        # The stages' checks (article length, names for every cluster, ...) refuse many of a 135M model's
        # answers; each refusal is repaired with the reason given to the model, up to this many times.
        repair_attempts=3,
        # A 135M model can loop inside a JSON list until the limit: keep every answer (and the test) short.
        models={
            "clusters": ModelOverride(max_output_tokens=400),
            "ideas": ModelOverride(max_output_tokens=600),
            "content": ModelOverride(max_output_tokens=1600),
            "image_prompts": ModelOverride(max_output_tokens=400),
        },
    )
    # A tiny model's answer may be refused by a stage's checks: tolerated, as long as the chain gets through.
    run_config = {"ops": {name: {"config": {"allowed_failures": 10}} for name in MODEL_ASSETS}}
    result = env.materialize("coffee", selection=SIX_ASSETS, run_config=run_config, raise_on_error=False)
    assert result.success, failure_report(result)
    metadata = metadata_of(result)
    assert set(metadata) == set(SIX_ASSETS), metadata.keys()
    failures = {name: metadata[name].get("failures", "") for name in MODEL_ASSETS}
    store = env.store

    # Stage 1: keywords.
    stored = store.keywords(site.id)
    expected = {normalize_keyword(line.split(",")[0]) for line in COFFEE_KEYWORDS.splitlines()[1:]}
    assert {k.normalized for k in stored} == expected

    # Stage 2: every keyword in exactly one cluster, every cluster named; grouping fell back to lexical and
    # naming used the json_object form (json_schema is refused by this server).
    clusters = {c.id: c for c in store.clusters(site.id) if c.keyword_count > 0}
    assert all(k.cluster_id in clusters for k in stored), "a keyword without a (non-empty) cluster"
    assert sum(c.keyword_count for c in clusters.values()) == len(stored)
    assert all(c.name and c.name.strip() for c in clusters.values()), [(c.key, c.name) for c in clusters.values()]
    meta = metadata["clusters"]
    # `structured_output` (or one per model, `structured_output[MODEL]`): the form the endpoint accepted.
    forms = {k: v for k, v in meta.items() if k.startswith("structured_output")}
    assert forms and all("json_object" in str(v) for v in forms.values()), meta
    backend = {k: v for k, v in meta.items() if "backend" in k}
    assert backend and any("lexical" in str(v) for v in backend.values()), meta
    fallback = [v for k, v in meta.items() if "fallback" in k and isinstance(v, int)]
    assert fallback, f"the count of fallback cluster names is in the metadata: {meta}"
    by_model = sum(1 for c in clusters.values() if c.provider == "openai")
    assert by_model + fallback[0] >= len([c for c in clusters.values() if c.key != "unclustered"]), meta

    # Stage 3: ideas, their target keywords taken from their own cluster.
    ideas = {idea.id: idea for idea in store.ideas(site.id)}
    assert ideas, failures["ideas"]
    for idea in ideas.values():
        own = {k.keyword for k in store.cluster_keywords(idea.cluster_id)}
        assert idea.target_keywords and set(idea.target_keywords) <= own, (idea.target_keywords, own)
        assert idea.provider == "openai"

    # Stage 4: at least one article written by the model, with H2 sections, about one of its idea's targets.
    with store.transaction() as session:
        rows = session.execute(select(ContentVariant, Content.idea_id).join(Content)).all()
        session.expunge_all()
    variants = [(variant, ideas[idea_id]) for variant, idea_id in rows]
    assert variants, failures["content"]
    for variant, idea in variants:
        assert variant.provider == "openai"
        assert "<h2>" in variant.body_html and read_sections(variant.body_html)
        targets = {normalize_keyword(k) for k in idea.target_keywords}
        assert normalize_keyword(variant.primary_keyword) in targets, (variant.primary_keyword, idea.target_keywords)

    # Stage 5 and 6: image prompts for an article; images rendered by the offline provider.
    prompts = store.image_prompts(site.id)
    prompted = {p.variant_id for p in prompts}
    assert prompted & {v.id for v, _ in variants}, failures["image_prompts"]
    assert all(p.provider == "openai" for p in prompts)
    images = store.images(site.id)
    assert images and {i.provider for i in images} == {"offline"}, failures["images"]
    assert all(Path(i.path).is_file() for i in images)

    # The ledger: the model's calls on record under the real endpoint; an answer a stage refused is never
    # on record as `ok` (each `ok` call of a stage produced stored output).
    calls = store.model_calls(partition="coffee")
    text_calls = [c for c in calls if c.stage in {"clusters", "ideas", "content", "image_prompts"}]
    assert text_calls and {c.provider for c in text_calls} == {"openai"}, [(c.stage, c.provider) for c in calls]
    for name in ("clusters", "ideas", "content", "image_prompts"):
        if "endpoint" in metadata[name]:  # the text endpoint, as users are shown it
            assert metadata[name]["endpoint"] == llama_server, metadata[name]
    if hasattr(ModelCall, "endpoint"):  # a column the ledger may not have yet
        assert {getattr(c, "endpoint", None) for c in text_calls} == {llama_server.rstrip("/")}
    assert all(c.provider == "offline" for c in calls if c.stage == "images"), "images are the offline provider's"
    assert all(c.input_tokens > 0 for c in text_calls if c.outcome == "ok")
    ok = {(c.stage, c.item_ref) for c in text_calls if c.outcome == "ok"}
    stored_refs = {
        "content": {f"idea:{idea.id}" for _, idea in variants},
        "ideas": {f"cluster:{clusters[idea.cluster_id].key}" for idea in ideas.values()},
        "image_prompts": {f"variant:{variant_id}" for variant_id in prompted},
    }
    for stage, ref in sorted(ok):
        if stage in stored_refs:
            assert ref in stored_refs[stage], f"an ok ledger row for {stage} {ref}, but nothing of it was stored"
    assert {i.image_prompt_id for i in images} == {p.id for p in prompts}
