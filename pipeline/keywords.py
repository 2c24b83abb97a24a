"""Reading and validating a site's keyword file (CSV).

The whole file is validated before anything is written, so a bad file never leaves a partial import.
Every problem names the file, the row (the physical line number, header = line 1) and the column; up to
`MAX_REPORTED_PROBLEMS` are reported at once so a user can fix a file in one pass.

Documented normalisations (not errors):
- a UTF-8 byte-order mark is ignored; header names are matched case-insensitively and common export
  names are accepted (`search volume`, `kd`, `keyword difficulty`, ...);
- blank lines are skipped;
- the keyword is NFKC-normalised, trimmed and its inner whitespace collapsed; keywords equal after
  lowercasing are duplicates: the first occurrence wins and later ones are counted as merged;
- numbers may carry thousands separators (`1,200`, `1 200`) and an integral decimal part (`1200.0`);
- intent accepts the four canonical values or their initials (`i`, `c`, `t`, `n`); a multi-valued
  intent (`informational, commercial`) keeps the first;
- columns other than the four known ones are kept per keyword in `extra`.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS = ("keyword",)
INTENTS = ("informational", "commercial", "transactional", "navigational")
MAX_ROW_BYTES = 64 * 1024
MAX_KEYWORD_CHARS = 255
MAX_REPORTED_PROBLEMS = 20

_HEADER_ALIASES = {
    "keyword": "keyword",
    "keywords": "keyword",
    "query": "keyword",
    "search term": "keyword",
    "volume": "volume",
    "search volume": "volume",
    "search_volume": "volume",
    "avg. monthly searches": "volume",
    "monthly searches": "volume",
    "difficulty": "difficulty",
    "keyword difficulty": "difficulty",
    "kd": "difficulty",
    "kd %": "difficulty",
    "intent": "intent",
    "search intent": "intent",
}
_INTENT_ALIASES = {name[0]: name for name in INTENTS} | {name: name for name in INTENTS}


@dataclass(frozen=True)
class KeywordRow:
    """One validated keyword, ready to upsert."""

    keyword: str
    normalized: str
    volume: int | None
    difficulty: int | None
    intent: str | None
    extra: dict[str, str] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class KeywordFile:
    """The validated content of one keyword file and what normalisation did to it."""

    path: Path
    rows: list[KeywordRow]
    merged_duplicates: int
    blank_lines: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a keyword file, located as precisely as possible."""

    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"row {self.line}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class KeywordFileError(ValueError):
    """A keyword file that cannot be imported; the message lists every problem found (up to a cap)."""

    def __init__(self, path: Path | str, problems: list[Problem]):
        self.path = Path(path)
        self.problems = problems
        shown = problems[:MAX_REPORTED_PROBLEMS]
        lines = [f"keyword file {self.path}: {len(problems)} problem(s), nothing was imported"]
        lines += [f"  - {p}" for p in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more")
        super().__init__("\n".join(lines))


def normalize_keyword(text: str) -> str:
    """The natural key of a keyword: NFKC, lowercase, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def read_keyword_file(path: Path | str) -> KeywordFile:
    """Read, validate and normalise a keyword CSV; raise `KeywordFileError` naming every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise KeywordFileError(path, [Problem(None, None, f"cannot be read ({exc.strerror or exc})")]) from exc
    return parse_keyword_bytes(raw, path)


def parse_keyword_bytes(raw: bytes, path: Path | str = "<upload>") -> KeywordFile:
    """Validate keyword CSV content given as bytes (`path` is only used in messages)."""
    path = Path(path)
    if not raw.strip():
        raise KeywordFileError(
            path, [Problem(None, None, "the file is empty: expected a header row with at least a 'keyword' column")]
        )
    problems = _check_physical_lines(raw)
    if problems:
        raise KeywordFileError(path, problems)
    text = raw.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    columns, problems = _read_header(header or [])
    if problems:
        raise KeywordFileError(path, problems)

    rows: list[KeywordRow] = []
    seen: set[str] = set()
    merged = blank = 0
    for record in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            blank += 1
            continue
        row, row_problems = _read_row(record, columns, line)
        problems += row_problems
        if row is None:
            continue
        if row.normalized in seen:
            merged += 1
            continue
        seen.add(row.normalized)
        rows.append(row)
    if problems:
        raise KeywordFileError(path, problems)
    if not rows:
        raise KeywordFileError(path, [Problem(None, None, "the file has a header but no keyword rows")])
    return KeywordFile(path=path, rows=rows, merged_duplicates=merged, blank_lines=blank)


def _check_physical_lines(raw: bytes) -> list[Problem]:
    """Reject oversized lines and invalid UTF-8 before parsing, with the line they are on."""
    problems = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if len(line) > MAX_ROW_BYTES:
            problems.append(
                Problem(number, None, f"row is {len(line):,} bytes long; the limit is {MAX_ROW_BYTES:,} bytes")
            )
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line[exc.start : exc.start + 1].hex()
            problems.append(
                Problem(number, None, f"not valid UTF-8 (byte 0x{bad} at offset {exc.start}); save the file as UTF-8")
            )
        if len(problems) >= MAX_REPORTED_PROBLEMS:
            break
    return problems


def _read_header(header: list[str]) -> tuple[dict[str, int], list[Problem]]:
    """Map canonical column names to positions; extra columns keep their own (trimmed) names."""
    columns: dict[str, int] = {}
    problems = []
    for position, name in enumerate(header):
        label = " ".join(name.strip().lower().split())
        canonical = _HEADER_ALIASES.get(label, name.strip())
        if not canonical:
            continue
        if canonical in columns:
            problems.append(Problem(1, name.strip(), "column appears twice in the header"))
            continue
        columns[canonical] = position
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        found = ", ".join(repr(h.strip()) for h in header) or "nothing"
        problems.append(Problem(1, missing[0], f"required column missing from the header (found: {found})"))
    return columns, problems


def _read_row(record: list[str], columns: dict[str, int], line: int) -> tuple[KeywordRow | None, list[Problem]]:
    problems: list[Problem] = []

    def cell(name: str) -> str:
        position = columns.get(name)
        return record[position].strip() if position is not None and position < len(record) else ""

    keyword = " ".join(unicodedata.normalize("NFKC", cell("keyword")).split())
    if not keyword:
        problems.append(Problem(line, "keyword", "keyword is empty"))
    elif len(keyword) > MAX_KEYWORD_CHARS:
        problems.append(
            Problem(line, "keyword", f"keyword is {len(keyword)} characters; the limit is {MAX_KEYWORD_CHARS}")
        )
    volume = _whole_number(cell("volume"), line, "volume", problems, maximum=None)
    difficulty = _whole_number(cell("difficulty"), line, "difficulty", problems, maximum=100)
    intent = _intent(cell("intent"), line, problems)
    known = {"keyword", "volume", "difficulty", "intent"}
    extra = {name: record[pos].strip() for name, pos in columns.items() if name not in known and pos < len(record)}
    if problems:
        return None, problems
    row = KeywordRow(
        keyword=keyword,
        normalized=normalize_keyword(keyword),
        volume=volume,
        difficulty=difficulty,
        intent=intent,
        extra=extra,
        line=line,
    )
    return row, problems


_THOUSANDS = re.compile(r"(?<=\d)[,_ ](?=\d{3}\b)")


def _whole_number(value: str, line: int, column: str, problems: list[Problem], maximum: int | None) -> int | None:
    if not value:
        return None
    cleaned = _THOUSANDS.sub("", value)
    try:
        number = float(cleaned)
    except ValueError:
        problems.append(Problem(line, column, f"{_quote(value)} is not a number"))
        return None
    if number != int(number) or number < 0:
        problems.append(Problem(line, column, f"{_quote(value)} is not a whole number >= 0"))
        return None
    if maximum is not None and number > maximum:
        problems.append(Problem(line, column, f"{_quote(value)} is above the maximum of {maximum}"))
        return None
    return int(number)


def _intent(value: str, line: int, problems: list[Problem]) -> str | None:
    if not value:
        return None
    first = re.split(r"[,;/|]", value)[0].strip().lower()
    intent = _INTENT_ALIASES.get(first)
    if intent is None:
        problems.append(Problem(line, "intent", f"{_quote(value)} is not one of {', '.join(INTENTS)}"))
    return intent


def _quote(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
