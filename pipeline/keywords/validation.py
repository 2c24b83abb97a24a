"""Validating and normalising the rows of a keyword file, and reporting what is wrong with them.

Every problem names the row (the physical line number, first line = 1; a row that a quoted cell spans over
several lines is named by its first) and the column (as the file's header names it); `KeywordFileError`
lists up to `MAX_REPORTED_PROBLEMS` of them at once, so a user can fix a file in one pass. A value the
store could not hold is such a problem, never a database error later: NaN, infinity, a number beyond the
store's INTEGER columns, a NUL or other control character.

Documented normalisations of values (not errors):
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
- columns other than the four known ones are kept per keyword in `extra`, as text.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import BigInteger, ColumnElement, SmallInteger

from pipeline.models import Keyword

INTENTS = ("informational", "commercial", "transactional", "navigational")
MAX_KEYWORD_CHARS = 255  # `keywords.keyword` and `keywords.normalized` are VARCHAR(255)
MAX_REPORTED_PROBLEMS = 20
MAX_DIFFICULTY = 100

V = TypeVar("V")


def _integer_maximum(column: ColumnElement[Any]) -> int:
    """The largest value an integer column holds on every backend (PostgreSQL's range is the narrower)."""
    if isinstance(column.type, BigInteger):
        return 2**63 - 1
    if isinstance(column.type, SmallInteger):
        return 2**15 - 1
    return 2**31 - 1


MAX_VOLUME = _integer_maximum(Keyword.__table__.c.volume)

_KNOWN = ("keyword", "volume", "difficulty", "intent")
_INTENT_ALIASES = {name[0]: name for name in INTENTS} | {name: name for name in INTENTS}
_AUDIENCE_LABELS = {"branded", "nonbranded", "local", "nonlocal"}  # Ahrefs' `Intents` also says who searches
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


@dataclass
class Header:
    """A file's header row: its column names, where each column is, and what is wrong with it."""

    names: list[str]  # as the file writes them (trimmed), by position
    columns: dict[str, int]  # the four known canonical names and every other column's own name -> position
    problems: list[Problem]

    def name(self, position: int) -> str | None:
        """The column name the file gives at `position`, or None for an unnamed or missing column."""
        return (self.names[position] or None) if position < len(self.names) else None


class _BadValue(ValueError):
    """A cell that cannot be read; the message is the user-facing explanation."""


def read_row(record: list[str], header: Header, line: int) -> tuple[KeywordRow | None, list[Problem], int]:
    """The row's keyword (or None) with its problems, and 1 if its volume was a range."""
    problems: list[Problem] = []
    cells: dict[str, str] = {}
    for name, position in header.columns.items():
        value = record[position] if position < len(record) else ""
        if name == "keyword" and ("\n" in value or "\r" in value):
            message = "keyword runs over several lines: a quote left open joins rows into one cell"
            problems.append(Problem(line, header.names[position], message))
        elif (bad := control_character(value)) is not None:
            problems.append(Problem(line, header.names[position], bad))
        else:
            cells[name] = value.strip()

    def check(name: str, problem: str | None) -> None:
        if problem:
            problems.append(Problem(line, header.names[header.columns[name]], problem))

    def parsed(name: str, read: Callable[[str], V]) -> V | None:
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


def control_character(value: str) -> str | None:
    """What to say about the first control character in `value`, or None if it has none."""
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
