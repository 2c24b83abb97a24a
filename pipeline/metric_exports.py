"""Analytics exports as teams download them: recognising the layout and reading its rows (no store, no writes).

Recognised by the header (column names compared in any case, surrounding spaces ignored):

- **our metrics CSV**: `content_id, variant, metric, value, observed_at[, source][, version]` (`pipeline.metrics`);
- **Search Console, Pages table** (performance report, "Export" > CSV or the zip): `Top pages, Clicks,
  Impressions, CTR, Position`. The table has no dates: a zip gives them (`Filters.csv` when its `Date`
  filter is an absolute range, else the first and last day of `Chart.csv`/`Dates.csv`), a lone CSV needs
  them from the caller (`--from`/`--to`);
- **Search Console, per day** (Looker Studio, the Search Analytics API): `Date, Page, Clicks, Impressions[,
  CTR][, Position]`, one row per page and day;
- **GA4 "Pages and screens"**: `#` comment lines (`# Start date: 20261101`, `# End date: 20261128`, account,
  property), then `Page path and screen class` (or `Page path`, `Page path + query string`, `Page location`)
  with `Views` and any of `Active users`, `Engaged sessions`, `Average engagement time per active user`;
  numbers may have thousands separators, times may read `1m 05s`; a total row is skipped. A `Date`
  column makes each row one day.

Each row becomes an `ExportRow`: the page as written, the inclusive days it covers and its numbers under
our metric names. CTR is never read: it is recomputed from clicks and impressions by the importer.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from pipeline.keywords import Problem

OURS = "metrics"
SEARCH_CONSOLE_PAGES = "search_console_pages"
SEARCH_CONSOLE_DAILY = "search_console_daily"
GA4_PAGES = "ga4_pages"

ZIP_MAGIC = b"PK\x03\x04"
OUR_COLUMNS = frozenset({"content_id", "variant", "metric", "value", "observed_at"})
SEARCH_CONSOLE_PAGE_COLUMNS = ("top pages", "page", "pages", "landing page", "url")
GA4_PATH_COLUMNS = ("page path and screen class", "page path + query string", "page path", "page location")
# Export column -> our metric name; the value is a count unless named in AVERAGES.
SEARCH_CONSOLE_METRICS = {"clicks": "clicks", "impressions": "impressions", "position": "position"}
GA4_METRICS = {
    "views": "views",
    "active users": "active_users",
    "users": "active_users",
    "engaged sessions": "engaged_sessions",
    "average engagement time per active user": "avg_engagement_time_s",
    "average engagement time": "avg_engagement_time_s",
}
AVERAGES = frozenset({"position", "avg_engagement_time_s"})
TOTAL_LABELS = frozenset({"", "total", "totals", "grand total"})
# Filters that make a Search Console table describe part of a page's traffic, not all of it.
PARTIAL_FILTERS = frozenset({"query", "country", "device", "search appearance"})
MAX_DAYS = 3660  # a range longer than ten years is a typo
MAX_MEMBER_BYTES = 100 * 1024 * 1024

_DURATION = re.compile(r"(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+(?:\.\d+)?)s)?")
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_COMPACT_DAY = re.compile(r"\b(\d{4})(\d{2})(\d{2})\b")
_WORDED_DAY = re.compile(r"\b([A-Z][a-z]{2})[a-z]* (\d{1,2}), (\d{4})\b")
_GA4_DATE_COMMENT = re.compile(r"#\s*(start|end) date:\s*(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class DateRange:
    """Inclusive days, as the tools and `--from`/`--to` give them."""

    first: date
    last: date

    def __str__(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


@dataclass(frozen=True)
class ExportRow:
    """One page's numbers over `days`; `line` is its line in `table`."""

    line: int
    address: str
    days: DateRange
    values: Mapping[str, float]


@dataclass
class Export:
    """A recognised export: its format, the table its rows come from (`Pages.csv` of a zip) and the rows."""

    format: str
    address_column: str = ""
    table: str = ""
    rows: list[ExportRow] = field(default_factory=list)


class ExportProblems(ValueError):
    """The export cannot be read; `table` names the member of a zip the problems are in."""

    def __init__(self, problems: list[Problem], table: str = ""):
        self.problems, self.table = problems, table
        super().__init__("; ".join(str(p) for p in problems))


def export_format(data: bytes) -> str:
    """The format of an export by its content: `OURS`, `SEARCH_CONSOLE_PAGES`, ... (`ExportProblems` if none)."""
    if data.startswith(ZIP_MAGIC):
        return SEARCH_CONSOLE_PAGES
    _, header, _ = _table(_text(data))
    return _format_of(header)


def read_export(data: bytes, given: DateRange | None = None) -> Export:
    """The rows of an export other than ours (`given`: the days a table without dates covers)."""
    if data.startswith(ZIP_MAGIC):
        return _read_search_console_zip(data, given)
    text = _text(data)
    comments, header, records = _table(text)
    kind = _format_of(header)
    if kind == OURS:
        raise ValueError("our own metrics CSV is read by pipeline.metrics")
    if kind == GA4_PAGES:
        return _read_ga4(comments, header, records, given)
    return _read_search_console(kind, header, records, given)


def parse_day(text: str) -> date | None:
    """A day as the exports write it: `2026-11-01` or `20261101`."""
    text = text.strip()
    try:
        if _ISO_DAY.fullmatch(text):
            return date.fromisoformat(text)
        if _COMPACT_DAY.fullmatch(text):
            return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None
    return None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ExportProblems([Problem(line, None, f"not valid UTF-8 ({exc.reason}); save as UTF-8")]) from exc


def _table(text: str) -> tuple[list[str], list[tuple[int, str, str]], list[tuple[int, list[str]]]]:
    """Leading `#` comments, the header as (position, lowercased name, name) and the data records with their lines.

    The table ends at a later `#` line (GA4 may append another block); blank lines are skipped.
    """
    lines = text.splitlines(keepends=True)
    comments: list[str] = []
    start = 0
    while start < len(lines) and (lines[start].startswith("#") or not lines[start].strip()):
        if lines[start].startswith("#"):
            comments.append(lines[start].strip())
        start += 1
    body: list[str] = []
    for line in lines[start:]:
        if line.startswith("#"):
            break
        body.append(line)
    reader = csv.reader(io.StringIO("".join(body), newline=""))
    try:
        header = next(reader, [])
        records = [(start + reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except csv.Error as error:
        raise ExportProblems([Problem(start + reader.line_num, None, f"not valid CSV ({error})")]) from error
    names = [(i, cell.strip().lower(), cell.strip()) for i, cell in enumerate(header)]
    keys = [key for _, key, _ in names]
    repeated = sorted({key for key in keys if key and keys.count(key) > 1})
    if repeated:
        raise ExportProblems([Problem(start + 1, name, "column appears twice in the header") for name in repeated])
    return comments, names, records


def _format_of(header: Sequence[tuple[int, str, str]]) -> str:
    names = {key for _, key, _ in header}
    if names & OUR_COLUMNS:
        return OURS  # its own messages say which of our columns is missing
    if any(name in names for name in SEARCH_CONSOLE_PAGE_COLUMNS) and {"clicks", "impressions"} <= names:
        return SEARCH_CONSOLE_DAILY if "date" in names else SEARCH_CONSOLE_PAGES
    if any(name in names for name in GA4_PATH_COLUMNS) and "views" in names:
        return GA4_PAGES
    found = ", ".join(name for _, _, name in header) or "nothing"
    raise ExportProblems(
        [
            Problem(
                1,
                None,
                f"not a metrics file this pipeline reads (header: {found}); expected our CSV "
                "(content_id,variant,metric,value,observed_at), a Search Console Pages export "
                "(Top pages,Clicks,Impressions,CTR,Position, or with Date), or a GA4 Pages and screens "
                "export (Page path and screen class,Views,...)",
            )
        ]
    )


def _read_search_console(
    kind: str,
    header: Sequence[tuple[int, str, str]],
    records: Sequence[tuple[int, list[str]]],
    given: DateRange | None,
    found: DateRange | None = None,
    table: str = "",
) -> Export:
    names = {key: i for i, key, _ in header}
    page = next(name for name in SEARCH_CONSOLE_PAGE_COLUMNS if name in names)
    problems: list[Problem] = []
    days = None
    if kind == SEARCH_CONSOLE_DAILY:
        if given is not None:
            problems.append(Problem(None, None, "the rows have their own dates (a Date column); omit --from/--to"))
    else:
        days = _range_of(found, given, "the Pages table has no dates", problems)
    labels = {i: name for i, _, name in header}
    columns = {metric: names[column] for column, metric in SEARCH_CONSOLE_METRICS.items() if column in names}
    export = Export(kind, address_column=labels[names[page]], table=table)
    export.rows = _rows(records, names[page], labels, columns, names.get("date"), days, problems)
    if problems:
        raise ExportProblems(problems, table)
    return export


def _read_ga4(
    comments: Sequence[str],
    header: Sequence[tuple[int, str, str]],
    records: Sequence[tuple[int, list[str]]],
    given: DateRange | None,
) -> Export:
    names = {key: i for i, key, _ in header}
    path = next(name for name in GA4_PATH_COLUMNS if name in names)
    problems: list[Problem] = []
    stated: dict[str, str] = {}
    for line in comments:
        match = _GA4_DATE_COMMENT.match(line)
        if match:
            stated[match.group(1).lower()] = match.group(2)
    found = None
    if stated:
        first, last = parse_day(stated.get("start", "")), parse_day(stated.get("end", ""))
        if first is None or last is None:
            problems.append(Problem(None, None, f"the '# Start date'/'# End date' lines are not dates: {stated}"))
        else:
            found = DateRange(first, last)
    days = None
    if "date" in names:
        if given is not None:
            problems.append(Problem(None, None, "the rows have their own dates (a Date column); omit --from/--to"))
    else:
        days = _range_of(found, given, "the export has no '# Start date'/'# End date' lines", problems)
    columns: dict[str, int] = {}
    for column, metric in GA4_METRICS.items():
        if column in names and metric not in columns:
            columns[metric] = names[column]
    labels = {i: name for i, _, name in header}
    export = Export(GA4_PAGES, address_column=labels[names[path]])
    export.rows = _rows(records, names[path], labels, columns, names.get("date"), days, problems)
    if problems:
        raise ExportProblems(problems)
    return export


def _read_search_console_zip(data: bytes, given: DateRange | None) -> Export:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = {info.filename.rsplit("/", 1)[-1].lower(): info for info in archive.infolist() if not info.is_dir()}
        if "pages.csv" not in members:
            listed = ", ".join(sorted(members)) or "nothing"
            raise ExportProblems([Problem(None, None, f"a zip without Pages.csv (it holds {listed})")])

        def member(name: str) -> bytes | None:
            info = members.get(name)
            if info is None:
                return None
            if info.file_size > MAX_MEMBER_BYTES:  # the folder's size limit is on the compressed file only
                raise ExportProblems(
                    [Problem(None, None, f"{info.filename} unpacks to more than {MAX_MEMBER_BYTES:,} bytes")]
                )
            return archive.read(info)

        pages, filters = member("pages.csv") or b"", member("filters.csv")
        chart = member("chart.csv") or member("dates.csv")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as error:
        raise ExportProblems([Problem(None, None, f"not a readable zip ({error})")]) from error
    problems: list[Problem] = []
    found = _filters_range(filters, problems) if filters is not None else None
    if found is None and chart is not None:
        found = _chart_range(chart, problems)
    if problems:
        raise ExportProblems(problems, "Filters.csv" if filters is not None else "Chart.csv")
    _, header, records = _table(_text(pages))
    kind = _format_of(header)
    if kind not in {SEARCH_CONSOLE_PAGES, SEARCH_CONSOLE_DAILY}:
        raise ExportProblems([Problem(1, None, "Pages.csv is not a Search Console Pages table")], "Pages.csv")
    return _read_search_console(kind, header, records, given, found, table="Pages.csv")


def _filters_range(data: bytes, problems: list[Problem]) -> DateRange | None:
    """The absolute date range of a Search Console `Filters.csv`, None for a relative one (`Last 28 days`)."""
    _, _, records = _table(_text(data))
    days = None
    for line, record in records:
        name, value = [*record, "", ""][:2]
        name = name.strip().lower()
        if name in PARTIAL_FILTERS:
            problems.append(
                Problem(
                    line, None, f"the export is filtered by {name} ({value.strip()}); a page's numbers would be partial"
                )
            )
        elif name == "date":
            found = _days_in(value)
            if len(found) >= 2:
                days = DateRange(min(found), max(found))
    return days


def _days_in(text: str) -> list[date]:
    """The days a filter value names, in the first spelling it uses: ISO, compact or `Nov 1, 2026`."""
    found: list[date] = []
    for pattern, layout in ((_ISO_DAY, "%Y %m %d"), (_COMPACT_DAY, "%Y %m %d"), (_WORDED_DAY, "%b %d %Y")):
        for match in pattern.finditer(text):
            try:
                found.append(datetime.strptime(" ".join(match.groups()), layout).date())
            except ValueError:
                continue
        if found:
            break
    return found


def _chart_range(data: bytes, problems: list[Problem]) -> DateRange | None:
    _, header, records = _table(_text(data))
    column = {key: i for i, key, _ in header}.get("date")
    if column is None:
        return None
    days = []
    for line, record in records:
        day = parse_day(record[column]) if column < len(record) else None
        if day is None:
            problems.append(Problem(line, "Date", f"{_cell(record, column)!r} is not a date (YYYY-MM-DD)"))
        else:
            days.append(day)
    return DateRange(min(days), max(days)) if days else None


def _range_of(
    found: DateRange | None, given: DateRange | None, missing: str, problems: list[Problem]
) -> DateRange | None:
    if found is not None and given is not None and found != given:
        problems.append(Problem(None, None, f"the export covers {found} but --from/--to say {given}"))
        return None
    days = found or given
    if days is None:
        problems.append(
            Problem(
                None,
                None,
                f"{missing}: give the days it covers (`pipeline metrics import FILE --from YYYY-MM-DD --to "
                "YYYY-MM-DD`), import the whole zip the tool exported, or export one row per day",
            )
        )
        return None
    _check_range(days, problems)
    return days


def _check_range(days: DateRange, problems: list[Problem], line: int | None = None) -> None:
    if days.last < days.first:
        problems.append(Problem(line, None, f"the range {days} ends before it starts"))
    elif (days.last - days.first).days > MAX_DAYS:
        problems.append(Problem(line, None, f"the range {days} is longer than {MAX_DAYS} days"))


def _rows(
    records: Sequence[tuple[int, list[str]]],
    address_at: int,
    labels: Mapping[int, str],
    columns: Mapping[str, int],
    date_at: int | None,
    days: DateRange | None,
    problems: list[Problem],
) -> list[ExportRow]:
    rows = []
    for line, record in records:
        address = _cell(record, address_at)
        if address.lower() in TOTAL_LABELS or address.lower().startswith("grand total"):
            continue  # GA4's total row; not a page
        row_days = days
        if date_at is not None:
            day = parse_day(_cell(record, date_at))
            if day is None:
                problems.append(
                    Problem(line, labels[date_at], f"{_cell(record, date_at)!r} is not a date (YYYY-MM-DD or YYYYMMDD)")
                )
                continue
            row_days = DateRange(day, day)
        values: dict[str, float] = {}
        for metric, at in columns.items():
            text = _cell(record, at)
            if not text and metric in AVERAGES:
                continue  # Search Console leaves position empty without impressions
            number = _duration(text) if metric == "avg_engagement_time_s" else _count(text)
            if number is None:
                problems.append(Problem(line, labels[at], f"{text!r} is not a number"))
            else:
                values[metric] = number
        if row_days is not None:
            rows.append(ExportRow(line, address, row_days, values))
    return rows


def _count(text: str) -> float | None:
    cleaned = text.strip().replace(",", "").replace("\u00a0", "").replace(" ", "")
    try:
        number = float(cleaned)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _duration(text: str) -> float | None:
    """Seconds from `65.3`, `1m 05s`, `45s` or `1h 02m 03s`."""
    plain = _count(text)
    if plain is not None:
        return plain
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _cell(record: Sequence[str], at: int) -> str:
    return record[at].strip() if at < len(record) else ""
