"""The prompt registry: versioned templates stored as files next to their answer schemas.

A prompt file is `NAME.md` with a front-matter block giving its `version`. Resolution order is run
override -> site override -> the file. Untrusted text (keywords, titles, metrics, trigger instructions) is
never spliced into instructions: it travels as JSON inside `<data>` tags in a separate user message,
with `<` escaped so the data cannot close its own delimiter. Messages run from what never changes to what
changes per item (instructions, then the site's context, then the item's data), so a provider's prompt
cache serves the shared prefix of a site's items (`SHARED_FIRST`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).parent
_FRONT_MATTER = re.compile(r"\A---\n(?P<meta>.*?)\n---\n(?P<body>.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """One resolved prompt template."""

    name: str
    version: str
    instructions: str
    source: str = "default"

    @property
    def ref(self) -> str:
        """What generated rows record as `prompt_version`, e.g. `ideas@1` or `ideas@site:2`."""
        prefix = "" if self.source == "default" else f"{self.source}:"
        return f"{self.name}@{prefix}{self.version}"

    def messages(self, data: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages: instructions as system, the data as delimited JSON in the user message."""
        return [
            {"role": "system", "content": self.instructions},
            {"role": "user", "content": f"<data>\n{encode_data(data)}\n</data>"},
        ]


# Top-level keys of prompt data that every item of a site (or of a cluster) shares, in this order, before
# the item's own data: providers cache the longest prompt prefix they have seen (OpenAI: from 1024 tokens,
# priced at the cached-input rate), so the instructions plus the site's context repeat byte for byte
# across a site's items and only the item's data differs.
SHARED_FIRST = ("site", "taxonomy", "language", "cluster")


def encode_data(data: Mapping[str, Any]) -> str:
    """Canonical JSON of prompt data, shared context first (`SHARED_FIRST`), then the item's keys sorted
    (nested keys sorted); `<` escaped so user text cannot forge the closing tag."""
    keys = [key for key in SHARED_FIRST if key in data] + sorted(key for key in data if key not in SHARED_FIRST)
    fields = (f"{_canonical(key)}:{_canonical(data[key])}" for key in keys)
    return ("{" + ",".join(fields) + "}").replace("<", "\\u003c")


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class PromptNotFound(LookupError):
    """No prompt file exists for a name."""


class PromptRegistry:
    """Loads prompt files from a directory and applies run/site overrides."""

    def __init__(self, directory: Path = PROMPTS_DIR):
        self.directory = directory

    def names(self) -> list[str]:
        """All prompt names available as files."""
        return sorted(path.stem for path in self.directory.glob("*.md"))

    def get(
        self,
        name: str,
        *,
        run_overrides: Mapping[str, Mapping[str, str]] | None = None,
        site_overrides: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Prompt:
        """Resolve `name`: run override, then site override, then the default file.

        An override is `{"version": "...", "instructions": "..."}`.
        """
        for source, overrides in (("run", run_overrides), ("site", site_overrides)):
            if overrides and name in overrides:
                override = overrides[name]
                return Prompt(name, str(override["version"]), override["instructions"].strip(), source)
        return _load(self.directory / f"{name}.md", name)


@cache
def _load(path: Path, name: str) -> Prompt:
    if not path.is_file():
        raise PromptNotFound(f"no prompt file {path.name} in {path.parent}")
    match = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    if not match:
        raise ValueError(f"prompt file {path} must start with a '---' front-matter block giving its version")
    meta = dict(line.split(":", 1) for line in match["meta"].splitlines() if ":" in line)
    version = meta.get("version", "").strip()
    if not version:
        raise ValueError(f"prompt file {path} has no 'version' in its front matter")
    return Prompt(name, version, match["body"].strip())
