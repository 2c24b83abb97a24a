"""The near-duplicates check: 5-word shingles, MinHash signatures and LSH banding find the pairs of
articles of a site whose texts are nearly the same."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from pipeline.article_html import plain_text
from pipeline.content_checks.model import (
    CheckedArticle,
    CheckOutcome,
    _check,
    _failure,
    _outcome,
)
from pipeline.sites import SiteSettings

# --- near duplicates --------------------------------------------------------------------------------------

SHINGLE_WORDS = 5
MINHASH_PERMUTATIONS = 128
_WORD = re.compile(r"\w+")
_SHINGLE_BASE = np.uint64(1099511628211)  # FNV prime: 5 word hashes folded into one shingle hash


@lru_cache(maxsize=1 << 17)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def shingle_hashes(text: str, size: int = SHINGLE_WORDS) -> np.ndarray:
    """The sorted, distinct 64-bit hashes of the `size`-word shingles of `text` (lowercased words); a text
    of `size` words or fewer is one shingle. Folded from word hashes with numpy: no string per shingle."""
    found = _WORD.findall(text.lower())
    if not found:
        return np.empty(0, dtype=np.uint64)
    ids = np.fromiter((_word_hash(w) for w in found), dtype=np.uint64, count=len(found))
    count = max(len(ids) - size + 1, 1)
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(min(size, len(ids))):
        hashes = hashes * _SHINGLE_BASE + ids[offset : offset + count]  # wraps modulo 2^64, as intended
    return np.unique(hashes)


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two sorted distinct hash arrays (0 for two empty ones)."""
    common = np.intersect1d(first, second, assume_unique=True).size
    union = first.size + second.size - common
    return common / union if union else 0.0


_rng = np.random.default_rng(20261201)  # fixed: signatures are comparable across runs
_A = _rng.integers(1, 1 << 63, size=MINHASH_PERMUTATIONS, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 1 << 63, size=MINHASH_PERMUTATIONS, dtype=np.uint64)


def minhash(hashes: np.ndarray) -> np.ndarray:
    """The MinHash signature (`MINHASH_PERMUTATIONS` values) of a set of 64-bit shingle hashes."""
    if hashes.size == 0:
        return np.full(MINHASH_PERMUTATIONS, np.iinfo(np.uint64).max, dtype=np.uint64)
    # Multiply-shift hashing, one odd multiplier per permutation (uint64 arithmetic wraps modulo 2^64).
    values = (_A[:, None] * hashes[None, :] + _B[:, None]) >> np.uint64(32)
    return values.min(axis=1)  # type: ignore[no-any-return]


def lsh_rows(threshold: float) -> int:
    """Signature rows per LSH band: 4 (32 bands: a pair with a Jaccard of 0.6 is a candidate with
    probability 0.98, 0.8: >0.999) for thresholds from 0.5, else 2 (64 bands) so low thresholds keep recall."""
    return 4 if threshold >= 0.5 else 2


def near_duplicate_pairs(texts: Mapping[int, str], threshold: float) -> list[tuple[int, int, float]]:
    """Pairs of keys whose texts have a 5-word-shingle Jaccard similarity of at least `threshold`.

    MinHash signatures banded into buckets (LSH) find the candidate pairs in about linear time, so a site of
    a few thousand articles is compared without measuring every pair; each candidate's exact Jaccard decides.
    """
    sets = {key: shingle_hashes(text) for key, text in texts.items()}
    keys = [key for key, found in sets.items() if found.size]
    signatures = {key: minhash(sets[key]) for key in keys}
    rows = lsh_rows(threshold)
    candidates: set[tuple[int, int]] = set()
    for band in range(MINHASH_PERMUTATIONS // rows):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for key in keys:
            buckets[signatures[key][band * rows : (band + 1) * rows].tobytes()].append(key)
        for members in buckets.values():
            candidates.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    pairs = [(a, b, jaccard(sets[a], sets[b])) for a, b in candidates]
    return sorted((p for p in pairs if p[2] >= threshold), key=lambda p: (-p[2], p[0], p[1]))


@_check(
    "near_duplicates",
    "No two articles of the site are near-duplicates: Jaccard similarity of their 5-word shingles (MinHash "
    "with LSH to find candidates) below `checks.near_duplicate_threshold` (0.8). A and B of one article are "
    "not compared with each other.",
)
def near_duplicates(articles: Sequence[CheckedArticle], settings: SiteSettings) -> CheckOutcome:
    """Pairs of different articles whose text is nearly the same."""
    threshold = settings.checks.near_duplicate_threshold
    by_index = dict(enumerate(articles))
    texts = {i: f"{a.title} {plain_text(a.body_html)}" for i, a in by_index.items()}
    failures, pairs = [], 0
    for first, second, similarity in near_duplicate_pairs(texts, threshold):
        one, other = by_index[first], by_index[second]
        if one.content_id == other.content_id:
            continue
        pairs += 1
        for article, twin in ((one, other), (other, one)):
            detail = f'similarity {similarity:.2f} >= {threshold:g} with {twin.label} "{twin.title}"'
            failures.append(_failure(article, detail, round(similarity, 4), f"< {threshold:g}"))
    return _outcome("near_duplicates", articles, failures, pairs=pairs, threshold=threshold)
