"""Algorithmic keyword clustering: every keyword lands in exactly one cluster, deterministically.

Algorithm (lexical default, nothing to download):
1. Normalise each keyword (lowercase, light suffix stemming, SEO filler words such as "best"/"cheap"
   dropped for the word features) and build TF-IDF features: word unigrams + bigrams and character
   3-5-grams inside word boundaries (catches plurals, typos, "airfryer"/"air fryer").
2. Project with TruncatedSVD (LSA). Words that keep the same company across the site's keyword list
   land close together, which is how "jogging sneakers" and "running shoes" meet without a shared word.
   An optional ``embed`` callable replaces steps 1-2 with any dense semantic model.
3. Spherical k-means with k ~ n / target_cluster_size, done in two levels (coarse split, then k-means
   inside each part, then one global reassignment pass) so cost grows ~ n * sqrt(k) instead of n * k.
4. Min-size rule: a cluster with fewer than ``min_cluster_size`` members is dissolved; each member joins
   the most similar remaining cluster (centroid cosine) when that similarity is >= ``assign_threshold``,
   otherwise it goes to the explicit ``UNCLUSTERED`` bucket.

Stability: inputs are sorted and all randomness is seeded, so the same set of keywords gives the same
assignments and keys in any order. Keys are ``"c-" + sha1(medoid keyword)[:10]`` of the cluster when it
is created, never positions. Incrementally (``existing`` given), stored members keep their cluster;
new and previously unclustered keywords join the most similar existing cluster when its centroid cosine
is >= ``assign_threshold``, and the rest are clustered among themselves into new clusters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize

UNCLUSTERED = "unclustered"

Embedder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class ClusteringConfig:
    """Knobs of :func:`cluster_keywords`; defaults suit SEO keyword lists."""

    target_cluster_size: int = 12
    min_cluster_size: int = 3
    assign_threshold: float = 0.4
    seed: int = 0
    svd_components: int = 64
    char_weight: float = 0.6
    context_components: int = 100
    context_weight: float = 2.0


@dataclass(frozen=True)
class ClusteringResult:
    """Outcome of one clustering call."""

    assignments: dict[str, str]
    new_keys: list[str] = field(default_factory=list)

    @property
    def unclustered(self) -> list[str]:
        """Keywords in the explicit unclustered bucket, sorted."""
        return sorted(k for k, c in self.assignments.items() if c == UNCLUSTERED)

    @property
    def clusters(self) -> dict[str, list[str]]:
        """Cluster key -> sorted members (UNCLUSTERED included when non-empty)."""
        out: dict[str, list[str]] = {}
        for kw in sorted(self.assignments):
            out.setdefault(self.assignments[kw], []).append(kw)
        return out

    @property
    def unclustered_fraction(self) -> float:
        """Share of keywords in the unclustered bucket (0.0 for an empty result)."""
        return len(self.unclustered) / len(self.assignments) if self.assignments else 0.0


# Words that say how people search, not what about; dropped from word features only.
_FILLER = frozenset(
    [
        "a",
        "affordable",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "beginner",
        "beginners",
        "best",
        "buy",
        "by",
        "can",
        "cheap",
        "cheapest",
        "choose",
        "do",
        "does",
        "for",
        "from",
        "good",
        "guide",
        "guides",
        "how",
        "i",
        "ideas",
        "in",
        "is",
        "it",
        "me",
        "my",
        "near",
        "new",
        "of",
        "on",
        "or",
        "online",
        "review",
        "reviews",
        "should",
        "the",
        "this",
        "tip",
        "tips",
        "to",
        "top",
        "versus",
        "vs",
        "what",
        "when",
        "where",
        "which",
        "why",
        "with",
        "without",
        "you",
        "your",
        "2024",
        "2025",
        "2026",
    ]
)
_TOKEN = re.compile(r"[a-z0-9]+")


def _stem(word: str) -> str:
    """Tiny suffix stripper: enough to merge plural/-ing/-ed forms without a dependency."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(suffix):
            return word[: -len(suffix)] + repl
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]
            break
    return word


def _normalise(keyword: str) -> tuple[str, str]:
    """Return (word-feature text, char-feature text) for one keyword."""
    tokens = _TOKEN.findall(keyword.lower())
    content = [t for t in tokens if t not in _FILLER] or tokens
    return " ".join(_stem(t) for t in content), " ".join(content)


def _svd(x: sparse.spmatrix, n_components: int, seed: int) -> np.ndarray:
    """Randomised truncated SVD (U * S); falls back to the dense matrix when it is too small."""
    n_components = min(n_components, x.shape[0] - 1, x.shape[1] - 1)
    if n_components < 2:
        return x.toarray()
    svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=5, random_state=seed)
    return svd.fit_transform(x)


def _surface_vectors(words: Sequence[str], chars: Sequence[str], config: ClusteringConfig) -> np.ndarray:
    """What a keyword says: TF-IDF over word 1-2-grams and char_wb 3-5-grams, reduced by LSA."""
    min_df = 2 if len(words) >= 1000 else 1
    word_vec = TfidfVectorizer(
        analyzer="word", token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32
    )
    char_vec = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=min_df, dtype=np.float32
    )
    blocks = []
    for vec, docs, weight in ((word_vec, words, 1.0), (char_vec, chars, config.char_weight)):
        try:
            blocks.append(normalize(vec.fit_transform(docs)) * weight)
        except ValueError:  # empty vocabulary (e.g. only one-letter keywords)
            continue
    if not blocks:
        return np.zeros((len(words), 1), dtype=np.float32)
    x = sparse.hstack(blocks, format="csr", dtype=np.float32)
    return normalize(_svd(x, config.svd_components, config.seed))


def _context_vectors(words: Sequence[str], config: ClusteringConfig) -> np.ndarray:
    """What a keyword's words mean on this site: IDF-weighted sum of PPMI word vectors.

    Two words that combine with the same other words across the list ("cafetiere ratio", "french press
    ratio", "cafetiere grind", "french press grind"...) get similar vectors, so synonyms with no shared
    word or letters still meet.
    """
    n = len(words)
    try:
        b = CountVectorizer(token_pattern=r"\S+", binary=True, dtype=np.float64).fit_transform(words)
    except ValueError:
        return np.zeros((n, 1), dtype=np.float32)
    co = (b.T @ b).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    if co.nnz == 0:
        return np.zeros((n, 1), dtype=np.float32)
    total = co.sum()
    row_p = np.asarray(co.sum(axis=1)).ravel() / total
    col_p = np.asarray(co.sum(axis=0)).ravel() ** 0.75  # context smoothing (Levy et al. 2015)
    col_p /= col_p.sum()
    coo = co.tocoo()
    pmi = np.log(coo.data / total / row_p[coo.row] / col_p[coo.col])
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=co.shape)
    word_vectors = normalize(_svd(ppmi, config.context_components, config.seed))
    df = np.asarray(b.sum(axis=0)).ravel()
    idf = np.log((1 + n) / (1 + df)) + 1
    return normalize(sparse.csr_matrix(b.multiply(idf)) @ word_vectors)


def _lexical_vectors(texts: Sequence[str], config: ClusteringConfig) -> np.ndarray:
    """Surface (TF-IDF + LSA) and context (PPMI) vectors, concatenated and L2-normalised."""
    pairs = [_normalise(t) for t in texts]
    words = [p[0] for p in pairs]
    chars = [p[1] for p in pairs]
    surface = _surface_vectors(words, chars, config)
    context = _context_vectors(words, config) * config.context_weight
    return normalize(np.hstack([surface, context])).astype(np.float32)


def _vectors(texts: Sequence[str], config: ClusteringConfig, embed: Embedder | None) -> np.ndarray:
    if embed is None:
        return _lexical_vectors(texts, config)
    dense = np.asarray(embed(list(texts)), dtype=np.float32)
    if dense.ndim != 2 or dense.shape[0] != len(texts):
        raise ValueError(f"embed returned shape {dense.shape}, expected ({len(texts)}, d)")
    return normalize(dense).astype(np.float32, copy=False)


def _seed_centres(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ (D^2 sampling) seeding, vectorised: scikit-learn's is dominated by per-step overhead."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    chosen = [int(rng.integers(n))]
    d2 = np.maximum(sq - 2 * (x @ x[chosen[0]]) + sq[chosen[0]], 0)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than k: remaining centres duplicate, Lloyd empties them
            nxt = int(rng.integers(n))
        else:
            nxt = min(int(np.searchsorted(np.cumsum(d2), rng.random() * total)), n - 1)
        chosen.append(nxt)
        np.minimum(d2, np.maximum(sq - 2 * (x @ x[nxt]) + sq[nxt], 0), out=d2)
    return x[chosen]


def _kmeans(x: np.ndarray, k: int, seed: int, max_iter: int = 30, tol: float = 0.001) -> np.ndarray:
    """Labels 0..k'-1 (k' <= k, empty clusters dropped) from seeded spherical k-means on unit rows.

    Plain numpy Lloyd iterations rather than scikit-learn's KMeans: its multithreaded centre update sums
    in thread-arrival order, which can flip near-tied labels between runs; this one is bit-for-bit
    repeatable.
    """
    n = x.shape[0]
    if k <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int64)
    if n <= k:
        return np.arange(n, dtype=np.int64)
    centres = normalize(_seed_centres(x, k, seed))
    labels = np.full(n, -1, dtype=np.int64)
    for _ in range(max_iter):
        new_labels, _ = _best_centroid(x, centres)
        moved = np.count_nonzero(new_labels != labels)
        labels = new_labels
        if moved <= tol * n:
            break
        updated = _centroids(x, labels, k)
        empty = ~updated.any(axis=1)
        updated[empty] = centres[empty]  # an emptied centre stays put; it is dropped below if still empty
        centres = updated
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


def _best_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of the most similar (normalised) centroid per row, in bounded memory."""
    best = np.empty(x.shape[0], dtype=np.int64)
    score = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], chunk):
        sims = x[start : start + chunk] @ centroids.T
        best[start : start + chunk] = sims.argmax(axis=1)
        score[start : start + chunk] = sims[np.arange(sims.shape[0]), best[start : start + chunk]]
    return best, score


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Unit-length mean direction of each label's rows (zero row for an empty label)."""
    members = sparse.csr_matrix(
        (np.ones(labels.size, dtype=np.float32), (labels, np.arange(labels.size))), shape=(k, labels.size)
    )
    return normalize(np.asarray(members @ x)).astype(np.float32)


def _partition(x: np.ndarray, target: int, seed: int) -> np.ndarray:
    """Label rows of x into ~len(x)/target clusters (two-level spherical k-means)."""
    n = x.shape[0]
    k = max(1, round(n / target))
    coarse_k = int(np.ceil(np.sqrt(k)))
    if k <= 64 or coarse_k <= 1:
        return _kmeans(x, k, seed)
    coarse = _kmeans(x, coarse_k, seed, max_iter=10)  # a rough split is enough: the pass below fixes edges
    labels = np.empty(n, dtype=np.int64)
    offset = 0
    for part in range(coarse_k):
        idx = np.flatnonzero(coarse == part)
        if idx.size == 0:
            continue
        sub = _kmeans(x[idx], max(1, round(idx.size / target)), seed)
        labels[idx] = sub + offset
        offset += int(sub.max()) + 1
    # One global pass lets points cross the coarse boundaries to their truly nearest centroid.
    best, _ = _best_centroid(x, _centroids(x, labels, offset))
    _, labels = np.unique(best, return_inverse=True)
    return labels.astype(np.int64)


def _key_for(medoid: str, taken: set[str]) -> str:
    key = "c-" + hashlib.sha1(medoid.encode("utf-8")).hexdigest()[:10]
    salt = 0
    while key in taken or key == UNCLUSTERED:
        salt += 1
        key = "c-" + hashlib.sha1(f"{medoid}\n{salt}".encode()).hexdigest()[:10]
    return key


def cluster_keywords(
    keywords: Sequence[str],
    existing: Mapping[str, Sequence[str]] | None = None,
    config: ClusteringConfig = ClusteringConfig(),
    embed: Embedder | None = None,
) -> ClusteringResult:
    """Group a site's keywords into topic clusters.

    ``keywords`` are all (normalised, unique) keywords of the site. ``existing`` maps stored cluster keys
    to their members: those members keep their key (members of ``UNCLUSTERED`` are candidates again, and
    stored members missing from ``keywords`` are ignored; a keyword stored under two keys stays with the
    first key in sorted order). Every input keyword appears exactly once in the result and nothing is
    invented. ``embed`` optionally supplies dense semantic vectors for a list of texts; by default a fast
    lexical representation is used. With ``existing`` empty or None everything is clustered from scratch.
    """
    kws = sorted(set(keywords))
    if not kws:
        return ClusteringResult(assignments={}, new_keys=[])
    present = set(kws)
    assignments: dict[str, str] = {}
    for key in sorted(existing or {}):
        if key != UNCLUSTERED:
            for kw in sorted(existing[key]):  # type: ignore[index]
                if kw in present:
                    assignments.setdefault(kw, key)
    candidates = [kw for kw in kws if kw not in assignments]
    if not candidates:
        return ClusteringResult(assignments=dict(sorted(assignments.items())), new_keys=[])

    x = _vectors(kws, config, embed)
    row = {kw: i for i, kw in enumerate(kws)}

    # Stored clusters first: a candidate close enough to a stored centroid joins it.
    old_keys = sorted(set(assignments.values()))
    if old_keys:
        key_index = {k: i for i, k in enumerate(old_keys)}
        old_rows = np.array([row[kw] for kw in assignments], dtype=np.int64)
        old_labels = np.array([key_index[k] for k in assignments.values()], dtype=np.int64)
        old_centroids = _centroids(x[old_rows], old_labels, len(old_keys))
        best, score = _best_centroid(x[[row[kw] for kw in candidates]], old_centroids)
        rest = []
        for kw, b, s in zip(candidates, best, score, strict=True):
            if s >= config.assign_threshold:
                assignments[kw] = old_keys[int(b)]
            else:
                rest.append(kw)
    else:
        old_centroids = np.zeros((0, x.shape[1]), dtype=np.float32)
        rest = candidates

    new_keys: list[str] = []
    if rest:
        assignments.update(
            _new_clusters(rest, x[[row[kw] for kw in rest]], old_keys, old_centroids, set(existing or {}), config)
        )
        new_keys = sorted({k for k in assignments.values() if k != UNCLUSTERED} - set(old_keys))
    return ClusteringResult(assignments=dict(sorted(assignments.items())), new_keys=new_keys)


def _new_clusters(
    rest: list[str],
    x: np.ndarray,
    old_keys: list[str],
    old_centroids: np.ndarray,
    taken: set[str],
    config: ClusteringConfig,
) -> dict[str, str]:
    """Cluster the sorted keywords ``rest`` (rows of x) among themselves, then apply the min-size rule."""
    labels = _partition(x, config.target_cluster_size, config.seed)
    n_new = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=n_new)
    centroids = _centroids(x, labels, n_new)
    big = np.flatnonzero(sizes >= config.min_cluster_size)

    # Keys from the medoid (member closest to its centroid; ties -> smallest keyword) at creation.
    own_sim = np.einsum("ij,ij->i", x, centroids[labels])
    order = np.lexsort((np.arange(labels.size), -own_sim, labels))
    first = order[np.unique(labels[order], return_index=True)[1]]  # first row of each label in order
    medoid = {int(labels[i]): rest[i] for i in first}
    taken = set(taken) | set(old_keys)
    key_of: dict[int, str] = {}
    for name, c in sorted((medoid[int(c)], int(c)) for c in big):
        key_of[c] = _key_for(name, taken)
        taken.add(key_of[c])

    out = {kw: key_of[int(lab)] for kw, lab in zip(rest, labels, strict=True) if int(lab) in key_of}
    # Min-size rule: members of tiny clusters join the most similar surviving cluster, else UNCLUSTERED.
    tiny = np.flatnonzero(sizes[labels] < config.min_cluster_size)
    if tiny.size:
        target_keys = old_keys + [key_of[int(c)] for c in big]
        targets = np.vstack([old_centroids, centroids[big]])
        if targets.shape[0]:
            best, score = _best_centroid(x[tiny], targets)
        else:
            best, score = np.zeros(tiny.size, dtype=np.int64), np.full(tiny.size, -1.0)
        for i, b, s in zip(tiny, best, score, strict=True):
            out[rest[i]] = target_keys[int(b)] if s >= config.assign_threshold else UNCLUSTERED
    return out
