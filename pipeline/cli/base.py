"""What every command module shares: the store it opens, the tables it prints, the usage error it raises."""

from __future__ import annotations

from pipeline import settings
from pipeline.output_safety import terminal_text
from pipeline.store import Store


class UsageError(ValueError):
    """A command given arguments that do not make sense together, or invalid settings."""


def open_store() -> Store:
    """The store this environment points at (`DATABASE_URL`)."""
    return Store(settings.database_url())


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """Print `rows` under `columns`, each column as wide as its widest cell."""
    # Cells can hold model text (titles): control characters are shown as escapes, never sent raw.
    columns = [terminal_text(column) for column in columns]
    rows = [[terminal_text(value) for value in row] for row in rows]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
