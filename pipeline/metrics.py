"""Post metrics: reading performance numbers per article and A/B variant, and importing them idempotently.

A metrics file is CSV with columns `content_id, variant, metric, value, observed_at` and optional
`source` (default: the file name) and `version` (default: the article's published version). The file is
validated as a whole (errors name the file, row and column) before anything is written; rows are keyed
on (content, variant, version, metric, observed_at, source), so importing a file twice adds nothing.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.keywords import Problem
from pipeline.store import Store

REQUIRED = ("content_id", "variant", "metric", "value", "observed_at")
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")


class MetricsFileError(ValueError):
    """A metrics file that cannot be imported; lists every problem found."""

    def __init__(self, path: Path | str, problems: list[Problem]):
        self.path, self.problems = Path(path), problems
        lines = [f"metrics file {path}: {len(problems)} problem(s), nothing was imported"]
        lines += [f"  - {p}" for p in problems[:20]]
        if len(problems) > 20:
            lines.append(f"  ... and {len(problems) - 20} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class MetricsImport:
    """What one import did."""

    path: Path
    rows: int
    added: int

    @property
    def already_known(self) -> int:
        """Rows that were imported before (idempotent re-import)."""
        return self.rows - self.added


def import_metrics_file(store: Store, path: Path | str) -> MetricsImport:
    """Validate a metrics CSV against the store and add its new rows in one transaction."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise MetricsFileError(path, [Problem(None, None, f"cannot be read ({exc.strerror or exc})")]) from exc
    except UnicodeDecodeError as exc:
        raise MetricsFileError(path, [Problem(None, None, f"not valid UTF-8 ({exc.reason})")]) from exc
    rows = parse_metrics(store, text, path.name, path)
    return MetricsImport(path=path, rows=len(rows), added=store.add_metrics(rows))


def parse_metrics(store: Store, text: str, default_source: str, path: Path | str = "<metrics>") -> list[dict[str, Any]]:
    """Validated metric rows ready to insert, or `MetricsFileError` naming every bad row and column."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [column for column in REQUIRED if column not in header]
    if missing:
        raise MetricsFileError(
            path, [Problem(1, missing[0], f"required column missing (found: {', '.join(header) or 'nothing'})")]
        )
    reader.fieldnames = header
    records = [(reader.line_num, record) for record in reader if any((v or "").strip() for v in record.values())]
    if not records:
        raise MetricsFileError(path, [Problem(None, None, "the file has no metric rows")])
    problems: list[Problem] = []
    ids = {int(r["content_id"]) for _, r in records if (r.get("content_id") or "").strip().isdigit()}
    articles = store.content_by_ids(ids)
    rows = []
    for line, record in records:
        value = {k: (v or "").strip() for k, v in record.items() if k}
        row, row_problems = _row(value, line, articles, default_source)
        problems += row_problems
        if row:
            rows.append(row)
    if problems:
        raise MetricsFileError(path, problems)
    return rows


def _row(value: dict[str, str], line: int, articles: dict, default_source: str) -> tuple[dict | None, list[Problem]]:
    problems: list[Problem] = []
    article = None
    if not value["content_id"].isdigit():
        problems.append(Problem(line, "content_id", f"{value['content_id']!r} is not an article id"))
    else:
        article = articles.get(int(value["content_id"]))
        if article is None:
            problems.append(Problem(line, "content_id", f"no article with id {value['content_id']}"))
    variant = value["variant"].upper()
    if variant not in {"A", "B"}:
        problems.append(Problem(line, "variant", f"{value['variant']!r} is not A or B"))
    metric = value["metric"].lower()
    if not METRIC_NAME.match(metric):
        problems.append(Problem(line, "metric", f"{value['metric']!r} is not a metric name (lowercase, digits, _)"))
    try:
        number = float(value["value"])
    except ValueError:
        number = None
        problems.append(Problem(line, "value", f"{value['value']!r} is not a number"))
    observed = _timestamp(value["observed_at"])
    if observed is None:
        problems.append(Problem(line, "observed_at", f"{value['observed_at']!r} is not an ISO date or date-time"))
    version = None
    if value.get("version"):
        if value["version"].isdigit():
            version = int(value["version"])
        else:
            problems.append(Problem(line, "version", f"{value['version']!r} is not a version number"))
    elif article is not None:
        version = article.published_version
        if version is None:
            problems.append(Problem(line, "version", f"article {article.id} is not published; give its version"))
    if problems:
        return None, problems
    return {
        "content_id": article.id,
        "variant": variant,
        "version": version,
        "metric": metric,
        "value": number,
        "observed_at": observed,
        "source": value.get("source") or default_source,
    }, []


def _timestamp(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
