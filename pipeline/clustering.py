"""Algorithmic keyword clustering: every keyword lands in exactly one cluster, deterministically.

Algorithm (lexical default, nothing to download):
1. Surface vectors: each keyword is lowercased, lightly stemmed and stripped of SEO filler ("best",
   "cheap", "for beginners"...), then TF-IDF over word 1-2-grams plus char_wb 3-5-grams (plurals, typos,
   "airfryer"/"air fryer"), reduced by TruncatedSVD (LSA).
2. Context vectors: PPMI word vectors learnt from which words share keywords on this site, summed per
   keyword (IDF-weighted). Words used with the same modifiers ("cafetiere ratio", "french press ratio")
   get close, so synonyms with no word in common can meet. Both parts are concatenated and L2-normalised.
   An optional ``embed`` callable replaces steps 1-2 with any dense semantic model.
3. Spherical k-means with k = round(n / target_cluster_size), in two levels (sqrt(k) coarse parts, then
   k-means inside each part, then one chunked pass that moves every keyword to its nearest centroid).
4. Min-size rule: a new cluster with fewer than ``min_cluster_size`` members is dissolved, and since
   k-means puts every keyword somewhere, a keyword whose cosine to its own new centroid is below
   ``outlier_threshold`` is loose too. Each such keyword joins the most similar surviving or stored
   cluster (centroid cosine) if that similarity is >= ``assign_threshold``, else the explicit
   ``UNCLUSTERED`` bucket. So every new cluster has >= ``min_cluster_size`` members.

Stability: inputs are sorted and every random choice is seeded, so the same set of keywords gives the
same assignments and keys in any order. Keys are ``"c-" + sha1(medoid keyword)[:10]`` of the cluster when
it is created, never positions. Incrementally (``existing`` given), stored members keep their cluster;
new and previously unclustered keywords join the most similar stored cluster when its centroid cosine is
>= ``assign_threshold``; the rest are clustered among themselves (steps 3-4) into new clusters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

UNCLUSTERED = "unclustered"

Embedder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class ClusteringConfig:
    """Knobs of :func:`cluster_keywords`. Defaults were measured on tests/data/labelled_keywords.csv."""

    target_cluster_size: int = 12  # k = round(n / target_cluster_size): derived from the data
    min_cluster_size: int = 3  # smaller clusters are dissolved (see the module docstring)
    assign_threshold: float = 0.6  # centroid cosine needed to join a cluster / leave UNCLUSTERED
    outlier_threshold: float = 0.35  # below this cosine to its own new centroid a keyword is loose
    seed: int = 0
    svd_components: int = 64  # LSA dimensions of the surface vectors
    char_weight: float = 0.6  # char n-grams relative to word n-grams in the surface vectors
    context_components: int = 100  # dimensions of the PPMI word vectors
    context_weight: float = 2.0  # context vectors relative to surface vectors

    def __post_init__(self) -> None:
        if self.target_cluster_size < 1 or self.min_cluster_size < 1:
            raise ValueError("target_cluster_size and min_cluster_size must be >= 1")
        if not (-1.0 <= self.assign_threshold <= 1.0 and -1.0 <= self.outlier_threshold <= 1.0):
            raise ValueError("assign_threshold and outlier_threshold are cosines within [-1, 1]")


@dataclass(frozen=True)
class ClusteringResult:
    """Outcome of one :func:`cluster_keywords` call."""

    assignments: dict[str, str]  # every input keyword -> cluster key or UNCLUSTERED
    new_keys: list[str] = field(default_factory=list)  # keys created by this call, sorted

    @property
    def unclustered(self) -> list[str]:
        """Keywords in the explicit unclustered bucket, sorted."""
        return sorted(k for k, c in self.assignments.items() if c == UNCLUSTERED)

    @property
    def unclustered_fraction(self) -> float:
        """Share of keywords in the unclustered bucket (0.0 for an empty result)."""
        return len(self.unclustered) / len(self.assignments) if self.assignments else 0.0

    @property
    def clusters(self) -> dict[str, list[str]]:
        """Cluster key -> sorted members; UNCLUSTERED is included when it has members."""
        out: dict[str, list[str]] = {}
        for kw in sorted(self.assignments):
            out.setdefault(self.assignments[kw], []).append(kw)
        return out


# Words that say how people search rather than what about; dropped before vectorising.
_FILLER = frozenset(
    """a affordable an and are as at be beginner beginners best buy by can cheap cheapest choose do does
    for from good guide guides how i ideas in is it me my near new of on or online review reviews should
    the this tip tips to top versus vs what when where which why with without you your 2024 2025 2026
    """.split()
)
_TOKEN = re.compile(r"[^\W_]+")  # letters and digits, any script


@lru_cache(maxsize=200_000)
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
        if word.endswith(suffix) and not word.endswith("eed") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":  # running -> run
                word = word[:-1]
            break
    return word


def _normalise(keyword: str) -> tuple[str, str]:
    """(stemmed content words, unstemmed content words) of one keyword, space-separated."""
    tokens = _TOKEN.findall(keyword.lower())
    content = [t for t in tokens if t not in _FILLER] or tokens
    return " ".join(_stem(t) for t in content), " ".join(content)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (L2), as a dense array."""
    return np.asarray(normalize(x))


def _svd(x: sparse.spmatrix, n_components: int, seed: int) -> np.ndarray:
    """Randomised truncated SVD (U * S); the matrix itself when it is too small to reduce."""
    n_components = min(n_components, x.shape[0] - 1, x.shape[1] - 1)
    if n_components < 2:
        return np.asarray(x.toarray())
    svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=5, random_state=seed)
    return np.asarray(svd.fit_transform(x))


def _surface_vectors(words: Sequence[str], chars: Sequence[str], config: ClusteringConfig) -> np.ndarray:
    """What a keyword says: TF-IDF over word 1-2-grams and char_wb 3-5-grams, reduced by LSA."""
    word_vec = TfidfVectorizer(
        analyzer="word", token_pattern=r"\S+", ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32
    )
    char_vec = TfidfVectorizer(
        analyzer="char_wb",
        ngram_range=(3, 5),
        sublinear_tf=True,
        min_df=2 if len(words) >= 1000 else 1,  # a char n-gram seen once links nothing
        dtype=np.float32,
    )
    blocks = []
    for vec, docs, weight in ((word_vec, words, 1.0), (char_vec, chars, config.char_weight)):
        try:
            blocks.append(normalize(vec.fit_transform(docs)) * weight)
        except ValueError:  # empty vocabulary, e.g. only one-letter keywords
            continue
    if not blocks:
        return np.zeros((len(words), 1), dtype=np.float32)
    x = sparse.hstack(blocks, format="csr", dtype=np.float32)
    return _unit_rows(_svd(x, config.svd_components, config.seed))


def _context_vectors(words: Sequence[str], config: ClusteringConfig) -> np.ndarray:
    """What a keyword's words mean on this site: IDF-weighted sum of PPMI word vectors.

    Two words that combine with the same other words across the list ("cafetiere ratio", "french press
    ratio", "cafetiere grind", "french press grind"...) get similar vectors.
    """
    n = len(words)
    try:
        b = CountVectorizer(token_pattern=r"\S+", binary=True, dtype=np.float64).fit_transform(words)
    except ValueError:
        return np.zeros((n, 1), dtype=np.float32)
    co = (b.T @ b).tocsr()  # word x word: number of keywords containing both
    co.setdiag(0)
    co.eliminate_zeros()
    if co.nnz == 0:
        return np.zeros((n, 1), dtype=np.float32)
    total = co.sum()
    row_p = np.asarray(co.sum(axis=1)).ravel() / total
    col_p = np.asarray(co.sum(axis=0)).ravel() ** 0.75  # context smoothing (Levy et al., 2015)
    col_p /= col_p.sum()
    coo = co.tocoo()
    pmi = np.log(coo.data / total / row_p[coo.row] / col_p[coo.col])
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=co.shape)
    word_vectors = normalize(_svd(ppmi, config.context_components, config.seed))
    idf = np.log((1 + n) / (1 + np.asarray(b.sum(axis=0)).ravel())) + 1
    return _unit_rows(sparse.csr_matrix(b.multiply(idf)) @ word_vectors)


def _lexical_vectors(texts: Sequence[str], config: ClusteringConfig) -> np.ndarray:
    """Surface and context vectors, concatenated and L2-normalised (float32, one row per text)."""
    pairs = [_normalise(t) for t in texts]
    words = [p[0] for p in pairs]
    surface = _surface_vectors(words, [p[1] for p in pairs], config)
    context = _context_vectors(words, config) * config.context_weight
    return _unit_rows(np.hstack([surface, context])).astype(np.float32)


def _vectors(texts: Sequence[str], config: ClusteringConfig, embed: Embedder | None) -> np.ndarray:
    if embed is None:
        return _lexical_vectors(texts, config)
    dense = np.asarray(embed(list(texts)), dtype=np.float32)
    if dense.ndim != 2 or dense.shape[0] != len(texts):
        raise ValueError(f"embed returned shape {dense.shape}, expected ({len(texts)}, d)")
    return _unit_rows(dense).astype(np.float32, copy=False)


def _best_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of the most similar unit centroid for every unit row, in bounded memory."""
    best = np.empty(x.shape[0], dtype=np.int64)
    score = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], chunk):
        sims = x[start : start + chunk] @ centroids.T
        top = sims.argmax(axis=1)
        best[start : start + chunk] = top
        score[start : start + chunk] = np.take_along_axis(sims, top[:, None], axis=1)[:, 0]
    return best, score


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Unit-length mean direction of each label's rows (a zero row for an empty label)."""
    members = sparse.csr_matrix(
        (np.ones(labels.size, dtype=np.float32), (labels, np.arange(labels.size))), shape=(k, labels.size)
    )
    return _unit_rows(np.asarray(members @ x)).astype(np.float32)


def _seed_centres(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ (D^2 sampling) seeding in numpy: scikit-learn's spends most of its time in overhead."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    chosen = [int(rng.integers(n))]
    d2 = np.maximum(sq - 2 * (x @ x[chosen[0]]) + sq[chosen[0]], 0)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct rows than k: duplicate centres end up empty and are dropped
            nxt = int(rng.integers(n))
        else:
            nxt = min(int(np.searchsorted(np.cumsum(d2), rng.random() * total)), n - 1)
        chosen.append(nxt)
        np.minimum(d2, np.maximum(sq - 2 * (x @ x[nxt]) + sq[nxt], 0), out=d2)
    return x[chosen]


def _kmeans(x: np.ndarray, k: int, seed: int, max_iter: int = 30, tol: float = 0.001) -> np.ndarray:
    """Labels 0..k'-1 (k' <= k, empty clusters dropped) from seeded spherical k-means on unit rows.

    Plain numpy Lloyd iterations rather than scikit-learn's KMeans, whose multithreaded centre update
    sums in thread-arrival order and so can flip near-tied labels between runs.
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
        updated[empty] = centres[empty]  # an emptied centre stays put and may win rows back
        centres = updated
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _partition(x: np.ndarray, target: int, seed: int) -> np.ndarray:
    """Labels for the rows of x: about len(x) / target clusters by two-level spherical k-means."""
    n = x.shape[0]
    k = max(1, round(n / target))
    coarse_k = int(np.ceil(np.sqrt(k)))
    if k <= 64:
        return _kmeans(x, k, seed)
    coarse = _kmeans(x, coarse_k, seed, max_iter=10)  # a rough split is enough: the pass below fixes edges
    labels = np.empty(n, dtype=np.int64)
    offset = 0
    for part in range(coarse_k):
        idx = np.flatnonzero(coarse == part)
        if idx.size:
            sub = _kmeans(x[idx], max(1, round(idx.size / target)), seed)
            labels[idx] = sub + offset
            offset += int(sub.max()) + 1
    # One pass over all centroids lets keywords cross coarse borders to their nearest cluster.
    best, _ = _best_centroid(x, _centroids(x, labels, offset))
    return np.unique(best, return_inverse=True)[1].astype(np.int64)


def _key_for(medoid: str, taken: set[str]) -> str:
    """Content-derived key; salted only in the (rare) case the plain one is already in use."""
    key = "c-" + hashlib.sha1(medoid.encode("utf-8")).hexdigest()[:10]
    salt = 0
    while key in taken:
        salt += 1
        key = "c-" + hashlib.sha1(f"{medoid}\n{salt}".encode()).hexdigest()[:10]
    return key


def cluster_keywords(
    keywords: Sequence[str],
    existing: Mapping[str, Sequence[str]] | None = None,
    config: ClusteringConfig = ClusteringConfig(),
    embed: Embedder | None = None,
) -> ClusteringResult:
    """Group a site's keywords into topic clusters; every keyword is assigned exactly once.

    ``keywords`` are all (normalised, unique) keywords of the site; duplicates are collapsed and nothing
    else is ever added. ``existing`` maps stored cluster keys to their members: those members keep their
    key (members stored under ``UNCLUSTERED`` are candidates again, stored members missing from
    ``keywords`` are ignored, and a keyword stored under two keys stays with the first key in sorted
    order). New keywords join the closest stored cluster if its centroid cosine is >= ``assign_threshold``;
    the rest form new clusters. With ``existing`` empty or None everything is clustered from scratch.
    ``embed`` optionally maps a list of texts to dense row vectors (a semantic model); by default a fast
    lexical representation is used that needs nothing downloaded.
    """
    # One BLAS thread: the matrices here are tall and thin, and multithreaded OpenBLAS on a busy machine
    # (e.g. next to other Dagster steps) ran 3-10x slower on 2.4k-10k keywords, and no faster at 100k.
    with threadpool_limits(limits=1, user_api="blas"):
        return _cluster(sorted(set(keywords)), existing or {}, config, embed)


def _cluster(
    kws: list[str], stored: Mapping[str, Sequence[str]], config: ClusteringConfig, embed: Embedder | None
) -> ClusteringResult:
    present = set(kws)
    assignments: dict[str, str] = {}
    for key in sorted(stored):
        if key != UNCLUSTERED:
            for kw in sorted(stored[key]):
                if kw in present:
                    assignments.setdefault(kw, key)
    candidates = [kw for kw in kws if kw not in assignments]
    if not candidates:
        return ClusteringResult(assignments=dict(sorted(assignments.items())), new_keys=[])

    x = _vectors(kws, config, embed)
    row = {kw: i for i, kw in enumerate(kws)}

    # Stored clusters first: a candidate close enough to a stored centroid joins it.
    old_keys = sorted(set(assignments.values()))
    old_centroids = np.zeros((0, x.shape[1]), dtype=np.float32)
    rest = candidates
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

    new_keys: list[str] = []
    if rest:
        taken = set(stored) | {UNCLUSTERED}
        fresh = _new_clusters(rest, x[[row[kw] for kw in rest]], old_keys, old_centroids, taken, config)
        assignments.update(fresh)
        new_keys = sorted(set(fresh.values()) - set(old_keys) - {UNCLUSTERED})
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
    centroids = _centroids(x, labels, n_new)
    own_sim = np.einsum("ij,ij->i", x, centroids[labels])

    # A member too far from its own centroid (k-means must put every row somewhere) is not kept there;
    # clusters left with fewer than min_cluster_size kept members are dissolved.
    kept = own_sim >= config.outlier_threshold
    sizes = np.bincount(labels[kept], minlength=n_new)
    big = np.flatnonzero(sizes >= config.min_cluster_size)

    # Key = hash of the medoid (member closest to its centroid; ties -> smallest keyword).
    order = np.lexsort((np.arange(labels.size), -own_sim, labels))
    firsts = order[np.unique(labels[order], return_index=True)[1]]
    medoid = {int(labels[i]): rest[i] for i in firsts}
    taken = taken | set(old_keys)
    key_of: dict[int, str] = {}
    for name, c in sorted((medoid[int(c)], int(c)) for c in big):
        key_of[c] = _key_for(name, taken)
        taken.add(key_of[c])
    placed = kept & np.isin(labels, big)
    out = {rest[i]: key_of[int(labels[i])] for i in np.flatnonzero(placed)}

    # Min-size rule: everyone else joins the most similar surviving cluster, or else UNCLUSTERED.
    loose = np.flatnonzero(~placed)
    targets = np.vstack([old_centroids, centroids[big]])
    if loose.size and targets.shape[0]:
        target_keys = old_keys + [key_of[int(c)] for c in big]
        best, score = _best_centroid(x[loose], targets)
        for i, b, s in zip(loose, best, score, strict=True):
            out[rest[i]] = target_keys[int(b)] if s >= config.assign_threshold else UNCLUSTERED
    else:
        out.update({rest[i]: UNCLUSTERED for i in loose})
    return out
