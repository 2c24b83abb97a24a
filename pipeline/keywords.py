"""Reading and validating a site's keyword file: a CSV as keyword tools export it.

The whole file is validated before anything is written, so a bad file never leaves a partial import.
Every problem names the file, the row (the physical line number, first line = 1; a row that a quoted cell
spans over several lines is named by its first) and the column (as the file's header names it); up to
`MAX_REPORTED_PROBLEMS` are reported at once so a user can fix a file in one pass. A value the store
could not hold is such a problem, never a database error later: NaN, infinity, a number beyond the
store's INTEGER columns, a NUL or other control character. So are an unclosed quote (which would read
the rest of the file into one cell) and text after a closing quote.

Documented normalisations (not errors):
- encodings: UTF-8, UTF-8 with a byte-order mark, UTF-16 LE or BE with a byte-order mark (Google Keyword
  Planner, some Ahrefs versions); the byte-order mark is dropped;
- separators: comma, TAB or semicolon, detected from the header row (the one that yields a keyword
  column; with several, the one giving the most columns). `csv.Sniffer` is not used: it guesses from
  character counts over a sample, which title lines and commas inside semicolon-separated values
  (`1,200`, Semrush's trend `0.81,1.00`) mislead;
- up to `MAX_TITLE_LINES` title lines of one cell each above the header are skipped (Keyword Planner
  writes `Keyword Stats 2026-11-30 at 10_15_02` and `All locations` or a date range);
- header names are matched case- and spacing-insensitively, with the export names of Keyword Planner
  (`Avg. monthly searches`), Ahrefs (`Difficulty`, `Intents`), Semrush (`Keyword Difficulty`,
  `Keyword Intents`) and others (`Search Volume`, `KD`, ...); Ahrefs' `Global volume` is not the volume;
- blank lines are skipped;
- the keyword is NFKC-normalised, trimmed and its inner whitespace collapsed; keywords equal after
  lowercasing are duplicates: the first occurrence wins and later ones are counted as merged;
- numbers may carry thousands separators (`1,200`, `1 200`, also with non-breaking spaces), an integral
  decimal part (`1200.0`), an exponent (`1.2E+06`) or a K/M/B suffix (`1.5K`);
- a volume range (Keyword Planner's `1K – 10K`, en dash and non-breaking spaces included; `10 – 100`,
  `100K – 1M`; any dash) becomes its geometric midpoint, rounded: `1K – 10K` is 3162, `10 – 100` is 32,
  `100K – 1M` is 316228, `0 – 10` is 3 (a lower bound of 0 counts as 1). Keyword Planner's buckets are a
  decade wide and volumes compare by ratio (sorting, cluster totals), so the estimate should be off by
  the smallest factor wherever in its bucket the true volume lies: the geometric midpoint is never more
  than √10 ≈ 3.2× off, while the lower bound can be 10× too low and the arithmetic midpoint 5.5× too
  high. The range itself is kept in `extra` as `volume_range`, so an estimate is never taken for a count;
- intent accepts the four canonical values or their initials (`i`, `c`, `t`, `n`), several at once
  (Semrush's `Informational, Commercial`; separated by `,` `;` `/` or `|`). All are kept, once each, in
  the order of `INTENTS`: `Commercial, Informational` and `i|c` both become `informational, commercial`,
  and that whole value is the keyword's `intent` (a cluster's dominant intent counts each name);
  Ahrefs' `Branded`, `Non-branded`, `Local` and `Non-local` say who searches, not why, and are left out;
- Keyword Planner's `Competition` (Low/Medium/High) and `Competition (indexed value)` (0-100) measure how
  many advertisers bid on a keyword, not how hard it is to rank for it, so neither becomes `difficulty`
  (where it would mix two scales once a site imports files from several tools); both stay in `extra`;
- columns other than the four known ones are kept per keyword in `extra`, as text;
- a cell that looks like a spreadsheet formula (`=`, `+`, `-` or `@` first) is text like any other and
  stored as it is. The project writes no CSV file today; one that does must pass every cell through
  `neutralize_formula`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from pathlib import Path

from sqlalchemy import BigInteger, Column, SmallInteger

from pipeline.models import Keyword

REQUIRED_COLUMNS = ("keyword",)
INTENTS = ("informational", "commercial", "transactional", "navigational")
MAX_ROW_BYTES = 64 * 1024
MAX_KEYWORD_CHARS = 255  # `keywords.keyword` and `keywords.normalized` are VARCHAR(255)
MAX_TITLE_LINES = 5
MAX_REPORTED_PROBLEMS = 20
MAX_DIFFICULTY = 100
DELIMITERS = (",", "\t", ";")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _integer_maximum(column: Column) -> int:
    """The largest value an integer column holds on every backend (PostgreSQL's range is the narrower)."""
    if isinstance(column.type, BigInteger):
        return 2**63 - 1
    if isinstance(column.type, SmallInteger):
        return 2**15 - 1
    return 2**31 - 1


MAX_VOLUME = _integer_maximum(Keyword.__table__.c.volume)

_HEADER_ALIASES = {
    "keyword": "keyword",
    "keywords": "keyword",
    "query": "keyword",
    "search term": "keyword",
    "volume": "volume",
    "search volume": "volume",
    "search_volume": "volume",
    "avg. monthly searches": "volume",
    "avg. monthly searches (exact match only)": "volume",
    "monthly searches": "volume",
    "difficulty": "difficulty",
    "keyword difficulty": "difficulty",
    "keyword difficulty index": "difficulty",
    "kd": "difficulty",
    "kd %": "difficulty",
    "intent": "intent",
    "intents": "intent",
    "search intent": "intent",
    "keyword intents": "intent",
}
_KNOWN = ("keyword", "volume", "difficulty", "intent")
_INTENT_ALIASES = {name[0]: name for name in INTENTS} | {name: name for name in INTENTS}
_AUDIENCE_LABELS = {"branded", "nonbranded", "local", "nonlocal"}  # Ahrefs' `Intents` also says who searches
_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
# C0 controls but TAB, LF and CR (which CSV itself uses), DEL and C1: PostgreSQL refuses NUL in text and
# JSON, and none of the others belongs in keyword data.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_UNSIGNED = r"(?:\d{1,3}(?:[, _]\d{3})+|\d+)(?:\.\d+)?"
_SUFFIX = r"(?:\s?[KkMmBb])?"
_NUMBER = re.compile(rf"[+-]?{_UNSIGNED}(?:[eE][+-]?\d+)?{_SUFFIX}")
_RANGE = re.compile(rf"({_UNSIGNED}{_SUFFIX})\s*[-\u2010-\u2015\u2212]\s*({_UNSIGNED}{_SUFFIX})")
_MULTIPLIERS = {"k": 10**3, "m": 10**6, "b": 10**9}


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
    """The validated content of one keyword file, how it was read and what normalisation did to it."""

    path: Path
    rows: list[KeywordRow]
    merged_duplicates: int
    blank_lines: int
    encoding: str = "UTF-8"
    delimiter: str = ","
    title_lines: int = 0
    volume_ranges: int = 0


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


def neutralize_formula(value: str) -> str:
    """`value` as a CSV cell that spreadsheets show as text rather than run as a formula.

    Excel, LibreOffice and Google Sheets evaluate a cell starting with `=`, `+`, `-` or `@` as a formula
    ("CSV injection"; OWASP adds a leading TAB or CR); a leading `'` makes it text. Keyword data is text
    throughout, so every cell of any CSV the project writes goes through here, numbers included (`-5`
    becomes `'-5`). Full-width forms (`＝`) count as their ASCII letters.
    """
    if value and unicodedata.normalize("NFKC", value[0]).startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def read_keyword_bytes(path: Path | str) -> bytes:
    """The content of a keyword file, or `KeywordFileError` saying why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeywordFileError(path, [Problem(None, None, f"cannot be read ({exc.strerror or exc})")]) from exc


def keep_keyword_file(data: bytes, folder: Path) -> Path:
    """Keep validated keyword file content as `folder/keywords-<sha256 prefix>.csv`; returns that path.

    A site registers this copy, never the user's file, so editing that file later (or exporting a bad
    one over it) cannot change what the site imports; the name is the one the inbox gives its copies.
    The same content is kept once; a copy appears whole or not at all (written aside, then renamed).
    """
    kept = folder / f"keywords-{hashlib.sha256(data).hexdigest()[:16]}.csv"
    if not kept.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        # A name of its own per writer; created like any file (the umask applies), so runs can read it.
        aside = folder / f".{kept.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        aside.write_bytes(data)
        os.replace(aside, kept)
    return kept


def read_keyword_file(path: Path | str) -> KeywordFile:
    """Read, validate and normalise a keyword file; raise `KeywordFileError` naming every problem."""
    return parse_keyword_bytes(read_keyword_bytes(path), path)


def parse_keyword_bytes(raw: bytes, path: Path | str = "<upload>") -> KeywordFile:
    """Validate keyword file content given as bytes (`path` is only used in messages)."""
    path = Path(path)
    empty = Problem(None, None, "the file is empty: expected a header row with at least a 'keyword' column")
    if not raw.strip():
        raise KeywordFileError(path, [empty])
    text, encoding, problems = _decode(raw)
    if problems:
        raise KeywordFileError(path, problems)
    if not text.strip():
        raise KeywordFileError(path, [empty])
    header_index, delimiter, start = _find_header(text)
    body = text[start:]  # from the header on
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter, strict=True)
    try:
        cells = next(reader, [])
    except csv.Error as exc:
        raise KeywordFileError(path, [_csv_problem(exc, body, delimiter, header_index + 1, None)]) from None
    header = _read_header(cells, header_index + 1)
    problems = header.problems
    if problems:
        raise KeywordFileError(path, problems)

    rows: list[KeywordRow] = []
    seen: set[str] = set()
    merged = blank = ranges = 0
    consumed = reader.line_num  # lines of the file read so far, counted from the header
    while True:
        line = header_index + consumed + 1  # where the next record starts
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(_csv_problem(exc, _from_line(body, consumed), delimiter, line, header))
            break
        consumed = reader.line_num
        if not any(cell.strip() for cell in record):
            blank += 1
            continue
        row, row_problems, estimated = _read_row(record, header, line)
        problems += row_problems
        ranges += estimated
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
    return KeywordFile(
        path=path,
        rows=rows,
        merged_duplicates=merged,
        blank_lines=blank,
        encoding=encoding,
        delimiter=delimiter,
        title_lines=header_index,
        volume_ranges=ranges,
    )


# -- encoding ---------------------------------------------------------------------------------------


def _decode(raw: bytes) -> tuple[str, str, list[Problem]]:
    """The text of the file, its encoding's name, and problems: invalid bytes, oversized lines."""
    bom, codec, name = next((entry for entry in _BOMS if raw.startswith(entry[0])), (b"", "utf-8", "UTF-8"))
    body, label = raw[len(bom) :], f"{name} with byte-order mark" if bom else name
    if codec == "utf-8":
        if _looks_like_utf16(body):
            message = "looks like UTF-16 without a byte-order mark; save it as UTF-8, or as UTF-16 with one"
            return "", label, [Problem(1, None, message)]
        problems = _check_utf8_lines(body)
        return ("" if problems else body.decode("utf-8")), label, problems
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        line = body[: exc.start].decode(codec, errors="replace").count("\n") + 1
        bad = body[exc.start : exc.end].hex()
        return "", label, [Problem(line, None, f"not valid {name} (bytes 0x{bad} at offset {exc.start + 2})")]
    problems = []
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        size = len(line.rstrip("\r\n").encode(codec))
        if size > MAX_ROW_BYTES:
            problems.append(_oversized(number, size))
            if len(problems) >= MAX_REPORTED_PROBLEMS:
                break
    return ("" if problems else text), label, problems


def _looks_like_utf16(body: bytes) -> bool:
    """Nearly every other byte of the first 512 is 0: UTF-16 (of mostly ASCII text) without a BOM."""
    sample = body[:512]
    if len(sample) < 8:
        return False
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    return max(even, odd) >= 0.9 * (len(sample) // 2) and min(even, odd) == 0


def _check_utf8_lines(body: bytes) -> list[Problem]:
    """Reject oversized lines and invalid UTF-8 before parsing, with the line they are on."""
    problems = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if len(line) > MAX_ROW_BYTES:
            problems.append(_oversized(number, len(line)))
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


def _oversized(line: int, size: int) -> Problem:
    return Problem(line, None, f"row is {size:,} bytes long; the limit is {MAX_ROW_BYTES:,} bytes")


# -- layout: title lines, separator, header ---------------------------------------------------------------


def _find_header(text: str) -> tuple[int, str, int]:
    """(title lines above the header, separator, offset of the header in `text`).

    The header is the first of the leading lines in which some separator yields a keyword column, when
    every line above it is a title (at most one non-empty cell). Failing that, the first non-blank line
    is read as the header with the separator giving the most cells, and its problems say what was found.
    """
    lines: list[tuple[int, str]] = []
    offset = 0
    for line in io.StringIO(text, newline=""):
        lines.append((offset, line))
        offset += len(line)
        if len(lines) > MAX_TITLE_LINES:
            break
    for index, (start, line) in enumerate(lines):
        candidates = [d for d in DELIMITERS if any(_canonical(c) == "keyword" for c in _split(line, d))]
        if not candidates:
            continue
        delimiter = max(candidates, key=lambda d: len(_split(line, d)))
        if all(sum(1 for c in _split(above, delimiter) if c.strip()) <= 1 for _, above in lines[:index]):
            return index, delimiter, start
        break
    index, (start, line) = next(((i, entry) for i, entry in enumerate(lines) if entry[1].strip()), (0, lines[0]))
    return index, max(DELIMITERS, key=lambda d: len(_split(line, d))), start


def _split(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return [line]


def _canonical(name: str) -> str:
    label = " ".join(unicodedata.normalize("NFKC", name).strip().lower().split())
    return _HEADER_ALIASES.get(label, name.strip())


@dataclass
class _Header:
    names: list[str]  # as the file writes them (trimmed), by position
    columns: dict[str, int]  # the four known canonical names and every other column's own name -> position
    problems: list[Problem]

    def name(self, position: int) -> str | None:
        return (self.names[position] or None) if position < len(self.names) else None


def _read_header(cells: list[str], line: int) -> _Header:
    """Map canonical column names to positions; extra columns keep their own (trimmed) names."""
    header = _Header([c.strip() for c in cells], {}, [])
    for position, name in enumerate(header.names):
        if (bad := _control_character(name)) is not None:
            header.problems.append(Problem(line, name, bad))
            continue
        canonical = _canonical(name)
        if not canonical:
            continue
        if canonical in header.columns:
            header.problems.append(Problem(line, name, "column appears twice in the header"))
            continue
        header.columns[canonical] = position
    missing = [c for c in REQUIRED_COLUMNS if c not in header.columns]
    if missing:
        found = ", ".join(repr(name) for name in header.names) or "nothing"
        header.problems.append(Problem(line, missing[0], f"required column missing from the header (found: {found})"))
    return header


# -- quoting ------------------------------------------------------------------------------------------------


def _from_line(text: str, lines: int) -> str:
    """`text` without its first `lines` lines (as the csv module counts them)."""
    stream = io.StringIO(text, newline="")
    offset = sum(len(stream.readline()) for _ in range(lines))
    return text[offset:]


def _csv_problem(exc: csv.Error, record: str, delimiter: str, line: int, header: _Header | None) -> Problem:
    """Say where and how the record starting at `record` (on `line`) breaks the quoting rules."""
    found = _quote_problem(record, delimiter)
    if found is None:
        return Problem(line, None, f"cannot be read as CSV ({exc})")
    lines_down, position, unclosed = found
    column = header.name(position) if header else None
    if unclosed:
        message = (
            "a quote opens this cell and is never closed, so every line after it would be read into this "
            "one cell; close the quote or remove it"
        )
    else:
        message = "text follows the closing quote of this cell; quote the whole cell (doubling inner quotes)"
    return Problem(line + lines_down, column, message)


def _quote_problem(record: str, delimiter: str) -> tuple[int, int, bool] | None:
    """(lines below the record's first line, cell position, unclosed?) of the first quoting error in the
    record `record` starts with, read by the rules of the csv module's default dialect."""
    line = position = 0
    state = "start"  # start of a cell, "plain" cell, "quoted" cell, "closed" quote
    opened = (0, 0)
    index, end = 0, len(record)
    while index < end:
        char = record[index]
        index += 1
        if state == "quoted":
            if char == '"' and record.startswith('"', index):
                index += 1
            elif char == '"':
                state = "closed"
            elif char == "\n" or (char == "\r" and not record.startswith("\n", index)):
                line += 1
            continue
        if char == delimiter:
            position, state = position + 1, "start"
        elif char in "\r\n":
            return None  # the record ended without a quoting error
        elif state == "closed":
            return line, position, False
        elif state == "start" and char == '"':
            state, opened = "quoted", (line, position)
        else:
            state = "plain"
    return (*opened, True) if state == "quoted" else None


# -- values ---------------------------------------------------------------------------------------------------


class _BadValue(ValueError):
    """A cell that cannot be read; the message is the user-facing explanation."""


def _read_row(record: list[str], header: _Header, line: int) -> tuple[KeywordRow | None, list[Problem], int]:
    """The row's keyword (or None) with its problems, and 1 if its volume was a range."""
    problems: list[Problem] = []
    cells: dict[str, str] = {}
    for name, position in header.columns.items():
        value = record[position] if position < len(record) else ""
        if name == "keyword" and ("\n" in value or "\r" in value):
            message = "keyword runs over several lines: a quote left open joins rows into one cell"
            problems.append(Problem(line, header.names[position], message))
        elif (bad := _control_character(value)) is not None:
            problems.append(Problem(line, header.names[position], bad))
        else:
            cells[name] = value.strip()

    def check(name: str, problem: str | None) -> None:
        if problem:
            problems.append(Problem(line, header.names[header.columns[name]], problem))

    def parsed(name: str, read):
        if not cells.get(name):
            return None
        try:
            return read(cells[name])
        except _BadValue as bad:
            check(name, str(bad))
            return None

    keyword = " ".join(unicodedata.normalize("NFKC", cells.get("keyword", "")).split())
    normalized = normalize_keyword(keyword)
    if "keyword" in cells:
        length = max(len(keyword), len(normalized))  # lowercasing can lengthen: `İ` is two characters after
        check("keyword", "keyword is empty" if not keyword else None)
        too_long = f"keyword is {length} characters; the limit is {MAX_KEYWORD_CHARS}"
        check("keyword", too_long if length > MAX_KEYWORD_CHARS else None)
    volume = parsed("volume", _volume)
    difficulty = parsed("difficulty", lambda text: _whole_number(text, MAX_DIFFICULTY))
    intents = parsed("intent", _intents) or ()
    if problems:
        return None, problems, 0
    extra = {name: cells[name] for name in header.columns if name not in _KNOWN and name in cells}
    estimated = isinstance(volume, tuple)
    if isinstance(volume, tuple):
        volume, written = volume
        extra.setdefault("volume_range", written)
    row = KeywordRow(
        keyword=keyword,
        normalized=normalized,
        volume=volume,
        difficulty=difficulty,
        intent=", ".join(intents) or None,
        extra=extra,
        line=line,
    )
    return row, problems, int(estimated)


def _control_character(value: str) -> str | None:
    found = _CONTROL.search(value)
    if found is None:
        return None
    code = ord(found.group())
    name = " (NUL)" if code == 0 else ""
    return f"contains the control character U+{code:04X}{name} at character {found.start() + 1}; remove it"


def _volume(text: str) -> int | tuple[int, str]:
    """A whole number, or for a range `(its geometric midpoint, the range as written)`."""
    cleaned = unicodedata.normalize("NFKC", text).strip()
    bounds = _RANGE.fullmatch(cleaned)
    if bounds is None:
        return _whole_number(text, MAX_VOLUME)
    low, high = (_whole_number(bound, MAX_VOLUME) for bound in bounds.groups())
    if low > high:
        raise _BadValue(f"{_quote(text)} is a range whose lower bound is above its upper bound")
    return round(math.sqrt(max(low, 1) * high)) if high else 0, cleaned


def _whole_number(text: str, maximum: int) -> int:
    cleaned = unicodedata.normalize("NFKC", text).strip()
    if cleaned.lower().lstrip("+-") in {"inf", "infinity"}:
        raise _BadValue(f"{_quote(text)} is not a finite number")
    if _NUMBER.fullmatch(cleaned) is None:
        raise _BadValue(f"{_quote(text)} is not a number")
    digits = re.sub(r"[, _]", "", cleaned)
    try:
        number = Decimal(digits.rstrip("KkMmBb")) * _MULTIPLIERS.get(digits[-1].lower(), 1)
    except DecimalException:  # e.g. an exponent beyond what `decimal` multiplies
        raise _BadValue(f"{_quote(text)} is above the maximum of {maximum:,}") from None
    if number < 0:
        raise _BadValue(f"{_quote(text)} is not a whole number >= 0")
    if number > maximum:
        limit = " (the largest number the store's column holds)" if maximum == MAX_VOLUME else ""
        raise _BadValue(f"{_quote(text)} is above the maximum of {maximum:,}{limit}")
    if number != number.to_integral_value():
        raise _BadValue(f"{_quote(text)} is not a whole number >= 0")
    return int(number)


def _intents(text: str) -> tuple[str, ...]:
    """The canonical intents a cell names, once each, in the order of `INTENTS`."""
    found: set[str] = set()
    for part in re.split(r"[,;/|]", unicodedata.normalize("NFKC", text)):
        label = part.strip().lower()
        if not label or re.sub(r"[\s_-]+", "", label) in _AUDIENCE_LABELS:
            continue
        intent = _INTENT_ALIASES.get(label)
        if intent is None:
            raise _BadValue(f"{_quote(part.strip())} is not one of {', '.join(INTENTS)}")
        found.add(intent)
    return tuple(name for name in INTENTS if name in found)


def _quote(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
