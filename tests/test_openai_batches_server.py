"""The loopback server's Files and Batches endpoints (`tests.openai_batches`), through the real `openai` SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion

from pipeline.llm.offline import write_article
from pipeline.llm.structured_output import chat_arguments, parse_answer
from pipeline.prompts import PromptRegistry
from pipeline.prompts.schemas import ArticleDraft
from tests.openai_server import Fault, FaultPlan, LoopbackOpenAI

pytestmark = pytest.mark.backend_independent

MODEL = "gpt-test-mini"
IDEA = {
    "title": "How to Use a Moka Pot: A Step-by-Step Guide",
    "angle": "A how-to for beginners.",
    "content_type": "how-to",
    "outline": ["How to Use a Moka Pot?", "Moka Pot Ratio", "Common Mistakes to Avoid"],
    "target_keywords": ["how to use a moka pot", "moka pot ratio"],
    "estimated_word_count": 1200,
}


def article_data(title: str = str(IDEA["title"])) -> dict[str, Any]:
    """Data of the `article` prompt for an idea titled `title`."""
    return {
        "idea": {**IDEA, "title": title},
        "cluster": {"name": "Moka Pot"},
        "taxonomy": {"categories": ["Brewing"], "tags": []},
    }


def chat_body(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the pipeline sends for an `article` call (`chat_arguments`, `extra_body` merged)."""
    messages = PromptRegistry().get("article").messages(data)
    arguments = chat_arguments(messages, MODEL, 4000, ArticleDraft)
    extra = arguments.pop("extra_body")
    return {**arguments, **extra}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def request_line(custom_id: str, body: dict[str, Any], url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def article_lines(count: int) -> list[dict[str, Any]]:
    return [request_line(f"item-{i}", chat_body(article_data(f"Moka Pot Guide {i}"))) for i in range(count)]


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI() as server:
        yield server


@pytest.fixture
def server(loopback: LoopbackOpenAI) -> LoopbackOpenAI:
    """The module's server with no faults, no batches and the default batch knobs."""
    loopback.plan = FaultPlan()
    loopback.latency_ms = 0
    loopback.reset()
    settings = loopback.batch
    settings.polls_until_done = 3
    settings.fail_custom_ids, settings.invalid_custom_ids = set(), set()
    settings.fail_rate, settings.expired_in_error_file = 0.0, False
    return loopback


@pytest.fixture
def sdk(server: LoopbackOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test", timeout=5, max_retries=0) as client:
        yield client


def submit(sdk: openai.OpenAI, lines: list[dict[str, Any]], **kwargs: Any) -> Any:
    uploaded = sdk.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
    return sdk.batches.create(
        input_file_id=uploaded.id,
        endpoint=kwargs.pop("endpoint", "/v1/chat/completions"),
        completion_window="24h",
        **kwargs,
    )


def results(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).content.decode().splitlines()]


def test_upload_create_poll_and_read_validated_answers(server: LoopbackOpenAI, sdk: openai.OpenAI) -> None:
    lines = article_lines(3)
    uploaded = sdk.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.object == "file" and uploaded.purpose == "batch"
    assert uploaded.bytes == len(jsonl(lines)) and uploaded.filename == "batch.jsonl" and uploaded.status == "processed"
    assert sdk.files.retrieve(uploaded.id) == uploaded
    assert sdk.files.content(uploaded.id).content == jsonl(lines)

    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id.startswith("batch_") and batch.object == "batch" and batch.status == "validating"
    assert batch.request_counts is not None and batch.request_counts.total == 3
    assert batch.output_file_id is None and batch.error_file_id is None and batch.model == MODEL
    statuses = [sdk.batches.retrieve(batch.id) for _ in range(3)]
    assert [b.status for b in statuses] == ["in_progress", "finalizing", "completed"]
    assert [b.request_counts.completed for b in statuses if b.request_counts] == [1, 2, 3]
    done = statuses[-1]
    assert done.completed_at and done.in_progress_at and done.finalizing_at and done.error_file_id is None
    assert sdk.batches.retrieve(batch.id).status == "completed"  # stays

    output = sdk.files.retrieve(done.output_file_id or "")
    assert output.purpose == "batch_output"
    answered = results(sdk, done.output_file_id)
    assert [r["custom_id"] for r in answered] == ["item-0", "item-1", "item-2"]
    for index, result in enumerate(answered):
        assert result["id"].startswith("batch_req_") and result["error"] is None
        assert result["response"]["status_code"] == 200 and result["response"]["request_id"]
        completion = ChatCompletion.model_validate(result["response"]["body"])
        content = completion.choices[0].message.content or ""
        assert parse_answer(ArticleDraft, content) == write_article(article_data(f"Moka Pot Guide {index}"))
        assert completion.usage is not None and completion.usage.completion_tokens == len(content) // 4

    # The same answer and the same usage as the real-time endpoint.
    messages = PromptRegistry().get("article").messages(article_data("Moka Pot Guide 1"))
    realtime = sdk.chat.completions.create(**chat_arguments(messages, MODEL, 4000, ArticleDraft))
    batched = ChatCompletion.model_validate(answered[1]["response"]["body"])
    assert batched.choices[0].message.content == realtime.choices[0].message.content
    assert parse_answer(ArticleDraft, realtime.choices[0].message.content or "") == write_article(
        article_data("Moka Pot Guide 1")
    )
    assert batched.usage and realtime.usage
    assert batched.usage.prompt_tokens == realtime.usage.prompt_tokens
    assert batched.usage.completion_tokens == realtime.usage.completion_tokens

    [info] = server.batches()
    assert (info.id, info.status, info.custom_ids) == (batch.id, "completed", ("item-0", "item-1", "item-2"))
    [create] = [r for r in server.requests if r.endpoint == "POST /v1/batches"]
    assert create.path == "batches" and create.custom_ids == ("item-0", "item-1", "item-2") and create.model == MODEL
    assert server.log.by_path() == {"files": 5, "batches": 5, "chat": 1}


def test_metadata_round_trips_and_polls_until_done_zero_completes_at_once(server, sdk) -> None:
    server.batch.polls_until_done = 0
    metadata = {"run_id": "run-42", "stage": "articles"}
    batch = submit(sdk, article_lines(2), metadata=metadata)
    assert batch.status == "completed" and batch.metadata == metadata
    assert batch.request_counts.completed == 2 and batch.output_file_id is not None
    assert sdk.batches.retrieve(batch.id).metadata == metadata
    assert server.batches()[0].metadata == metadata


def test_polls_until_done_one_completes_at_the_first_retrieve(server, sdk) -> None:
    server.batch.polls_until_done = 1
    batch = submit(sdk, article_lines(1))
    assert batch.status == "validating" and sdk.batches.retrieve(batch.id).status == "completed"


def test_list_is_newest_first_with_cursor_pagination(server, sdk) -> None:
    created = [submit(sdk, article_lines(1), metadata={"n": str(i)}).id for i in range(5)]
    first = sdk.batches.list(limit=2)
    assert [b.id for b in first.data] == created[::-1][:2] and first.has_more
    assert first.first_id == created[4] and first.last_id == created[3]
    second = sdk.batches.list(limit=2, after=first.last_id)
    assert [b.id for b in second.data] == created[2:0:-1] and second.has_more
    last = sdk.batches.list(limit=2, after=second.last_id)
    assert [b.id for b in last.data] == [created[0]] and not last.has_more
    assert [b.id for b in sdk.batches.list(limit=2)] == created[::-1]  # the SDK's auto-pagination


def test_failed_lines_go_to_the_error_file(server, sdk) -> None:
    server.batch.polls_until_done = 0
    server.batch.fail_custom_ids = {"item-1"}
    batch = submit(sdk, article_lines(3))
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert [r["custom_id"] for r in results(sdk, batch.output_file_id)] == ["item-0", "item-2"]
    [failed] = results(sdk, batch.error_file_id)
    assert failed["custom_id"] == "item-1" and failed["response"]["status_code"] == 500
    assert failed["response"]["body"]["error"]["type"] == "server_error"


def test_a_seeded_fail_rate_fails_the_same_lines_every_time(server, sdk) -> None:
    server.batch.polls_until_done, server.batch.fail_rate, server.batch.fail_seed = 0, 0.5, 3
    first = {r["custom_id"] for r in results(sdk, submit(sdk, article_lines(8)).error_file_id)}
    server.reset()
    again = {r["custom_id"] for r in results(sdk, submit(sdk, article_lines(8)).error_file_id)}
    assert first == again and 0 < len(first) < 8


def test_a_line_the_chat_endpoint_refuses_is_in_the_error_file_with_its_status(server, sdk) -> None:
    server.batch.polls_until_done = 0
    unknown = {**chat_body(article_data()), "response_format": {"type": "json_schema", "json_schema": {"name": "Nope"}}}
    batch = submit(sdk, [request_line("bad", unknown), *article_lines(1)])
    [failed] = results(sdk, batch.error_file_id)
    assert failed["response"]["status_code"] == 400 and failed["response"]["body"]["error"]["code"] == "unknown_schema"
    assert batch.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}


def test_invalid_lines_answer_200_with_content_the_schema_rejects(server, sdk) -> None:
    server.batch.polls_until_done = 0
    server.batch.invalid_custom_ids = {"item-0"}
    batch = submit(sdk, article_lines(2))
    assert batch.error_file_id is None and batch.request_counts.completed == 2
    invalid, valid = (ChatCompletion.model_validate(r["response"]["body"]) for r in results(sdk, batch.output_file_id))
    with pytest.raises(pydantic.ValidationError):
        parse_answer(ArticleDraft, invalid.choices[0].message.content or "")
    parse_answer(ArticleDraft, valid.choices[0].message.content or "")


def test_hostile_answers_mode_applies_to_batched_lines(server, sdk) -> None:
    server.batch.polls_until_done, server.answers = 0, "hostile"
    try:
        [result] = results(sdk, submit(sdk, article_lines(1)).output_file_id)
    finally:
        server.answers = "composer"
    content = ChatCompletion.model_validate(result["response"]["body"]).choices[0].message.content or ""
    assert "<script>" in content or "javascript:" in content


@pytest.mark.parametrize("in_error_file", [False, True])
def test_expire_next_expires_with_the_first_half_answered(server, sdk, in_error_file: bool) -> None:
    server.batch.expire_next, server.batch.expired_in_error_file = True, in_error_file
    batch = submit(sdk, article_lines(4))
    for _ in range(3):
        batch = sdk.batches.retrieve(batch.id)
    assert batch.status == "expired" and batch.expired_at and batch.completed_at is None
    assert [r["custom_id"] for r in results(sdk, batch.output_file_id)] == ["item-0", "item-1"]
    expired = results(sdk, batch.error_file_id)
    if in_error_file:
        assert [r["custom_id"] for r in expired] == ["item-2", "item-3"]
        assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in expired)
        assert batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 2}
    else:
        assert batch.error_file_id is None
        assert batch.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 0}
    assert submit(sdk, article_lines(1)).status == "validating" and not server.batch.expire_next  # only the next


def test_cancel_keeps_the_lines_already_answered(server, sdk) -> None:
    batch = submit(sdk, article_lines(3))
    assert sdk.batches.retrieve(batch.id).request_counts.completed == 1
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = sdk.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    assert cancelled.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 0}
    assert [r["custom_id"] for r in results(sdk, cancelled.output_file_id)] == ["item-0"]
    assert sdk.batches.retrieve(batch.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(batch.id)


def test_cancel_before_any_answer_leaves_no_output_file(server, sdk) -> None:
    batch = submit(sdk, article_lines(2))
    sdk.batches.cancel(batch.id)
    cancelled = sdk.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.output_file_id is None and cancelled.error_file_id is None


@pytest.mark.parametrize(
    ("bad_line", "code"),
    [
        ("not json", "invalid_json_line"),
        ({"custom_id": "item-0", "method": "POST", "url": "/v1/chat/completions", "body": {}}, "duplicate_custom_id"),
        ({"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}, "invalid_method"),
        ({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}, "invalid_url"),
        ({"method": "POST", "url": "/v1/chat/completions", "body": {}}, "missing_required_parameter"),
        ({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions"}, "missing_required_parameter"),
    ],
)
def test_a_malformed_input_file_fails_the_batch_naming_the_line(server, sdk, bad_line: Any, code: str) -> None:
    good = article_lines(2)
    raw = jsonl(good[:1]) + (bad_line if isinstance(bad_line, str) else json.dumps(bad_line)).encode() + b"\n"
    raw += jsonl(good[1:])
    uploaded = sdk.files.create(file=("batch.jsonl", raw), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed = sdk.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.failed_at and failed.output_file_id is None
    assert failed.errors is not None and failed.errors.data
    [error] = failed.errors.data
    assert (error.code, error.line) == (code, 2) and error.message and "Line 2" in error.message


def test_embeddings_batches_answer_like_the_embeddings_endpoint(server, sdk) -> None:
    server.batch.polls_until_done = 0
    body = {"model": "text-embedding-3-small", "input": ["moka pot ratio"], "encoding_format": "float"}
    batch = submit(sdk, [request_line("e-0", body, "/v1/embeddings")], endpoint="/v1/embeddings")
    [result] = results(sdk, batch.output_file_id)
    realtime = sdk.embeddings.create(model="text-embedding-3-small", input=["moka pot ratio"], encoding_format="float")
    assert result["response"]["body"]["data"][0]["embedding"] == realtime.data[0].embedding


def test_create_rejects_a_bad_request(server, sdk) -> None:
    uploaded = sdk.files.create(file=("batch.jsonl", jsonl(article_lines(1))), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"n": 1}
        )
    assert server.batches() == []


def test_files_delete_and_unauthenticated_requests(server, sdk) -> None:
    uploaded = sdk.files.create(file=("batch.jsonl", b"{}\n"), purpose="batch")
    assert sdk.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(uploaded.id)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{server.base_url}/batches", timeout=2)
    assert caught.value.code == 401 and json.loads(caught.value.read())["error"]["code"] == "missing_api_key"


def test_faults_apply_to_batch_requests_and_the_sdk_retries(server) -> None:
    server.plan.push("rate_limit")
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=2) as sdk:
        assert sdk.batches.list().data == []
    assert [(r.path, r.fault) for r in server.requests] == [("batches", "rate_limit"), ("batches", None)]


def test_more_polls_stay_in_progress_then_finalize(server, sdk) -> None:
    server.batch.polls_until_done = 5
    batch = submit(sdk, article_lines(5))
    statuses = [sdk.batches.retrieve(batch.id) for _ in range(5)]
    assert [b.status for b in statuses] == ["in_progress", "in_progress", "in_progress", "finalizing", "completed"]
    assert [b.request_counts.completed for b in statuses if b.request_counts] == [1, 2, 3, 4, 5]


def test_a_faulted_retrieve_does_not_advance_the_batch(server) -> None:
    with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=1) as sdk:
        batch = submit(sdk, article_lines(1))
        server.plan.push(Fault("server_error", path="batches"))
        assert sdk.batches.retrieve(batch.id).status == "in_progress"  # the retried request advanced it once
    retrieves = [r.fault for r in server.requests if r.endpoint == f"GET /v1/batches/{batch.id}"]
    assert retrieves == ["server_error", None]
