"""Typed `openai` SDK request parameters for tests.

The SDK types chat messages and response formats as TypedDicts; the pipeline writes its prompts as plain
role/content dicts (`pipeline.prompts.Prompt.messages`). These helpers turn one into the other, unchanged
at run time (a TypedDict is a plain dict), so the tests send exactly what the pipeline would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pydantic
from openai import Omit
from openai.lib._parsing._completions import type_to_response_format_param
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)
from openai.types.shared_params import ResponseFormatJSONObject, ResponseFormatJSONSchema


def chat_message(role: str, content: str) -> ChatCompletionMessageParam:
    """`{"role": role, "content": content}` as the SDK's message type for `role`."""
    if role == "system":
        return ChatCompletionSystemMessageParam(role="system", content=content)
    if role == "user":
        return ChatCompletionUserMessageParam(role="user", content=content)
    if role == "assistant":
        return ChatCompletionAssistantMessageParam(role="assistant", content=content)
    raise ValueError(f"no chat message type for the role {role!r}")


def chat_messages(messages: Iterable[Mapping[str, str]]) -> list[ChatCompletionMessageParam]:
    """Role/content dicts (what the pipeline's prompts write) as the SDK's chat messages."""
    return [chat_message(message["role"], message["content"]) for message in messages]


def json_schema_format(schema: type[pydantic.BaseModel]) -> ResponseFormatJSONSchema:
    """The strict `json_schema` response format `chat.completions.parse(response_format=schema)` sends."""
    param = type_to_response_format_param(schema)
    assert not isinstance(param, Omit) and param["type"] == "json_schema", param
    return param


def json_object_format(schema: dict[str, Any]) -> ResponseFormatJSONObject:
    """`{"type": "json_object", "schema": schema}`: llama.cpp's grammar-constrained extension of `json_object`."""
    # The SDK's ResponseFormatJSONObject has no `schema` key (OpenAI's API has no such extension); the SDK
    # sends the dict as given.
    return {"type": "json_object", "schema": schema}  # type: ignore[typeddict-unknown-key]


def content(completion: ChatCompletion) -> str:
    """The first choice's `message.content`, which must be there (not a refusal, nor a tool call)."""
    text = completion.choices[0].message.content
    assert text is not None, completion
    return text
