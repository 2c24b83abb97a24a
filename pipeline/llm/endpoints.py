"""Where each kind of model call goes: text (structured answers), embeddings and images.

Each kind names its endpoint: a provider (`openai` for OpenAI and compatible servers, `offline`), a base
URL and the name of the environment variable holding its key. A field is taken from the first place that
sets it: the run (the LLM resource's config: run config or the deployment's code), then the site's
settings (`endpoints`), then the deployment's environment. Embeddings and images inherit whatever the text
endpoint resolved to unless they set their own, so one `OPENAI_BASE_URL` points everything at one server,
and `PIPELINE_IMAGES_PROVIDER=offline` keeps images local beside a real text model.

Environment variables, per kind:

| kind | provider | base URL | key variable name |
|---|---|---|---|
| text | `PIPELINE_LLM_PROVIDER` | `OPENAI_BASE_URL` | `PIPELINE_LLM_API_KEY_ENV` (default `OPENAI_API_KEY`) |
| embeddings | `PIPELINE_EMBEDDINGS_PROVIDER` | `PIPELINE_EMBEDDINGS_BASE_URL` | `PIPELINE_EMBEDDINGS_API_KEY_ENV` |
| images | `PIPELINE_IMAGES_PROVIDER` | `PIPELINE_IMAGES_BASE_URL` | `PIPELINE_IMAGES_API_KEY_ENV` |

With no provider set anywhere, text uses `openai` when its key variable or a base URL is set, else
`offline`. Keys are read from the environment when the engine is built and never enter config, rows or
logs; a compatible server with no key variable set gets a placeholder key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("text", "embeddings", "images")
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
LOCAL_SERVER_KEY = "no-key-local-server"  # the SDK needs some key; a local server checks none

_ENVIRONMENT = {
    "text": ("PIPELINE_LLM_PROVIDER", "OPENAI_BASE_URL", "PIPELINE_LLM_API_KEY_ENV"),
    "embeddings": ("PIPELINE_EMBEDDINGS_PROVIDER", "PIPELINE_EMBEDDINGS_BASE_URL", "PIPELINE_EMBEDDINGS_API_KEY_ENV"),
    "images": ("PIPELINE_IMAGES_PROVIDER", "PIPELINE_IMAGES_BASE_URL", "PIPELINE_IMAGES_API_KEY_ENV"),
}
FIELDS = ("provider", "base_url", "api_key_env")


@dataclass(frozen=True)
class Endpoint:
    """The resolved endpoint of one kind of call, and where each of its values came from."""

    kind: str
    provider: str
    base_url: str | None
    api_key_env: str
    source: str  # e.g. "run", "site", "environment", "default"

    def api_key(self, explicit: str | None = None) -> str:
        """The key for this endpoint, read now: an explicit one, the named variable, or a placeholder for
        a compatible server. Raises `EndpointError` when OpenAI itself would be called with no key."""
        key = explicit or os.environ.get(self.api_key_env, "")
        if key:
            return key
        if self.base_url:
            return LOCAL_SERVER_KEY
        raise EndpointError(
            f"the {self.kind} endpoint uses OpenAI but the environment variable {self.api_key_env} is not set"
        )


class EndpointError(ValueError):
    """An endpoint that cannot be used as configured (unknown provider, missing key)."""


def resolve_endpoints(
    run: Mapping[str, Mapping[str, Any]],
    site: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Endpoint]:
    """The endpoint of every kind, from run values, then site settings, then the environment."""
    environ = os.environ if environ is None else environ
    site = site or {}
    resolved: dict[str, Endpoint] = {}
    for kind in KINDS:
        values: dict[str, Any] = {}
        sources: list[str] = []
        names = dict(zip(FIELDS, _ENVIRONMENT[kind], strict=True))
        for field_name in FIELDS:
            for source, layer in (
                ("run", run.get(kind, {})),
                ("site", site.get(kind, {})),
                ("environment", {field_name: environ.get(names[field_name]) or None}),
            ):
                if layer.get(field_name) is not None:
                    values[field_name] = layer[field_name]
                    sources.append(source)
                    break
        if kind == "text":
            key_env = values.get("api_key_env") or DEFAULT_KEY_ENV
            provider = values.get("provider") or (
                "openai" if environ.get(key_env) or values.get("base_url") else "offline"
            )
            endpoint = Endpoint(kind, provider, values.get("base_url"), key_env, _source(sources))
        else:
            text = resolved["text"]
            if not values:
                endpoint = Endpoint(kind, text.provider, text.base_url, text.api_key_env, f"as text ({text.source})")
            else:
                provider = values.get("provider") or text.provider
                base_url = values.get("base_url", text.base_url if provider == text.provider else None)
                endpoint = Endpoint(
                    kind, provider, base_url, values.get("api_key_env") or text.api_key_env, _source(sources)
                )
        resolved[kind] = endpoint
    return resolved


def _source(sources: list[str]) -> str:
    return "+".join(dict.fromkeys(sources)) or "default"
