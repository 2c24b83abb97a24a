"""The loopback server's provider modes, driven through the real openai SDK: answers written from the JSON
schema alone (`schema_only`), hostile strings, empty answers, providers without `json_schema` support
(llama.cpp's `json_object` server, text-only servers), missing embeddings and images routes, connections
closed without a response, and dead endpoints (`DeadEndpoint`).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal, get_args

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat
from openai.types.shared_params import ResponseFormatJSONSchema, ResponseFormatText

from pipeline.llm.offline import analyse_metrics, name_clusters
from pipeline.prompts import PromptRegistry
from pipeline.prompts.schemas import (
    ArticleDraft,
    ClusterName,
    ClusterNames,
    ContentType,
    IdeaBatch,
    IdeaDraft,
    ImagePromptSet,
    MetricsAnalysis,
)
from tests.openai_server import (
    BODY_TEXT_FIELDS,
    HOSTILE_STRINGS,
    DeadEndpoint,
    Fault,
    FaultPlan,
    LoopbackOpenAI,
    RequestRecord,
    embedded_schema,
    schema_answer,
)
from tests.sdk_params import chat_messages, content, json_object_format, json_schema_format
from tests.test_openai_server import ARTICLE_DATA, CLUSTER_DATA, IDEA_DATA, IMAGE_PROMPT_DATA, REPO

pytestmark = pytest.mark.backend_independent

MODEL = "gpt-test-mini"
METRICS_DATA = {
    "article": {"title": "Cold Brew Basics", "primary_keyword": "cold brew", "content_type": "guide"},
    "variants": [
        {"variant": "A", "title": "Cold Brew Basics", "meta_description": "", "opening": "", "metrics": {"ctr": 0.8}},
        {"variant": "B", "title": "Cold Brew, Fast", "meta_description": "", "opening": "", "metrics": {"ctr": 2.1}},
    ],
    "rule": {"metric": "ctr", "comparison": "<", "threshold": 1.0},
    "triggered_variants": ["A"],
    "instruction": None,
}
PROMPTS: dict[type[pydantic.BaseModel], tuple[str, dict[str, Any]]] = {
    ClusterNames: ("cluster_names", CLUSTER_DATA),
    IdeaBatch: ("ideas", IDEA_DATA),
    ArticleDraft: ("article", ARTICLE_DATA),
    ImagePromptSet: ("image_prompts", IMAGE_PROMPT_DATA),
    MetricsAnalysis: ("metrics_analysis", METRICS_DATA),
}
SCHEMAS = list(PROMPTS)
# Words of the data sent (the cluster's keywords, the idea's title...), which a schema-only answer never echoes.
DATA_WORDS = ("cold", "brew", "moka", "pot", "pour", "grind", "steep", "espresso", "c-1", "ctr")


def messages(schema: type[pydantic.BaseModel], data: dict[str, Any] | None = None) -> list[ChatCompletionMessageParam]:
    """The messages the pipeline sends for `schema`'s prompt, with its test data unless given."""
    prompt, default = PROMPTS[next(base for base in schema.__mro__ if base in PROMPTS)]
    return chat_messages(PromptRegistry().get(prompt).messages(default if data is None else data))


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackOpenAI) -> Iterator[LoopbackOpenAI]:
    """The module's server, reset to its defaults (composer answers, every format and endpoint)."""
    loopback.plan = FaultPlan()
    loopback.latency_ms = 0
    loopback.reset()
    yield loopback
    loopback.answers = "composer"
    loopback.structured_outputs = "json_schema"
    loopback.embeddings_available = True
    loopback.images_available = True


def sdk(base_url: str, *, timeout: float = 2.0, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="k", max_retries=max_retries, timeout=timeout)


def parse(server: LoopbackOpenAI, schema: type[pydantic.BaseModel], data: dict[str, Any] | None = None, **kwargs: Any):
    with sdk(server.base_url, **kwargs) as client:
        return client.chat.completions.parse(model=MODEL, messages=messages(schema, data), response_format=schema)


def strings(value: Any, name: str | None = None) -> Iterator[tuple[str | None, str]]:
    """Every (property name, string) in a JSON value; array items carry their array's name."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item, name)


def arrays(value: Any) -> Iterator[list[Any]]:
    if isinstance(value, list):
        yield value
        for item in value:
            yield from arrays(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from arrays(item)


def word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z]+", re.sub(r"<[^>]+>", " ", text)))


ENUM_FIELDS = {"content_type"}


# -- schema_only ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", SCHEMAS, ids=[s.__name__ for s in SCHEMAS])
def test_schema_only_answers_validate_against_the_projects_models(server, schema):
    server.answers = "schema_only"
    completion = parse(server, schema)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, schema) and completion.choices[0].finish_reason == "stop"
    answer = json.loads(completion.choices[0].message.content)
    assert schema.model_validate(answer) == parsed
    for values in arrays(answer):
        assert len(values) == 3
    for name, text in strings(answer):
        if name in ENUM_FIELDS:
            continue
        words = word_count(text)
        if name in BODY_TEXT_FIELDS or (name or "").endswith("_html"):
            assert 40 <= words <= 60, (name, text)
        else:
            assert 3 <= words <= 6, (name, text)
        assert not any(word in text.lower() for word in DATA_WORDS), "the data is never echoed"
    assert server.requests[0].response_format == "json_schema"


def test_schema_only_gives_plausible_integers_and_enum_values():
    answers = [schema_answer(IdeaBatch.model_json_schema(), "schema_only", seed) for seed in range(20)]
    ideas = [IdeaDraft.model_validate(idea) for answer in answers for idea in answer["ideas"]]
    assert all(100 <= idea.estimated_word_count <= 5000 for idea in ideas)
    types = {idea.content_type for idea in ideas}
    assert types <= set(get_args(ContentType)) and len(types) >= 4, "enum values vary, not always the first"


def test_schema_only_answers_are_deterministic_per_request(server):
    server.answers = "schema_only"
    first = parse(server, ArticleDraft).choices[0].message.content
    again = parse(server, ArticleDraft).choices[0].message.content
    other_data = {**ARTICLE_DATA, "cluster": {"name": "French Press"}}
    other = parse(server, ArticleDraft, other_data).choices[0].message.content
    assert first == again
    assert other != first, "the seed is the messages' hash"


class KeyedName(ClusterName):
    key: Literal["k-alpha", "k-beta", "k-gamma", "k-delta"]


class KeyedNames(ClusterNames):
    # Narrows the inherited field's item type (the schema sent has KeyedName's enum); mypy sees an invariant list.
    clusters: list[KeyedName]  # type: ignore[assignment]


class Labelled(pydantic.BaseModel):
    labels: list[Literal["red", "green", "blue", "cyan", "magenta"]]
    title: str


def test_schema_only_honours_an_enum_injected_into_a_property_and_ignores_the_data(server):
    server.answers = "schema_only"
    seen: set[str] = set()
    for index in range(6):
        data = {"clusters": [{"key": f"c-data-{index}", "keywords": ["cold brew"]}], "existing_names": []}
        completion = parse(server, KeyedNames, data)
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, KeyedNames) and len(parsed.clusters) == 3
        assert "c-data" not in completion.choices[0].message.content, "a data key outside the enum never appears"
        seen |= {c.key for c in parsed.clusters}
    assert len(seen) >= 3, "the enum's values are all used, not just the first"
    with sdk(server.base_url) as client:
        labelled = client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": "Label it."}], response_format=Labelled
        )
    parsed_labels = labelled.choices[0].message.parsed
    assert parsed_labels is not None
    labels = parsed_labels.labels
    assert len(labels) == 3 and len(set(labels)) == 3, "an array of enum strings gets distinct values"
    assert [r.schema for r in server.requests][-1] == "Labelled", "any schema name is answered"


class Point(pydantic.BaseModel):
    x: float = pydantic.Field(ge=1, le=2)
    y: int = pydantic.Field(gt=5, lt=8)


class Node(pydantic.BaseModel):
    label: str
    children: list[Node]


class Anything(pydantic.BaseModel):
    tree: Node
    points: list[Point] = pydantic.Field(min_length=4, max_length=5)
    maybe: Point | None
    maybe_text: str | None
    flags: list[bool] = pydantic.Field(max_length=2)
    counts: dict[str, int]
    fixed: Literal["only"]
    short: str = pydantic.Field(max_length=3)
    long_text: str = pydantic.Field(min_length=500)


def test_schema_only_follows_any_schema_refs_nullables_bounds_and_recursion():
    schema = Anything.model_json_schema()
    for seed in range(25):
        answer = Anything.model_validate(schema_answer(schema, "schema_only", seed))
        assert len(answer.tree.children) == 3 and all(child.children == [] for child in answer.tree.children)
        assert len(answer.points) == 4 and len(answer.flags) == 2
    plain = {
        "type": "object",
        "properties": {
            "n": {"type": "number"},
            "ok": {"type": "boolean"},
            "when": {"type": "string", "format": "date-time"},
            "ids": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 3}, "maxItems": 2},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
            "nothing": {"type": "null"},
            "either": {"type": ["integer", "null"]},
        },
        "required": ["n"],
    }
    answer = schema_answer(plain, "schema_only", 1)
    assert isinstance(answer["n"], float) and isinstance(answer["ok"], bool)
    assert re.fullmatch(r"2026-\d\d-\d\dT09:30:00Z", answer["when"])
    assert len(answer["ids"]) == 2 and all(1 <= i <= 3 for i in answer["ids"])
    assert isinstance(answer["pair"][0], str) and isinstance(answer["pair"][1], int)
    assert answer["nothing"] is None and isinstance(answer["either"], int)
    assert schema_answer({}, "schema_only") == {}
    with pytest.raises(ValueError, match=r"too many \$ref hops"):
        schema_answer({"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"})


def test_an_unanswerable_schema_is_a_400(server):
    server.answers = "schema_only"
    looping: dict[str, object] = {"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "Loop", "schema": looping},
    }
    with sdk(server.base_url) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], response_format=response_format
        )
    assert caught.value.code == "invalid_schema"


# -- hostile and empty ----------------------------------------------------------------------------------


def test_hostile_answers_carry_every_hostile_string_and_keep_enums_and_word_counts(server):
    server.answers = "hostile"
    completion = parse(server, ArticleDraft)
    article = completion.choices[0].message.parsed
    assert isinstance(article, ArticleDraft)
    found = list(strings(article.model_dump()))
    texts = [text for _, text in found]
    for hostile in HOSTILE_STRINGS:
        assert any(hostile in text for text in texts), repr(hostile[:40])
    assert any("\u0000" in text for text in texts) and any(len(text) >= 5000 for text in texts)
    for name, text in found:
        assert name is not None, "every string of an object is a property's (or its array's)"
        if name in BODY_TEXT_FIELDS or name.endswith("_html"):
            assert word_count(text.replace("A" * 5000, "")) >= 40, "body text still passes a minimum-word check"
    ideas = parse(server, IdeaBatch).choices[0].message.parsed
    assert all(idea.content_type in get_args(ContentType) for idea in ideas.ideas), "enums are not hostile"
    assert parse(server, ArticleDraft).choices[0].message.content == completion.choices[0].message.content


@pytest.mark.parametrize("schema", SCHEMAS, ids=[s.__name__ for s in SCHEMAS])
def test_empty_answers_have_empty_arrays_and_strings_but_every_key(server, schema):
    server.answers = "empty"
    completion = parse(server, schema)
    answer = json.loads(content(completion))
    assert isinstance(completion.choices[0].message.parsed, schema)
    assert set(answer) == set(schema.model_fields)
    assert all(values == [] for values in arrays(answer))
    assert all(text == "" for _, text in strings(answer))
    if schema is ClusterNames:
        assert answer == {"clusters": []}
    if schema is IdeaBatch:
        assert answer == {"ideas": []}


# -- structured-output support --------------------------------------------------------------------------


def strict_schema(schema: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The strict JSON schema the SDK sends for `schema` (its `title` is the class name)."""
    return json_schema_format(schema)["json_schema"]["schema"]


def test_a_json_object_server_answers_json_schema_with_llama_cpps_500(server):
    server.structured_outputs = "json_object"
    with pytest.raises(openai.InternalServerError) as caught:
        parse(server, ClusterNames, max_retries=2)
    error = caught.value
    assert error.status_code == 500 and error.code is None and error.type == "internal_server_error"
    assert "Input should be 'text' or 'json_object'" in error.message
    assert "'input': 'json_schema'" in error.message and "literal_error" in error.message
    assert set(error.response.json()["error"]) == {"message", "type", "param", "code"}
    assert [r.response_format for r in server.requests] == ["json_schema"] * 3, "the SDK retried the 500"


@pytest.mark.parametrize("structured_outputs", ["json_object", "json_schema"])
def test_json_object_with_a_schema_is_answered_following_it(server, structured_outputs):
    server.structured_outputs = structured_outputs
    response_format = json_object_format(strict_schema(ClusterNames))
    with sdk(server.base_url) as client:
        composed = client.chat.completions.create(
            model=MODEL, messages=messages(ClusterNames), response_format=response_format
        )
        server.answers = "schema_only"
        generated = client.chat.completions.create(
            model=MODEL, messages=messages(ClusterNames), response_format=response_format
        )
    composed_answer = ClusterNames.model_validate_json(content(composed))
    assert composed_answer == name_clusters(CLUSTER_DATA), "composer picked by the schema's title"
    assert len(ClusterNames.model_validate_json(content(generated)).clusters) == 3
    assert [(r.response_format, r.schema) for r in server.requests] == [("json_object", "ClusterNames")] * 2


def test_json_object_without_a_schema_follows_one_embedded_in_the_messages_or_answers_an_empty_object(server):
    server.structured_outputs = "json_object"
    prompt = messages(ClusterNames)
    instructions = f"{prompt[0]['content']}\nAnswer with JSON matching: {json.dumps(strict_schema(ClusterNames))}"
    with_schema: list[ChatCompletionMessageParam] = [{"role": "system", "content": instructions}, prompt[1]]
    with sdk(server.base_url) as client:
        bare = client.chat.completions.create(model=MODEL, messages=prompt, response_format={"type": "json_object"})
        embedded = client.chat.completions.create(
            model=MODEL, messages=with_schema, response_format={"type": "json_object"}
        )
        server.answers = "schema_only"
        text = client.chat.completions.create(model=MODEL, messages=with_schema)
    assert bare.choices[0].message.content == "{}"
    assert ClusterNames.model_validate_json(content(embedded)) == name_clusters(CLUSTER_DATA)
    assert len(ClusterNames.model_validate_json(content(text)).clusters) == 3
    assert [r.response_format for r in server.requests] == ["json_object", "json_object", None]


def test_the_schema_embedded_in_messages_is_not_taken_from_the_data_block():
    decoy = {"type": "object", "properties": {"decoy": {"type": "string"}}}
    data_only = [{"role": "user", "content": f"<data>\n{json.dumps(decoy)}\n</data>"}]
    assert embedded_schema(data_only) is None
    wrapped = [{"role": "system", "content": 'Use {"format": {"schema": ' + json.dumps(decoy) + "}} {not json"}]
    assert embedded_schema(wrapped) == decoy


def test_a_text_only_server_rejects_any_response_format_with_a_400(server):
    server.structured_outputs = "text"
    with sdk(server.base_url) as client:
        formats: tuple[ResponseFormat, ...] = ({"type": "json_object"}, json_schema_format(ClusterNames))
        for response_format in formats:
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(
                    model=MODEL, messages=messages(ClusterNames), response_format=response_format
                )
            assert caught.value.response.json() == {
                "error": {
                    "message": "response_format is not supported",
                    "type": "invalid_request_error",
                    "param": "response_format",
                    "code": None,
                }
            }
        plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
        typed = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], response_format={"type": "text"}
        )
    assert word_count(content(plain)) >= 40 and typed.choices[0].finish_reason == "stop"
    assert [r.response_format for r in server.requests] == ["json_object", "json_schema", None, "text"]


def test_an_unknown_response_format_type_is_a_400_on_a_json_schema_server(server):
    xml: ResponseFormatText = {"type": "xml"}  # type: ignore[typeddict-item]  # deliberately not an API type
    with sdk(server.base_url) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages(ClusterNames), response_format=xml)
    assert caught.value.code == "invalid_value" and caught.value.param == "response_format.type"


def test_metrics_analysis_has_a_composer_too(server):
    assert parse(server, MetricsAnalysis).choices[0].message.parsed == analyse_metrics(METRICS_DATA)


def test_modes_are_validated_and_request_records_stay_backwards_compatible(server):
    with pytest.raises(ValueError, match="unknown answers 'creative'"):
        server.answers = "creative"
    with pytest.raises(ValueError, match="unknown structured_outputs 'xml'"):
        server.structured_outputs = "xml"
    with pytest.raises(ValueError, match="unknown answers 'nonsense'"):
        LoopbackOpenAI(answers="nonsense")  # type: ignore[arg-type]  # deliberately invalid
    with pytest.raises(ValueError, match="unknown mode 'explode'"):
        DeadEndpoint("explode")  # type: ignore[arg-type]  # deliberately invalid
    assert RequestRecord("chat", None, None, None, 0.0).response_format is None


# -- missing endpoints ----------------------------------------------------------------------------------


def test_embeddings_unavailable_is_llama_cpps_500(server):
    server.embeddings_available = False
    with sdk(server.base_url) as client, pytest.raises(openai.InternalServerError) as caught:
        client.embeddings.create(model="emb", input="cold brew")
    assert caught.value.response.json() == {
        "error": {
            "message": "Llama model must be created with embedding=True to call this method",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    }
    server.embeddings_available = True
    with sdk(server.base_url) as client:
        assert len(client.embeddings.create(model="emb", input="cold brew").data) == 1


def test_images_unavailable_is_a_bare_404_even_without_a_key(server):
    server.images_available = False
    with sdk(server.base_url, max_retries=2) as client, pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="gpt-image-2", prompt="a cup", size="64x64")
    assert caught.value.response.json() == {"detail": "Not Found"}
    request = urllib.request.Request(f"{server.base_url}/images/generations", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as unauthenticated:
        urllib.request.urlopen(request, timeout=2)
    assert unauthenticated.value.code == 404
    assert [(r.path, r.model) for r in server.requests] == [("images", "gpt-image-2"), ("images", None)]


# -- connections closed or dead -------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("path", ["chat", "embeddings", "images"])
def test_the_close_fault_is_a_connection_error_not_a_timeout_nor_a_500(server, path):
    server.plan.push(Fault("close", path=path))
    uvicorn_log = _Records()
    logging.getLogger("uvicorn.error").addHandler(uvicorn_log)
    try:
        with sdk(server.base_url, timeout=2) as client:
            call = {
                "chat": lambda: client.chat.completions.parse(
                    model=MODEL, messages=messages(ClusterNames), response_format=ClusterNames
                ),
                "embeddings": lambda: client.embeddings.create(model="emb", input="cold brew"),
                "images": lambda: client.images.generate(model="img", prompt="a cup", size="64x64"),
            }[path]
            started = time.monotonic()
            with pytest.raises(openai.APIConnectionError) as caught:
                call()
            assert time.monotonic() - started < 1.0
            assert not isinstance(caught.value, openai.APITimeoutError)
            call()  # the server still answers the next request
    finally:
        logging.getLogger("uvicorn.error").removeHandler(uvicorn_log)
    assert [r.fault for r in server.requests] == ["close", None]
    assert not [r for r in uvicorn_log.records if r.levelno >= logging.WARNING], "uvicorn sent no 500 of its own"


def test_the_sdk_retries_a_closed_connection(server):
    server.plan.push("close", "close")
    assert parse(server, ClusterNames, max_retries=2).choices[0].message.parsed == name_clusters(CLUSTER_DATA)
    assert [r.fault for r in server.requests] == ["close", "close", None]


def test_a_hanging_dead_endpoint_times_out():
    with DeadEndpoint("hang") as dead, sdk(dead.base_url, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.parse(model=MODEL, messages=messages(ClusterNames), response_format=ClusterNames)
        assert 0.4 < time.monotonic() - started < 2.0
        assert dead.connections == 1
        assert dead.base_url.startswith("http://127.0.0.1:") and dead.base_url.endswith("/v1")


@pytest.mark.parametrize("mode", ["close", "refuse"])
def test_closing_and_refusing_dead_endpoints_are_connection_errors_not_timeouts(mode):
    with DeadEndpoint(mode) as dead, sdk(dead.base_url, timeout=2, max_retries=1) as client:
        started = time.monotonic()
        with pytest.raises(openai.APIConnectionError) as caught:
            client.chat.completions.parse(model=MODEL, messages=messages(ClusterNames), response_format=ClusterNames)
        assert not isinstance(caught.value, openai.APITimeoutError)
        assert time.monotonic() - started < 1.5, "no timeout was waited out (one retry backoff at most)"
        assert dead.connections == (2 if mode == "close" else 0)


def test_a_hanging_dead_endpoint_holds_many_connections_at_once_and_stops_cleanly():
    with DeadEndpoint("hang") as dead:
        port = dead.port
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(64)]
        try:
            for sock in sockets:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            deadline = time.monotonic() + 5
            while dead.connections < 64 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert dead.connections == 64
            sockets[0].settimeout(0.2)
            with pytest.raises(TimeoutError):
                sockets[0].recv(1)
        finally:
            for sock in sockets:
                sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- the separate process -------------------------------------------------------------------------------


def test_the_process_takes_the_mode_flags():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.openai_server",
            "--answers",
            "empty",
            "--structured-outputs",
            "json_object",
            "--no-embeddings",
            "--no-images",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        base_url = process.stdout.readline().strip().split()[1]
        with sdk(base_url) as client:
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.parse(model=MODEL, messages=messages(IdeaBatch), response_format=IdeaBatch)
            answer = client.chat.completions.create(
                model=MODEL,
                messages=messages(IdeaBatch),
                response_format=json_object_format(strict_schema(IdeaBatch)),
            )
            assert json.loads(content(answer)) == {"ideas": []}
            with pytest.raises(openai.InternalServerError):
                client.embeddings.create(model="emb", input="x")
            with pytest.raises(openai.NotFoundError):
                client.images.generate(model="img", prompt="a cup")
    finally:
        process.terminate()
        process.wait(timeout=10)
