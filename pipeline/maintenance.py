"""Weekly clean-up: media files no image row references, and response-cache entries not used for long."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.store import Store

# A file younger than this may belong to an images run that has written it but not yet recorded it.
GRACE_SECONDS = 3600


@dataclass(frozen=True)
class CleanupReport:
    """What a clean-up removed."""

    files_deleted: int
    bytes_freed: int
    cache_entries_deleted: int


def clean_up(store: Store, media_dir: Path, cache_max_age_days: int = 60, *, now: float | None = None) -> CleanupReport:
    """Delete orphaned media files (older than the grace period) and cache entries unused for the given days."""
    now = now or time.time()
    referenced = {str(Path(p).resolve()) for p in store.media_paths()}
    files = freed = 0
    if media_dir.exists():
        for path in media_dir.rglob("*"):
            if not path.is_file() or str(path.resolve()) in referenced:
                continue
            stat = path.stat()
            if now - stat.st_mtime < GRACE_SECONDS:
                continue
            path.unlink()
            files += 1
            freed += stat.st_size
    cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=cache_max_age_days)
    return CleanupReport(files, freed, store.delete_stale_cache_entries(cutoff))
