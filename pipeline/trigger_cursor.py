"""The `metric_triggers` sensor's cursor: the metric files it handled and how far it has read the store.

A small versioned JSON object (`"version": 2`):

- `files`: metric file name -> fingerprint of the content handled (as the cursor of earlier versions was,
  and an earlier cursor is read as just that);
- `metric_id`, `event_id`, `rule_id`: the highest `post_metrics`, publication `review_events` and
  `trigger_rules` ids evaluated;
- `firing`: `[changed_at, id]` of the last failed firing evaluated (its rule is armed again);
- `sites`: per site id, the fingerprint of its site-wide rules (store defaults and settings), the position
  of a scan of all its published articles still under way (`scan`, `null` when none), and per distinct
  minimum age of its rules the `[published_at, id]` up to which articles have been evaluated at that age.

Positions are keys in the order the store reads them, so a tick that stops early resumes exactly there.
A cursor without positions (new, or of the earlier format) starts with a scan of every site.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

VERSION = 2

# A position in publication (or status-change) order: (time, id); a time of None is "before everything".
Key = tuple[datetime | None, int]
START: Key = (None, 0)


@dataclass
class SitePosition:
    """How far one site has been evaluated."""

    rules: str = ""
    scan: Key | None = START  # a new site is scanned once
    aged: dict[str, Key] = field(default_factory=dict)  # repr(min_age_hours) -> evaluated up to


@dataclass
class TriggerCursor:
    """Everything a tick needs to continue where the previous one stopped."""

    files: dict[str, str] = field(default_factory=dict)
    metric_id: int | None = None  # None: no position yet; set to the store's newest row (sites are scanned)
    event_id: int = 0
    rule_id: int = 0
    firing: Key = START
    sites: dict[int, SitePosition] = field(default_factory=dict)

    @property
    def fresh(self) -> bool:
        """No store positions yet (a new cursor or one of the earlier format)."""
        return self.metric_id is None

    @classmethod
    def parse(cls, text: str | None, warn: Callable[[str], None]) -> TriggerCursor:
        """The cursor in `text`; an earlier cursor (a JSON object of file names) keeps its files, anything
        else (edited by hand) starts afresh, saying so through `warn`."""
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            warn("metrics: cursor is not a JSON object; every file and every article is looked at again")
            return cls()
        if data.get("version") != VERSION:
            return cls(files={str(name): str(fingerprint) for name, fingerprint in data.items()})
        try:
            return cls(
                files={str(k): str(v) for k, v in data["files"].items()},
                metric_id=None if data["metric_id"] is None else int(data["metric_id"]),
                event_id=int(data["event_id"]),
                rule_id=int(data["rule_id"]),
                firing=_key(data["firing"]),
                sites={
                    int(site_id): SitePosition(
                        rules=str(position["rules"]),
                        scan=None if position["scan"] is None else _key(position["scan"]),
                        aged={str(age): _key(key) for age, key in position["aged"].items()},
                    )
                    for site_id, position in data["sites"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            warn("metrics: cursor is not one this sensor wrote; every file and every article is looked at again")
            return cls()

    def dump(self) -> str:
        """The cursor as compact JSON."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        """The cursor as JSON-ready data."""
        return {
            "version": VERSION,
            "files": self.files,
            "metric_id": self.metric_id,
            "event_id": self.event_id,
            "rule_id": self.rule_id,
            "firing": _json_key(self.firing),
            "sites": {
                str(site_id): {
                    "rules": position.rules,
                    "scan": None if position.scan is None else _json_key(position.scan),
                    "aged": {age: _json_key(key) for age, key in position.aged.items()},
                }
                for site_id, position in sorted(self.sites.items())
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TriggerCursor:
        """The cursor `as_dict` gave (as stored in the sensor state)."""
        return cls.parse(json.dumps(data), lambda _message: None)


def _key(value: Any) -> Key:
    when, identifier = value
    return (None if when is None else datetime.fromisoformat(when), int(identifier))


def _json_key(key: Key) -> list[Any]:
    return [None if key[0] is None else key[0].isoformat(), key[1]]
