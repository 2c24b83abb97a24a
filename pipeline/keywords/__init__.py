"""Reading and validating a site's keyword file: a CSV as keyword tools export it.

The whole file is validated before anything is written, so a bad file never leaves a partial import.
Every problem names the file, the row and the column; up to `MAX_REPORTED_PROBLEMS` are reported at once
so a user can fix a file in one pass. `exports` reads the file as the tools write it (encodings, title
lines, separators, header names, quoting), `validation` checks and normalises each row's values and
reports the problems; each documents its normalisations. Here, besides the entry points:
- blank lines are skipped;
- a cell that looks like a spreadsheet formula (`=`, `+`, `-` or `@` first) is text like any other and
  stored as it is. The project writes no CSV file today; one that does must pass every cell through
  `neutralize_formula`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from pipeline.keywords.exports import (
    DELIMITERS,
    MAX_ROW_BYTES,
    MAX_TITLE_LINES,
    REQUIRED_COLUMNS,
    csv_problem,
    decode,
    find_header,
    from_line,
    read_header,
)
from pipeline.keywords.validation import (
    INTENTS,
    MAX_DIFFICULTY,
    MAX_KEYWORD_CHARS,
    MAX_REPORTED_PROBLEMS,
    MAX_VOLUME,
    KeywordFileError,
    KeywordRow,
    Problem,
    normalize_keyword,
    read_row,
)

__all__ = [
    "DELIMITERS",
    "FORMULA_PREFIXES",
    "INTENTS",
    "MAX_DIFFICULTY",
    "MAX_KEYWORD_CHARS",
    "MAX_REPORTED_PROBLEMS",
    "MAX_ROW_BYTES",
    "MAX_TITLE_LINES",
    "MAX_VOLUME",
    "REQUIRED_COLUMNS",
    "KeywordFile",
    "KeywordFileError",
    "KeywordRow",
    "Problem",
    "keep_keyword_file",
    "neutralize_formula",
    "normalize_keyword",
    "parse_keyword_bytes",
    "read_keyword_bytes",
    "read_keyword_file",
]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


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
    text, encoding, problems = decode(raw)
    if problems:
        raise KeywordFileError(path, problems)
    if not text.strip():
        raise KeywordFileError(path, [empty])
    header_index, delimiter, start = find_header(text)
    body = text[start:]  # from the header on
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter, strict=True)
    try:
        cells = next(reader, [])
    except csv.Error as exc:
        raise KeywordFileError(path, [csv_problem(exc, body, delimiter, header_index + 1, None)]) from None
    header = read_header(cells, header_index + 1)
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
            problems.append(csv_problem(exc, from_line(body, consumed), delimiter, line, header))
            break
        consumed = reader.line_num
        if not any(cell.strip() for cell in record):
            blank += 1
            continue
        row, row_problems, estimated = read_row(record, header, line)
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
