"""A provider's Files and Batches endpoints (OpenAI Batch API) through the official SDK.

Batch work is a handful of requests per batch (upload, create, poll, download), made from a step, a
sensor tick or the CLI, so the SDK's synchronous client is used: no event loop is involved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import openai

from pipeline.llm.wire import ProviderError
from pipeline.models import BatchStatus

# The metadata key under which a batch carries its `model_batches.local_key` (reconciliation finds it by it).
METADATA_KEY = "pipeline_batch"
CHAT_ENDPOINT: Final = "/v1/chat/completions"
IMAGES_ENDPOINT: Final = "/v1/images/generations"
# How far back reconciliation looks for a batch created by a process that died before recording it.
RECONCILE_PAGES = 10

# Provider statuses as the store keeps them: everything before an outcome is `submitted`.
_STATUSES = {
    "validating": BatchStatus.SUBMITTED,
    "in_progress": BatchStatus.SUBMITTED,
    "finalizing": BatchStatus.SUBMITTED,
    "cancelling": BatchStatus.SUBMITTED,
    "completed": BatchStatus.COMPLETED,
    "failed": BatchStatus.FAILED,
    "expired": BatchStatus.EXPIRED,
    "cancelled": BatchStatus.CANCELLED,
}


@dataclass(frozen=True)
class RemoteBatch:
    """What the provider says about one batch."""

    id: str
    remote_status: str
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: str | None = None

    @property
    def status(self) -> BatchStatus:
        """The store's status for the provider's (unknown statuses count as still running)."""
        return _STATUSES.get(self.remote_status, BatchStatus.SUBMITTED)


class BatchAPI:
    """Upload, create, retrieve, find, download and cancel batches of Chat Completions requests."""

    def __init__(self, client: openai.OpenAI, secrets: Sequence[str] = ()):
        self.client = client
        self.secrets = tuple(secrets)

    def submit(
        self,
        lines: Sequence[Mapping[str, Any]],
        local_key: str,
        endpoint: Literal["/v1/chat/completions", "/v1/images/generations"] = CHAT_ENDPOINT,
    ) -> RemoteBatch:
        """Upload `lines` (requests to `endpoint`) as a JSONL file and create a batch carrying `local_key`
        in its metadata."""
        payload = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        upload = self._call(lambda: self.client.files.create(file=(f"{local_key}.jsonl", payload), purpose="batch"))
        batch = self._call(
            lambda: self.client.batches.create(
                input_file_id=upload.id,
                endpoint=endpoint,
                completion_window="24h",
                metadata={METADATA_KEY: local_key},
            )
        )
        return _remote(batch)

    def retrieve(self, remote_id: str) -> RemoteBatch:
        """The batch's current state."""
        return _remote(self._call(lambda: self.client.batches.retrieve(remote_id)))

    def cancel(self, remote_id: str) -> RemoteBatch:
        """Ask the provider to stop the batch (answered lines stay in its output)."""
        return _remote(self._call(lambda: self.client.batches.cancel(remote_id)))

    def find(self, local_key: str) -> RemoteBatch | None:
        """The batch carrying `local_key` in its metadata among the most recent ones, or None."""
        for batch in self._recent():
            if (batch.metadata or {}).get(METADATA_KEY) == local_key:
                return _remote(batch)
        return None

    def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        """The JSON lines of an output or error file (none for no file); an unreadable line is skipped
        here and its item, having no answer, goes back to pending."""
        if not file_id:
            return []
        content = self._call(lambda: self.client.files.content(file_id)).content
        found = []
        for text in content.decode("utf-8", errors="replace").splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                found.append(line)
        return found

    def _recent(self) -> Iterator[Any]:
        page = self._call(lambda: self.client.batches.list(limit=100))
        for _ in range(RECONCILE_PAGES):
            yield from page.data
            if not page.has_next_page():
                return
            page = self._call(page.get_next_page)

    def _call(self, request: Any) -> Any:
        try:
            return request()
        except openai.APIError as error:
            message = str(error)
            for secret in self.secrets:
                message = message.replace(secret, "[redacted]") if secret else message
            raise ProviderError("error", type(error).__name__, f"batch API: {message}") from error


def _remote(batch: Any) -> RemoteBatch:
    counts = getattr(batch, "request_counts", None)
    errors = getattr(batch, "errors", None)
    described = None
    if errors is not None and getattr(errors, "data", None):
        described = "; ".join(
            f"line {e.line}: {e.message}" if getattr(e, "line", None) else str(e.message) for e in errors.data[:5]
        )
    return RemoteBatch(
        id=batch.id,
        remote_status=batch.status,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        metadata=dict(batch.metadata or {}),
        total=getattr(counts, "total", 0) or 0,
        completed=getattr(counts, "completed", 0) or 0,
        failed=getattr(counts, "failed", 0) or 0,
        errors=described,
    )
