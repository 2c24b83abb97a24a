"""Stage logic: one module per stage, each a function taking the store (and the model engine).

Stages do only missing work, persist each finished item before starting the next, and return a
`StageReport` that the Dagster asset turns into metadata. Items that fail are listed in the report; the
asset fails after everything else has been saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageReport:
    """What a stage did: counts, a preview table, an optional markdown preview, failures."""

    counts: dict[str, int | float] = field(default_factory=dict)
    preview: list[dict[str, Any]] = field(default_factory=list)
    markdown: str | None = None
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return ", ".join(f"{key}={value}" for key, value in self.counts.items())


class StageFailed(RuntimeError):
    """Some items failed; the others were saved. The message lists the failures."""

    def __init__(self, stage: str, report: StageReport):
        shown = "\n".join(f"  - {failure}" for failure in report.failures[:20])
        more = f"\n  ... and {len(report.failures) - 20} more" if len(report.failures) > 20 else ""
        super().__init__(
            f"{stage}: {len(report.failures)} item(s) failed, finished items were saved "
            f"({report.summary()}):\n{shown}{more}"
        )
        self.report = report
