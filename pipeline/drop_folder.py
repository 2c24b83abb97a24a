"""Watched folders (the keyword inbox, the metrics folder): reading what was dropped there, one entry at a time.

A folder holds whatever users put in it, so nothing in it may stall or fail the others: every entry whose
name ends in `.csv` (in any letter case: `X.CSV` counts) is looked at with `lstat`/`stat` before it is
opened, and only regular files (or links to one) are read. A folder, a FIFO (never opened: reading one
blocks until a writer comes), a socket, a device, a dangling or looping link, an unreadable or oversized
file becomes an entry with a `problem` instead of data. Other names are not candidates and are ignored.

Each entry has a fingerprint: the SHA-256 of a readable file's content, otherwise what the entry is
(`fifo`, `directory`, ...), so callers can handle an entry once per content and report a bad one once.
`scan_entries` is the one loop both watched folders run: skip what was handled, use the rest, record
what cannot be used in the store's rejected files and resolve the rejections whose file is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from pipeline.store import Store

SUFFIX = ".csv"
MAX_FILE_BYTES = 100 * 1024 * 1024  # a sensor tick reads the file into memory; bigger is not an export we expect

_KINDS = {
    stat.S_IFDIR: ("directory", "a folder, not a file"),
    stat.S_IFIFO: ("fifo", "a named pipe (FIFO), not a regular file; it was not opened"),
    stat.S_IFSOCK: ("socket", "a socket, not a regular file"),
    stat.S_IFCHR: ("char-device", "a character device, not a regular file"),
    stat.S_IFBLK: ("block-device", "a block device, not a regular file"),
}


T = TypeVar("T")


class FolderUnreadable(OSError):
    """The watched folder itself cannot be listed."""


class Unusable(ValueError):
    """An entry rejected by the code using it; the message is the problem recorded and reported."""


@dataclass(frozen=True)
class Entry:
    """One candidate in a watched folder: its content, or why it cannot be used."""

    name: str  # printable: bytes that are not UTF-8 are shown as \\xNN
    path: Path
    fingerprint: str
    data: bytes | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Rejected:
    """An entry that cannot be used, and why (`fingerprint` as in `Entry`)."""

    path: Path
    fingerprint: str
    problem: str
    name: str = ""

    @property
    def summary(self) -> str:
        """The first concrete problem on one line, e.g. `- row 2, column 'volume': 'lots' is not a number`."""
        lines = [line.strip() for line in self.problem.splitlines() if line.strip()]
        if len(lines) <= 1:
            return lines[0] if lines else ""
        more = len(lines) - 2
        return lines[1] + (f" (and {more} more)" if more > 0 else "")


def read_folder(folder: Path, suffix: str | tuple[str, ...] = SUFFIX, max_bytes: int | None = None) -> list[Entry]:
    """Every `*suffix` entry of `folder` (case-insensitive; `suffix` may list several), by name, read or with its
    problem; never blocks."""
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        with os.scandir(folder) as listing:
            names = sorted(entry.name for entry in listing if entry.name.lower().endswith(suffix))
    except OSError as error:
        raise FolderUnreadable(error.errno, f"cannot list {folder}: {error.strerror or error}") from error
    return [read_entry(folder / name, max_bytes) for name in names]


def read_entry(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Entry:
    """One entry of a watched folder: `lstat`, follow a link with `stat`, read only a regular file."""
    name = printable(path.name)
    try:
        info = path.lstat()
    except OSError as error:  # removed since the folder was listed
        return Entry(name, path, "vanished", problem=f"disappeared while being read ({error.strerror or error})")
    link = ""
    if stat.S_ISLNK(info.st_mode):
        target = _link_target(path)
        link = f"a symbolic link to {target}: "
        try:
            info = path.stat()
        except FileNotFoundError:
            return _problem(path, f"dangling-link:{target}", f"a symbolic link to {target}, which does not exist")
        except OSError as error:
            return _problem(path, f"broken-link:{target}", f"{link}cannot be followed ({error.strerror or error})")
    if not stat.S_ISREG(info.st_mode):
        kind, text = _KINDS.get(stat.S_IFMT(info.st_mode), ("special", "not a regular file"))
        return _problem(path, kind, link + text)
    state = f"{info.st_size}:{info.st_mtime_ns}"
    if info.st_size > max_bytes:
        return _problem(path, f"too-large:{state}", f"{link}{info.st_size:,} bytes; the limit is {max_bytes:,} bytes")
    try:
        data = _read_regular(path, max_bytes)
    except OSError as error:
        return _problem(path, f"unreadable:{state}", f"{link}cannot be read ({error.strerror or error})")
    return Entry(name, path, hashlib.sha256(data).hexdigest(), data=data)


@dataclass
class Scan(Generic[T]):
    """What one look at a watched folder did; `present` maps every candidate's name to its fingerprint."""

    used: list[T] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unchanged: int = 0
    present: dict[str, str] = field(default_factory=dict)


def scan_entries(
    store: Store,
    folder: str,
    where: Path,
    entries: Sequence[Entry],
    seen: Mapping[str, str],
    use: Callable[[Entry], T | None],
    *,
    kind: str,
    rejects: tuple[type[Exception], ...] = (),
    fingerprint: Callable[[Entry], str] | None = None,
) -> Scan[T]:
    """Use every entry of `where` not handled yet (`seen`: name -> fingerprint), one at a time.

    `use(entry)` returns what the entry gave, or None if there was nothing new in it; raising
    `Unusable` or one of `rejects` rejects it. An entry that cannot be read, or is rejected, is recorded in
    the store's rejected files under `folder` (a `kind` such as "metrics file" names it in the problem) and
    never stops the others; rejections whose entry is gone or changed are resolved at the end.
    `fingerprint` gives an entry's fingerprint when it is not the entry's own.
    """
    scan: Scan[T] = Scan()
    caught: tuple[type[Exception], ...] = (Unusable, *rejects)
    for entry in entries:
        handled = fingerprint(entry) if fingerprint else entry.fingerprint
        scan.present[entry.name] = handled
        if seen.get(entry.name) == handled:
            scan.unchanged += 1
            continue
        try:
            if entry.problem is not None:
                raise Unusable(f"{kind} {entry.name}: {entry.problem}; skipped")
            result = use(entry)
        except caught as error:
            store.record_rejected_file(folder, entry.name, str(where / entry.name), handled, str(error))
            scan.rejected.append(Rejected(entry.path, handled, str(error), name=entry.name))
            continue
        if result is None:
            scan.unchanged += 1
        else:
            scan.used.append(result)
    store.resolve_rejected_files(folder, scan.present)
    return scan


def handled_entries(cursor: str | None, warn: Callable[[str], None], folder: str) -> dict[str, str]:
    """The entries a sensor's cursor says were handled (name -> fingerprint); a cursor that is not ours
    (edited by hand) starts afresh, saying so through `warn`."""
    try:
        seen = json.loads(cursor) if cursor else {}
    except ValueError:
        seen = None
    if not isinstance(seen, dict):
        warn(f"{folder}: cursor is not a JSON object of file names; every file is looked at again")
        return {}
    return {str(name): str(fingerprint) for name, fingerprint in seen.items()}


def printable(name: str) -> str:
    """A file name that can be printed and stored: undecodable bytes (surrogate escapes) become `\\xNN`."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_regular(path: Path, max_bytes: int) -> bytes:
    # O_NONBLOCK: if the entry was swapped for a FIFO since `stat`, opening it returns at once instead of waiting
    # for a writer; fstat then refuses it before any read.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "replaced by something that is not a regular file while being read")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(0, f"grew past the limit of {max_bytes:,} bytes while being read")
    return data


def _link_target(path: Path) -> str:
    try:
        return printable(os.readlink(path))
    except OSError:
        return "?"


def _problem(path: Path, what: str, problem: str) -> Entry:
    # Fingerprints are short and fixed-size: what the entry is, plus a digest of the details (a link's target).
    kind, _, details = what.partition(":")
    fingerprint = f"{kind}:{hashlib.sha256(details.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"
    return Entry(printable(path.name), path, fingerprint if details else kind, problem=problem)
