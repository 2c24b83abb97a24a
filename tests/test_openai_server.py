"""The loopback OpenAI server, driven through the real openai SDK (sync and async) over HTTP.

These tests pin down what the SDK actually does with each scripted fault, which is what the engine's
error handling is written against.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam
from PIL import Image

from pipeline.llm.offline import describe_images, name_clusters, plan_ideas, write_article
from pipeline.prompts import PromptRegistry
from pipeline.prompts.schemas import ArticleDraft, ClusterNames, IdeaBatch, ImagePromptSet
from tests.openai_server import Fault, FaultPlan, LoopbackOpenAI
from tests.sdk_params import chat_messages, content

pytestmark = pytest.mark.backend_independent

REPO = Path(__file__).resolve().parents[1]
MODEL = "gpt-test-mini"

CLUSTER_DATA = {
    "existing_names": ["Moka Pot"],
    "clusters": [
        {
            "key": "c-1",
            "keywords": ["cold brew ratio", "how long to steep cold brew", "cold brew <concentrate>"],
            "dominant_intent": "informational",
        }
    ],
}
IDEA_DATA = {
    "cluster": {"name": "Moka Pot", "description": ""},
    "count": 2,
    "keywords": [{"keyword": k} for k in ["moka pot vs espresso machine", "how to use a moka pot", "moka pot ratio"]],
}
IDEA = {
    "title": "How to Use a Moka Pot: A Step-by-Step Guide",
    "angle": "A how-to for beginners.",
    "content_type": "how-to",
    "outline": ["How to Use a Moka Pot?", "Moka Pot Ratio", "Common Mistakes to Avoid"],
    "target_keywords": ["how to use a moka pot", "moka pot ratio"],
    "estimated_word_count": 1200,
}
ARTICLE_DATA = {"idea": IDEA, "cluster": {"name": "Moka Pot"}, "taxonomy": {"categories": ["Brewing"], "tags": []}}
IMAGE_PROMPT_DATA = {
    "title": "Pour Over Basics",
    "primary_keyword": "pour over",
    "sections": [{"heading": h, "text": "..."} for h in ["Grind Size", "Water Temperature", "Brew Time"]],
    "max_in_article": 2,
}
CASES = [
    ("cluster_names", ClusterNames, CLUSTER_DATA, name_clusters),
    ("ideas", IdeaBatch, IDEA_DATA, plan_ideas),
    ("article", ArticleDraft, ARTICLE_DATA, write_article),
    ("image_prompts", ImagePromptSet, IMAGE_PROMPT_DATA, describe_images),
]


def messages(prompt: str = "cluster_names", data: dict[str, Any] = CLUSTER_DATA) -> list[ChatCompletionMessageParam]:
    """The messages the pipeline really sends for `prompt` with `data`."""
    return chat_messages(PromptRegistry().get(prompt).messages(data))


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackOpenAI) -> LoopbackOpenAI:
    """The module's server with an empty log, no faults and no latency."""
    loopback.plan = FaultPlan()
    loopback.latency_ms = 0
    loopback.reset()
    return loopback


def client(server: LoopbackOpenAI, *, timeout: float = 2.0, max_retries: int = 2) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", timeout=timeout, max_retries=max_retries)


def parse(sdk: openai.OpenAI, schema: type[pydantic.BaseModel] = ClusterNames, **kwargs: Any):
    prompt = {ClusterNames: "cluster_names", IdeaBatch: "ideas", ArticleDraft: "article"}.get(schema, "image_prompts")
    data = {ClusterNames: CLUSTER_DATA, IdeaBatch: IDEA_DATA, ArticleDraft: ARTICLE_DATA}.get(schema, IMAGE_PROMPT_DATA)
    return sdk.chat.completions.parse(model=MODEL, messages=messages(prompt, data), response_format=schema, **kwargs)


def faults(server: LoopbackOpenAI) -> list[str | None]:
    return [r.fault for r in server.requests]


# -- answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prompt", "schema", "data", "composer"), CASES, ids=[c[0] for c in CASES])
def test_parse_returns_the_offline_composers_answer_for_the_data_sent(server, prompt, schema, data, composer):
    with client(server) as sdk:
        completion = sdk.chat.completions.parse(model=MODEL, messages=messages(prompt, data), response_format=schema)
    choice = completion.choices[0]
    assert isinstance(choice.message.parsed, schema)
    assert choice.message.parsed == composer(data)
    assert choice.finish_reason == "stop" and choice.message.refusal is None
    assert completion.model == MODEL
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens == len(content(completion)) // 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    [record] = server.requests
    assert (record.path, record.model, record.schema, record.fault) == ("chat", MODEL, schema.__name__, None)


def test_the_sdk_sends_the_pydantic_class_name_as_the_schema_name(server):
    with client(server) as sdk:
        parse(sdk, IdeaBatch)
    assert server.requests[0].schema == "IdeaBatch"


def test_data_with_angle_brackets_survives_the_escaped_round_trip(server):
    with client(server) as sdk:
        parsed = parse(sdk).choices[0].message.parsed
    assert "“cold brew <concentrate>”" in parsed.clusters[0].description


def test_a_repeated_system_prompt_reports_cached_tokens(server):
    with client(server) as sdk:
        first = parse(sdk).usage.prompt_tokens_details.cached_tokens
        second = parse(sdk).usage.prompt_tokens_details.cached_tokens
    system = messages()[0]["content"]
    assert isinstance(system, str)
    assert first == 0 and second == len(system) // 4 > 0


def test_an_unknown_schema_name_is_a_bad_request_error(server):
    class Unrelated(pydantic.BaseModel):
        value: str

    with client(server) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.parse(model=MODEL, messages=messages(), response_format=Unrelated)
    assert caught.value.status_code == 400 and caught.value.code == "unknown_schema"
    assert len(server.requests) == 1


def test_max_completion_tokens_below_the_answer_truncates_it(server):
    with client(server) as sdk, pytest.raises(openai.LengthFinishReasonError) as caught:
        parse(sdk, ArticleDraft, max_completion_tokens=50)
    assert caught.value.completion.choices[0].finish_reason == "length"
    usage = caught.value.completion.usage
    assert usage is not None
    assert usage.completion_tokens == 50


# -- faults -------------------------------------------------------------------------------------------


def test_a_429_with_retry_after_is_retried_and_succeeds(server):
    server.plan.push("rate_limit")
    with client(server, max_retries=2) as sdk:
        completion = parse(sdk)
    assert completion.choices[0].message.parsed == name_clusters(CLUSTER_DATA)
    assert faults(server) == ["rate_limit", None]
    first, second = server.requests
    assert second.time - first.time < 0.3, "retry-after-ms: 10 is honoured instead of the 0.375-0.5 s backoff"


def test_a_429_past_the_retries_raises_rate_limit_error_with_its_code(server):
    server.plan.push("rate_limit", "rate_limit")
    with client(server, max_retries=1) as sdk, pytest.raises(openai.RateLimitError) as caught:
        parse(sdk)
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after-ms"] == "10"
    assert faults(server) == ["rate_limit", "rate_limit"]


def test_a_client_that_hangs_up_before_its_body_arrives_is_still_logged(server):
    # An SDK whose timeout runs out before a busy server reads the body counts that attempt; so must the log,
    # or the ledger's attempts and the server's requests disagree under load.
    with socket.create_connection((server.host, server.port)) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
            b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"model": '
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while not server.log.records() and time.monotonic() < deadline:
        time.sleep(0.02)
    [record] = server.log.records()
    assert record.path == "chat" and record.client_gone and record.fault is None


def test_a_500_is_retried_and_succeeds(server):
    server.plan.push("server_error")
    with client(server, max_retries=1) as sdk:
        assert parse(sdk).choices[0].message.parsed is not None
    assert faults(server) == ["server_error", None]
    assert server.log.by_fault() == {"server_error": 1}


def test_a_hang_past_the_client_timeout_raises_api_timeout_error_after_the_retries(server):
    server.plan.push(Fault("hang", hang_seconds=2), Fault("hang", hang_seconds=2))
    started = time.monotonic()
    with client(server, timeout=0.5, max_retries=1) as sdk, pytest.raises(openai.APITimeoutError):
        parse(sdk)
    assert faults(server) == ["hang", "hang"]
    assert time.monotonic() - started < 3.0, "the client gave up on each attempt, not waiting out the 2 s hang"


def test_a_non_json_200_raises_a_bare_json_decode_error_without_retry(server):
    server.plan.push("non_json")
    with client(server, max_retries=2) as sdk, pytest.raises(json.JSONDecodeError) as caught:
        parse(sdk)
    assert not isinstance(caught.value, openai.OpenAIError)
    assert faults(server) == ["non_json"]


def test_schema_invalid_content_makes_parse_raise_pydantic_validation_error(server):
    server.plan.push("schema_invalid")
    with client(server) as sdk, pytest.raises(pydantic.ValidationError) as caught:
        parse(sdk)
    assert not isinstance(caught.value, openai.OpenAIError)
    assert caught.value.title == "ClusterNames"
    assert faults(server) == ["schema_invalid"]


def test_a_truncated_answer_raises_length_finish_reason_error(server):
    server.plan.push("truncated")
    with client(server) as sdk, pytest.raises(openai.LengthFinishReasonError) as caught:
        parse(sdk)
    truncated = caught.value.completion.choices[0].message.content
    assert truncated is not None
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated)
    assert faults(server) == ["truncated"]


def test_a_refusal_sets_message_refusal_and_leaves_parsed_none(server):
    server.plan.push("refusal")
    with client(server) as sdk:
        message = parse(sdk).choices[0].message
    assert message.refusal == "I can't help with that"
    assert message.parsed is None and message.content is None


def test_a_401_raises_authentication_error_without_retry(server):
    server.plan.push("unauthorized")
    with client(server, max_retries=3) as sdk, pytest.raises(openai.AuthenticationError) as caught:
        parse(sdk)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert faults(server) == ["unauthorized"]


def test_a_400_raises_bad_request_error_without_retry(server):
    server.plan.push("bad_request")
    with client(server, max_retries=3) as sdk, pytest.raises(openai.BadRequestError):
        parse(sdk)
    assert faults(server) == ["bad_request"]


def test_requests_without_a_bearer_token_get_an_openai_style_401(server):
    request = urllib.request.Request(
        f"{server.base_url}/embeddings", data=b'{"input": "x", "model": "m"}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=2)
    assert caught.value.code == 401
    error = json.loads(caught.value.read())["error"]
    assert set(error) >= {"message", "type", "code"}
    assert server.log.by_path() == {"unauthenticated": 1}


def test_faults_limited_to_a_path_or_schema_wait_for_a_matching_request(server):
    server.plan.push(Fault("server_error", path="images"), Fault("bad_request", schema="IdeaBatch"))
    with client(server, max_retries=0) as sdk:
        parse(sdk, ClusterNames)
        sdk.embeddings.create(model="emb", input="cold brew")
        with pytest.raises(openai.BadRequestError):
            parse(sdk, IdeaBatch)
        with pytest.raises(openai.InternalServerError):
            sdk.images.generate(model="img", prompt="a cup", size="64x64")
    assert faults(server) == [None, None, "bad_request", "server_error"]
    assert server.plan.queue == []


def test_a_seeded_fault_rate_is_reproducible(server):
    def outcomes(seed: int) -> list[str | None]:
        server.reset()
        server.plan = FaultPlan(rate=0.4, kinds=("server_error", "bad_request", "refusal"), seed=seed)
        with client(server, max_retries=0) as sdk:
            for _ in range(15):
                with contextlib.suppress(openai.APIStatusError):
                    parse(sdk)
        return faults(server)

    first = outcomes(seed=7)
    assert first == outcomes(seed=7)
    assert first != outcomes(seed=8)
    assert 2 <= sum(f is not None for f in first) <= 12
    plan = FaultPlan(rate=0.2, kinds=("rate_limit", "truncated"), seed=3)
    drawn = [plan.next_fault("images", None) for _ in range(200)]
    assert {f.kind for f in drawn if f} == {"rate_limit"}, "chat-only kinds never hit images"


# -- images and embeddings ----------------------------------------------------------------------------


def test_images_generate_returns_a_base64_png_that_pil_decodes(server):
    with client(server) as sdk:
        response = sdk.images.generate(model="gpt-image-2", prompt="a cup of cold brew", size="256x192")
    assert response.data is not None
    encoded = response.data[0].b64_json
    assert encoded is not None
    png = base64.b64decode(encoded)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (256, 192)
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert server.requests[0].path == "images" and server.requests[0].model == "gpt-image-2"


def test_embeddings_put_similar_phrases_closer(server):
    phrases = ["cold brew coffee", "cold brew recipe", "dog leash"]
    with client(server) as sdk:
        default = sdk.embeddings.create(model="text-embedding-3-small", input=phrases)
        floats = sdk.embeddings.create(model="text-embedding-3-small", input=phrases, encoding_format="float")
    vectors = [d.embedding for d in default.data]
    for vector, same in zip(vectors, floats.data, strict=True):
        assert len(vector) == 256 and math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vector, same.embedding, strict=True))

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert default.usage.prompt_tokens > 0


# -- concurrency and the separate process -------------------------------------------------------------


def test_the_async_client_overlaps_requests_under_latency(server):
    server.latency_ms = 200
    server.plan.push("rate_limit")

    async def run() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", timeout=2, max_retries=2) as sdk:
            calls = [
                sdk.chat.completions.parse(model=MODEL, messages=messages(), response_format=ClusterNames)
                for _ in range(16)
            ]
            return await asyncio.gather(*calls)

    started = time.monotonic()
    results = asyncio.run(run())
    assert time.monotonic() - started < 2.0, "16 requests of 200 ms each ran concurrently (3.2 s in series)"
    assert all(r.choices[0].message.parsed == name_clusters(CLUSTER_DATA) for r in results)
    assert server.log.by_path() == {"chat": 17} and server.log.by_fault() == {"rate_limit": 1}


def test_the_module_runs_as_a_process_and_announces_its_url():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_server", "--port", "0", "--fault-rate", "1", "--fault-kinds", "refusal"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1")
        with openai.OpenAI(base_url=line.split()[1], api_key="test-key", timeout=2, max_retries=0) as sdk:
            message = parse(sdk).choices[0].message
        assert message.refusal == "I can't help with that"
    finally:
        process.terminate()
        process.wait(timeout=10)
