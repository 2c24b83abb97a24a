"""Reading keyword files as keyword tools export them: encodings, title lines, separators, header names.

Documented normalisations of the file's layout (not errors):
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
- Keyword Planner's `Competition` (Low/Medium/High) and `Competition (indexed value)` (0-100) measure how
  many advertisers bid on a keyword, not how hard it is to rank for it, so neither becomes `difficulty`
  (where it would mix two scales once a site imports files from several tools); both stay in `extra`.

An unclosed quote (which would read the rest of the file into one cell) and text after a closing quote are
problems, located at the row and cell where the quoting breaks.
"""

from __future__ import annotations

import codecs
import csv
import io
import unicodedata

from pipeline.keywords.validation import MAX_REPORTED_PROBLEMS, Header, Problem, control_character

REQUIRED_COLUMNS = ("keyword",)
MAX_ROW_BYTES = 64 * 1024
MAX_TITLE_LINES = 5
DELIMITERS = (",", "\t", ";")

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
_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)


# -- encoding ---------------------------------------------------------------------------------------


def decode(raw: bytes) -> tuple[str, str, list[Problem]]:
    """The text of the file, its encoding's name, and problems: invalid bytes, oversized lines."""
    bom, codec, name = next((entry for entry in _BOMS if raw.startswith(entry[0])), (b"", "utf-8", "UTF-8"))
    body, label = raw[len(bom) :], f"{name} with byte-order mark" if bom else name
    if codec == "utf-8":
        if _looks_like_utf16(body):
            message = "looks like UTF-16 without a byte-order mark; save it as UTF-8, or as UTF-16 with one"
            return "", label, [Problem(1, None, message)]
        invalid = _check_utf8_lines(body)
        return ("" if invalid else body.decode("utf-8")), label, invalid
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        line = body[: exc.start].decode(codec, errors="replace").count("\n") + 1
        bad = body[exc.start : exc.end].hex()
        return "", label, [Problem(line, None, f"not valid {name} (bytes 0x{bad} at offset {exc.start + 2})")]
    problems: list[Problem] = []
    for number, row in enumerate(io.StringIO(text, newline=""), start=1):
        size = len(row.rstrip("\r\n").encode(codec))
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


def find_header(text: str) -> tuple[int, str, int]:
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


def read_header(cells: list[str], line: int) -> Header:
    """Map canonical column names to positions; extra columns keep their own (trimmed) names."""
    header = Header([c.strip() for c in cells], {}, [])
    for position, name in enumerate(header.names):
        if (bad := control_character(name)) is not None:
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


def from_line(text: str, lines: int) -> str:
    """`text` without its first `lines` lines (as the csv module counts them)."""
    stream = io.StringIO(text, newline="")
    offset = sum(len(stream.readline()) for _ in range(lines))
    return text[offset:]


def csv_problem(exc: csv.Error, record: str, delimiter: str, line: int, header: Header | None) -> Problem:
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
