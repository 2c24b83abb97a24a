"""Post metrics: reading performance numbers per article and A/B variant, and importing them idempotently.

One entry point, `import_metrics_bytes` (the CLI and the watched folder both use it), recognises the file
by its header (`pipeline.metric_exports`): our own CSV, described below, or an analytics export (Search
Console Pages, per-day Search Console, GA4 Pages and screens) whose pages are mapped to articles by URL
(`pipeline.url_mapping`) and whose days are attributed to the variant live then
(`pipeline.metric_attribution`). Either way the whole file is validated before anything is written.

Our metrics file is CSV with columns `content_id, variant, metric, value, observed_at` and optional
`source` (default: the file name) and `version`. The file is validated as a whole (errors name the file,
row and column) before anything is written: a file with any error writes nothing.

A row belongs to the version of the article that was live (published) when it was observed, whatever
the time of the import: earlier publications are dated by their review events, the current one by the
article's `published_at`. So re-reading a file never moves old observations to a newer version. A row
observed before the article's first publication, in the future, with a value that is not a finite number
or with a `version` other than the one live at `observed_at` is an error. Rows are keyed on (content,
variant, version, metric, observed_at, source), so importing a file twice adds nothing.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.drop_folder import Entry, FolderUnreadable, Rejected, read_folder, scan_entries
from pipeline.keywords import Problem
from pipeline.metric_attribution import FUTURE_SLACK, attribute_export
from pipeline.metric_exports import OURS, DateRange, ExportProblems, export_format, read_export
from pipeline.models import Content, as_utc
from pipeline.store import Store

# Records a problem with one column of the row being read.
ProblemSink = Callable[[str, str], None]

REQUIRED = ("content_id", "variant", "metric", "value", "observed_at")
OPTIONAL = ("source", "version")
METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,59}")  # use with fullmatch
MAX_ID = 2**31 - 1  # ids and versions are 32-bit integers in the store (PostgreSQL INTEGER)
MAX_SOURCE_CHARS = 120
FOLDER = "metrics"  # the watched folder's name in the rejected-files table
SUFFIXES = (".csv", ".zip")  # a Search Console export comes as a zip

_WHOLE_NUMBER = re.compile(r"[0-9]{1,12}")


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
    """What one import did: `rows` distinct observations, of which `added` were new.

    For an analytics export, `pages` is the number of its rows read, `unmatched` the pages matching no
    article (page as written -> rows) and `rejected` the rows not imported because they span a switch.
    """

    path: Path
    rows: int
    added: int
    repeated: int = 0  # rows repeating an earlier row of the same file (same observation, same value)
    format: str = OURS
    pages: int = 0
    unmatched: Mapping[str, int] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()

    @property
    def already_known(self) -> int:
        """Rows that were imported before (idempotent re-import)."""
        return self.rows - self.added


@dataclass
class MetricsScan:
    """What one look at the metrics folder did; `present` maps every candidate's name to its fingerprint."""

    imported: list[MetricsImport] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unchanged: int = 0
    present: dict[str, str] = field(default_factory=dict)


def import_metrics_file(
    store: Store,
    path: Path | str,
    now: datetime | None = None,
    *,
    site: str | None = None,
    days: DateRange | None = None,
) -> MetricsImport:
    """Validate a metrics file or export against the store and add its new rows in one transaction."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MetricsFileError(path, [Problem(None, None, f"cannot be read ({exc.strerror or exc})")]) from exc
    return import_metrics_bytes(store, data, path, now=now, site=site, days=days)


def import_metrics_bytes(
    store: Store,
    data: bytes,
    path: Path | str,
    source: str | None = None,
    now: datetime | None = None,
    *,
    site: str | None = None,
    days: DateRange | None = None,
) -> MetricsImport:
    """Validate metrics content (`path` names it in messages and is the default source) and add it.

    `site` (a slug) limits the articles an export's pages are matched against (default: every site's);
    `days` are the days of an export that does not say (a Search Console Pages CSV).
    """
    path = Path(path)
    try:
        kind = export_format(data)
    except ExportProblems as error:
        raise MetricsFileError(path, error.problems) from error
    if kind != OURS:
        return _import_export(store, data, path, source or path.name, now or datetime.now(UTC), site, days)
    if days is not None:
        raise MetricsFileError(path, [Problem(None, None, "--from/--to are for exports without dates; omit them")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MetricsFileError(path, [Problem(line, None, f"not valid UTF-8 ({exc.reason}); save as UTF-8")]) from exc
    rows = parse_metrics(store, text, source or path.name, path, now=now)
    unique = list({_key(row): row for row in rows}.values())
    return MetricsImport(path=path, rows=len(unique), added=store.add_metrics(unique), repeated=len(rows) - len(unique))


def _import_export(
    store: Store, data: bytes, path: Path, source: str, now: datetime, site: str | None, days: DateRange | None
) -> MetricsImport:
    try:
        export = read_export(data, days)
    except ExportProblems as error:
        raise MetricsFileError(f"{path}:{error.table}" if error.table else path, error.problems) from error
    where = f"{path}:{export.table}" if export.table else path
    if not export.rows:
        raise MetricsFileError(where, [Problem(None, None, "the export has no page rows")])
    sites = [store.site(site)] if site is not None else store.sites()
    found = attribute_export(store, export, sites, _source(source), now)
    if found.problems:
        raise MetricsFileError(where, found.problems)
    return MetricsImport(
        path=path,
        rows=len(found.rows),
        added=store.add_metrics(found.rows),
        format=export.format,
        pages=len(export.rows),
        unmatched=found.unmatched,
        rejected=tuple(found.rejected),
    )


def scan_metrics_folder(store: Store, folder: Path, seen: Mapping[str, str]) -> MetricsScan:
    """Import every new or changed `*.csv` or `*.zip` of `folder` (`seen`: name -> fingerprint already handled).

    A file that cannot be used (not a regular file, unreadable, invalid) is recorded in the store's
    rejected files and listed in the result; it never stops the other files.
    """
    if not folder.is_dir():
        store.resolve_rejected_files(FOLDER, {})
        return MetricsScan()
    try:
        entries = read_folder(folder, SUFFIXES)
    except FolderUnreadable as error:
        return MetricsScan(rejected=[Rejected(folder, "unlistable", str(error), name=folder.name)])

    def import_entry(entry: Entry) -> MetricsImport:
        where = folder / entry.name  # printable, unlike a name with undecodable bytes
        return import_metrics_bytes(store, entry.data or b"", where, source=entry.name)

    scan = scan_entries(
        store, FOLDER, folder, entries, seen, import_entry, kind="metrics file", rejects=(MetricsFileError,)
    )
    return MetricsScan(imported=scan.used, rejected=scan.rejected, unchanged=scan.unchanged, present=scan.present)


def parse_metrics(
    store: Store,
    text: str,
    default_source: str,
    path: Path | str = "<metrics>",
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Validated metric rows ready to insert, or `MetricsFileError` naming every bad row and column."""
    now = now or datetime.now(UTC)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        records = [(reader.line_num, record) for record in reader if any(cell.strip() for cell in record)]
    except csv.Error as error:
        raise MetricsFileError(path, [Problem(reader.line_num, None, f"not valid CSV ({error})")]) from error
    problems = [Problem(1, name, "column appears twice in the header") for name in _repeated(header)]
    missing = [column for column in REQUIRED if column not in header]
    if missing:
        problems.append(Problem(1, missing[0], f"required column missing (found: {', '.join(header) or 'nothing'})"))
    if problems:
        raise MetricsFileError(path, problems)
    if not records:
        raise MetricsFileError(path, [Problem(None, None, "the file has no metric rows")])
    positions = {name: header.index(name) for name in (*REQUIRED, *OPTIONAL) if name in header}
    cells = [
        (line, {name: (record[i].strip() if i < len(record) else "") for name, i in positions.items()})
        for line, record in records
    ]
    ids = {number for _, c in cells if (number := _whole(c["content_id"])) is not None and number <= MAX_ID}
    articles = store.content_by_ids(ids)
    events = store.publications(articles.keys())
    context = _Context(articles, events, _source(default_source), now)
    rows: list[dict[str, Any]] = []
    first_seen: dict[tuple[Any, ...], tuple[int, float]] = {}
    for line, value in cells:
        row, row_problems = _row(value, line, context)
        problems += row_problems
        if row is None:
            continue
        earlier = first_seen.setdefault(_key(row), (line, row["value"]))
        if earlier[1] != row["value"]:
            problems.append(
                Problem(line, "value", f"row {earlier[0]} has the same observation with value {earlier[1]:g}")
            )
        rows.append(row)
    if problems:
        raise MetricsFileError(path, problems)
    return rows


@dataclass(frozen=True)
class _Context:
    articles: Mapping[int, Content]
    events: Mapping[int, Sequence[tuple[datetime, int]]]
    default_source: str
    now: datetime


def _row(value: dict[str, str], line: int, context: _Context) -> tuple[dict[str, Any] | None, list[Problem]]:
    problems: list[Problem] = []

    def problem(column: str, message: str) -> None:
        problems.append(Problem(line, column, message))

    article = None
    content_id = _whole(value["content_id"])
    if content_id is None or content_id > MAX_ID:
        problem("content_id", f"{_quote(value['content_id'])} is not an article id (a whole number up to {MAX_ID})")
    else:
        article = context.articles.get(content_id)
        if article is None:
            problem("content_id", f"no article with id {content_id}")
    variant = value["variant"].upper()
    if variant not in {"A", "B"}:
        problem("variant", f"{_quote(value['variant'])} is not A or B")
    metric = value["metric"].lower()
    if not METRIC_NAME.fullmatch(metric):
        problem("metric", f"{_quote(value['metric'])} is not a metric name (lowercase letters, digits, _)")
    number = _number(value["value"], problem)
    observed = _timestamp(value["observed_at"])
    if observed is None:
        problem("observed_at", f"{_quote(value['observed_at'])} is not an ISO date or date-time")
    elif observed > context.now + FUTURE_SLACK:
        problem("observed_at", f"{_quote(value['observed_at'])} is in the future (now is {_when(context.now)})")
        observed = None
    version = None
    if value.get("version"):
        version = _whole(value["version"])
        if version is None or not 1 <= version <= MAX_ID:
            problem("version", f"{_quote(value['version'])} is not a version number (1 to {MAX_ID})")
    source = value.get("source") or context.default_source
    if len(source) > MAX_SOURCE_CHARS:
        problem("source", f"source is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    live = None
    if article is not None and observed is not None:
        live = _live_version(article, context.events.get(article.id, ()), observed, problem)
        if live is not None and version is not None and version != live[1]:
            problem(
                "version",
                f"version {version} of article {article.id} was not live at {_when(observed)}: version "
                f"{live[1]} was (published {_when(live[0])}); a row belongs to the version live when observed",
            )
    if problems or article is None or observed is None or live is None:
        return None, problems
    return {
        "content_id": article.id,
        "variant": variant,
        "version": live[1],
        "metric": metric,
        "value": number,
        "observed_at": observed,
        "source": source,
    }, []


def publication_history(article: Content, events: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """When each version of `article` went live, oldest first: `[(published at, version), ...]`.

    The current publication comes from the article row; earlier ones from its review events (the
    current publication's own event is later than `published_at` by the export's duration, so dropped).
    """
    if article.published_at is None or article.published_version is None:
        return []
    current = (as_utc(article.published_at), article.published_version)
    earlier = [(as_utc(when), version) for when, version in events if as_utc(when) < current[0]]
    return [*earlier, current]


def _live_version(
    article: Content, events: Sequence[tuple[datetime, int]], observed: datetime, problem: ProblemSink
) -> tuple[datetime, int] | None:
    history = publication_history(article, events)
    if not history:
        problem("content_id", f"article {article.id} has never been published; metrics are only for published ones")
        return None
    live = [publication for publication in history if publication[0] <= observed]
    if not live:
        problem(
            "observed_at",
            f"{_when(observed)} is before article {article.id} was first published ({_when(history[0][0])})",
        )
        return None
    return live[-1]


def _number(text: str, problem: ProblemSink) -> float | None:
    if not text:
        problem("value", "value is empty")
        return None
    try:
        number = float(text)
    except ValueError:
        problem("value", f"{_quote(text)} is not a number")
        return None
    if not math.isfinite(number):
        problem("value", f"{_quote(text)} is not a finite number")
        return None
    return number


def _whole(text: str) -> int | None:
    # ASCII digits only: str.isdigit() also accepts '²' and other characters int() refuses.
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def _timestamp(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # Stored in UTC: SQLite keeps no offset, and the same instant must be the same key on both backends.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ("content_id", "variant", "version", "metric", "observed_at", "source"))


def _source(name: str) -> str:
    return name[:MAX_SOURCE_CHARS]  # a long file name is cut rather than refused: it is only the default


def _repeated(names: list[str]) -> list[str]:
    return sorted({name for name in names if name and names.count(name) > 1})


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _quote(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
