"""Where things live on disk, resolved once from the environment.

The embedded default keeps everything under the repository: the SQLite store and media files under
`data/local/` and the Dagster instance under `.dagster/` (both git-ignored). Environment variables move
each piece elsewhere for production.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Seconds between sensor ticks unless `PIPELINE_SENSOR_INTERVAL_SECONDS` sets one for every sensor.
SENSOR_INTERVAL_SECONDS = 30
METRICS_SENSOR_INTERVAL_SECONDS = 60  # the metric sensor's own default
BATCH_SENSOR_INTERVAL_SECONDS = 300  # provider batches take minutes to hours: no need to poll faster


def data_dir() -> Path:
    """Directory for local state (SQLite store, media); `PIPELINE_DATA_DIR` overrides it."""
    return Path(os.environ.get("PIPELINE_DATA_DIR") or PROJECT_ROOT / "data" / "local")


def database_url() -> str:
    """The store's SQLAlchemy URL: `DATABASE_URL`, else a SQLite file in the data directory.

    A PostgreSQL URL without a driver (`postgresql://`, `postgres://`, as hosting consoles print them) gets
    `postgresql+psycopg2://`: SQLAlchemy would pick psycopg 3, which is not installed.
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        for bare in ("postgresql://", "postgres://"):
            if url.startswith(bare):
                return "postgresql+psycopg2://" + url.removeprefix(bare)
        return url
    path = data_dir() / "pipeline.db"
    return f"sqlite:///{path}"


def media_dir() -> Path:
    """Root folder for generated image files; `PIPELINE_MEDIA_DIR` overrides it."""
    return Path(os.environ.get("PIPELINE_MEDIA_DIR") or data_dir() / "media")


def publish_dir() -> Path:
    """Root folder for published articles (`<site>/<article>/`); `PIPELINE_PUBLISH_DIR` overrides it."""
    return Path(os.environ.get("PIPELINE_PUBLISH_DIR") or data_dir() / "publish")


def inbox_dir() -> Path:
    """Folder watched for keyword files named `SLUG.csv`; `PIPELINE_INBOX_DIR` overrides it."""
    return Path(os.environ.get("PIPELINE_INBOX_DIR") or PROJECT_ROOT / "data" / "inbox")


def metrics_dir() -> Path:
    """Folder watched for post-metric files; `PIPELINE_METRICS_DIR` overrides it."""
    return Path(os.environ.get("PIPELINE_METRICS_DIR") or PROJECT_ROOT / "data" / "metrics")


def sites_dir() -> Path:
    """Where keyword files from the inbox are kept, one immutable copy per version."""
    return data_dir() / "sites"


def dagster_home() -> Path:
    """The Dagster instance directory shared by `make ui`, the CLI and `dagster` commands."""
    return Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster")


def sensor_interval_seconds(default: int = SENSOR_INTERVAL_SECONDS) -> int:
    """Minimum seconds between ticks of a sensor: `PIPELINE_SENSOR_INTERVAL_SECONDS`, else `default`."""
    return int(os.environ.get("PIPELINE_SENSOR_INTERVAL_SECONDS", str(default)))


# A metric sensor tick evaluates at most this many articles, and starts no new batch this many seconds
# after it began (metric imports included; Dagster gives a tick 60 s); the rest waits in its cursor.
TRIGGER_MAX_ARTICLES = 5000
TRIGGER_MAX_SECONDS = 30.0


def trigger_max_articles() -> int:
    """Articles one `metric_triggers` tick evaluates at most: `PIPELINE_TRIGGER_MAX_ARTICLES` (default 5000)."""
    return max(1, int(os.environ.get("PIPELINE_TRIGGER_MAX_ARTICLES") or TRIGGER_MAX_ARTICLES))


def trigger_max_seconds() -> float:
    """Seconds after which a `metric_triggers` tick starts no new batch: `PIPELINE_TRIGGER_MAX_SECONDS` (30)."""
    return max(1.0, float(os.environ.get("PIPELINE_TRIGGER_MAX_SECONDS") or TRIGGER_MAX_SECONDS))
