"""Shared fixtures: an isolated store, media folder and Dagster instance per test (or per module)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from assets import ALL_ASSETS
from pipeline import models
from pipeline.store import Store
from resources import LLMResource, MediaResource, StoreResource

REPO = Path(__file__).resolve().parents[1]
SAMPLE_KEYWORDS = REPO / "data" / "sample" / "keywords.csv"
SIX_ASSETS = ["keywords", "clusters", "ideas", "content", "image_prompts", "images"]
TABLES = [
    models.Keyword,
    models.Cluster,
    models.Idea,
    models.Content,
    models.ContentVariant,
    models.ImagePrompt,
    models.Image,
    models.ModelCall,
]


def pytest_configure(config: pytest.Config) -> None:
    # Never touch the developer's own store, media or Dagster home from tests.
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("OPENAI_API_KEY", None)


class Env:
    """One isolated pipeline environment: store, media folder, resources and a Dagster instance."""

    def __init__(self, root: Path):
        self.root = root
        self.url = f"sqlite:///{root / 'pipeline.db'}"
        self.media = root / "media"
        self.store = Store(self.url)
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources = {
            "store": StoreResource(database_url=self.url),
            "llm": LLMResource(image_size="256x256"),
            "media": MediaResource(root=str(self.media)),
        }

    def add_site(self, slug: str = "sample", keywords: Path = SAMPLE_KEYWORDS, name: str = "Home Barista Guide"):
        """Register a site in the store and its partition in the instance."""
        site = self.store.upsert_site(slug, name, str(keywords))
        if not self.instance.has_dynamic_partition("sites", slug):
            self.instance.add_dynamic_partitions("sites", [slug])
        return site

    def materialize(
        self, slug: str = "sample", selection: list[str] | None = None, **kwargs
    ) -> dg.ExecuteInProcessResult:
        """Materialize the six assets (or `selection`) for one site partition."""
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=slug,
            resources=self.resources,
            instance=self.instance,
            **kwargs,
        )

    def row_counts(self) -> dict[str, int]:
        """Rows per table, for idempotency checks."""
        with self.store.transaction() as session:
            return {m.__tablename__: session.scalar(select(func.count()).select_from(m)) for m in TABLES}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """A fresh, empty environment."""
    return Env(tmp_path)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, dg.ExecuteInProcessResult]]:
    """The sample site's full chain, run once per test module."""
    env = Env(tmp_path_factory.mktemp("sample"))
    env.add_site()
    result = env.materialize()
    assert result.success
    yield env, result
