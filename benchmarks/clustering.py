"""Benchmark keyword clustering: wall time, peak RSS and quality at growing sizes.

    .venv/bin/python benchmarks/clustering.py [--sizes 1000 10000 100000] [--baseline-max 10000]

Keyword sets are synthetic but realistic: every labelled keyword in tests/data/labelled_keywords.csv
(47 topics) is expanded with SEO prefixes and suffixes ("best", "near me", "for seniors", "uk",
"under 200"...) until the wanted number of unique keywords is reached; each keeps its base keyword's
topic, so adjusted mutual information (AMI) can be reported at every size.

Each run happens in a fresh subprocess; its peak RSS is that child's ``ru_maxrss`` (whole process,
interpreter and imports included). Ratios are against the targets (60 s, 2 GB on 2 cores) and against a
naive baseline measured in the same run: scikit-learn's full-matrix AgglomerativeClustering (average
linkage, cosine) on the same feature vectors with the same number of clusters. It needs the condensed
n^2/2 distance matrix, so it is only run up to --baseline-max (~40 GB at 100k).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "labelled_keywords.csv"
TARGET_SECONDS = 60.0
TARGET_MB = 2048.0

PREFIXES = ["", "best", "cheap", "top rated", "affordable", "professional", "diy", "easy", "quick",
            "budget", "premium", "simple", "beginner", "expert", "popular", "recommended", "top 10",
            "ultimate", "essential", "2026"]
SUFFIXES = ["", "near me", "for women", "for men", "for kids", "for seniors", "for students", "uk",
            "usa", "australia", "canada", "online", "reviews", "price", "prices", "deals", "amazon",
            "reddit", "comparison", "alternatives", "under 50", "under 200", "for small spaces",
            "brands", "mistakes", "checklist", "pdf", "youtube", "in london", "in new york",
            "in chicago", "in sydney", "step by step", "explained", "faq", "for busy people",
            "on a budget", "for families", "at home", "for couples", "2026", "this year", "ideas",
            "examples", "tips and tricks", "worth it", "pros and cons", "uk reviews", "for apartments",
            "for travel", "for dummies", "for experts", "quickly", "checklist pdf", "calculator",
            "without spending much", "that actually work", "for first timers", "for retirees",
            "in winter", "in summer"]


def synthetic_keywords(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """n unique (keyword, topic) pairs expanded deterministically from the labelled set."""
    with LABELLED.open() as f:
        base = [(row["keyword"], row["topic"]) for row in csv.DictReader(f)]
    rng = random.Random(seed)
    out: dict[str, str] = {}
    for kw, topic in base[:n]:
        out[kw] = topic
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n:
            raise RuntimeError(f"cannot generate {n} unique keywords")
        kw, topic = rng.choice(base)
        phrase = " ".join(p for p in (rng.choice(PREFIXES), kw, rng.choice(SUFFIXES)) if p)
        out.setdefault(phrase, topic)
    return sorted(out.items())


def _child(method: str, path: str) -> None:
    """Run one clustering in this (fresh) process and print a JSON summary on stdout."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from sklearn.metrics import adjusted_mutual_info_score

    from pipeline.clustering import UNCLUSTERED, ClusteringConfig, _lexical_vectors, cluster_keywords

    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    keywords = [r[0] for r in rows]
    topic = dict((r[0], r[1]) for r in rows)
    start = time.perf_counter()
    if method == "ours":
        result = cluster_keywords(keywords)
        labels = result.assignments
    else:
        from sklearn.cluster import AgglomerativeClustering

        config = ClusteringConfig()
        ordered = sorted(keywords)
        x = _lexical_vectors(ordered, config)
        x[~np.any(x, axis=1), 0] = 1.0  # cosine linkage refuses zero rows
        k = max(1, round(len(ordered) / config.target_cluster_size))
        model = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average")
        labels = dict(zip(ordered, (str(v) for v in model.fit_predict(x)), strict=True))
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    ordered = sorted(labels)
    pred = [labels[k] if labels[k] != UNCLUSTERED else f"u:{k}" for k in ordered]
    ami = adjusted_mutual_info_score([topic[k] for k in ordered], pred)
    print(json.dumps({
        "keywords": len(labels),
        "clusters": len({v for v in labels.values() if v != UNCLUSTERED}),
        "unclustered": sum(v == UNCLUSTERED for v in labels.values()),
        "seconds": seconds,
        "peak_mb": peak_mb,
        "ami": ami,
    }))


def _run(method: str, path: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, path],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--baseline-max", type=int, default=10000,
                        help="largest size the full-matrix agglomerative baseline is run at")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]}")
    header = ("| keywords | clusters | unclustered % | seconds | peak MB | AMI | s / 60 s | MB / 2 GB "
              "| baseline s | baseline MB | baseline AMI | s vs baseline | MB vs baseline |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = os.path.join(tmp, f"kw{n}.tsv")
            with open(path, "w") as f:
                f.writelines(f"{kw}\t{topic}\n" for kw, topic in synthetic_keywords(n))
            ours = _run("ours", path)
            base = _run("naive", path) if n <= args.baseline_max else None
            cells = [
                f"{ours['keywords']:,}", f"{ours['clusters']:,}",
                f"{100 * ours['unclustered'] / ours['keywords']:.2f}", f"{ours['seconds']:.1f}",
                f"{ours['peak_mb']:.0f}", f"{ours['ami']:.3f}",
                f"{ours['seconds'] / TARGET_SECONDS:.3f}", f"{ours['peak_mb'] / TARGET_MB:.3f}",
            ]
            if base:
                cells += [f"{base['seconds']:.1f}", f"{base['peak_mb']:.0f}", f"{base['ami']:.3f}",
                          f"{ours['seconds'] / base['seconds']:.2f}x",
                          f"{ours['peak_mb'] / base['peak_mb']:.2f}x"]
            else:
                est_gb = n * (n - 1) / 2 * 8 / 1e9
                cells += [f"not run (~{est_gb:.0f} GB matrix)", "-", "-", "-", "-"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
