"""Benchmark keyword clustering: wall time, peak memory and quality at growing sizes.

    .venv/bin/python benchmarks/clustering.py [--sizes 1000 10000 100000] [--baseline-max 10000]

Keyword sets are synthetic but realistic: the labelled keywords in tests/data/labelled_keywords.csv
(47 topics) are expanded with common SEO prefixes and suffixes ("best", "near me", "for seniors", "uk",
"under 200"...) until the wanted number of unique keywords is reached; each keeps the topic of the keyword
it expands, so adjusted mutual information (AMI) and homogeneity (cluster purity) against topics are
reported at every size; unclustered keywords count as singletons.

Every run happens in a fresh subprocess; peak MB is that child's ``ru_maxrss`` (the whole process:
interpreter, imports, input). Ratios are against the targets (60 s and 2 GB for 100k keywords on 2 cores)
and against a naive baseline measured in the same run: scikit-learn's full-matrix AgglomerativeClustering
(average linkage, cosine) on the same feature vectors with the same number of clusters. It materialises
the n^2/2 condensed distance matrix, so it only runs up to --baseline-max (100k would need ~40 GB).
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "labelled_keywords.csv"
TARGET_SECONDS = 60.0
TARGET_MB = 2048.0

# "" keeps the keyword bare on that side.
PREFIXES = (
    "|best|cheap|top rated|affordable|professional|diy|easy|quick|budget|premium|simple|beginner|expert"
    "|popular|recommended|top 10|ultimate|essential|2026"
).split("|")
SUFFIXES = (
    "|near me|for women|for men|for kids|for seniors|for students|uk|usa|australia|canada|online|reviews"
    "|price|prices|deals|amazon|reddit|comparison|alternatives|under 50|under 200|for small spaces|brands"
    "|mistakes|checklist|pdf|youtube|in london|in new york|in chicago|in sydney|step by step|explained|faq"
    "|for busy people|on a budget|for families|at home|for couples|2026|this year|ideas|examples"
    "|tips and tricks|worth it|pros and cons|uk reviews|for apartments|for travel|for dummies|for experts"
    "|quickly|checklist pdf|calculator|without spending much|that actually work|for first timers"
    "|for retirees|in winter|in summer"
).split("|")


def synthetic_keywords(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """n unique (keyword, topic) pairs, expanded deterministically from the labelled set."""
    with LABELLED.open(newline="") as f:
        base = [(row["keyword"], row["topic"]) for row in csv.DictReader(f)]
    rng = random.Random(seed)
    out = dict(base[:n])
    while len(out) < n:
        keyword, topic = rng.choice(base)
        phrase = " ".join(p for p in (rng.choice(PREFIXES), keyword, rng.choice(SUFFIXES)) if p)
        out.setdefault(phrase, topic)
    return sorted(out.items())


def _child(method: str, path: str) -> None:
    """Cluster one keyword file in this fresh process; print a JSON summary line."""
    sys.path.insert(0, str(ROOT))
    from sklearn.metrics import adjusted_mutual_info_score, homogeneity_score

    from pipeline.clustering import UNCLUSTERED, ClusteringConfig, _lexical_vectors, cluster_keywords

    with open(path) as f:
        topic = dict(line.rstrip("\n").split("\t") for line in f)
    keywords = list(topic)
    start, cpu = time.perf_counter(), time.process_time()
    if method == "ours":
        labels = cluster_keywords(keywords).assignments
    else:
        from sklearn.cluster import AgglomerativeClustering
        from threadpoolctl import threadpool_limits

        config = ClusteringConfig()
        ordered = sorted(keywords)
        k = max(1, round(len(ordered) / config.target_cluster_size))
        with threadpool_limits(limits=1, user_api="blas"):  # same BLAS setting as cluster_keywords
            x = _lexical_vectors(ordered, config)
            x[~x.any(axis=1), 0] = 1.0  # cosine linkage refuses all-zero rows
            model = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average")
            predicted = model.fit_predict(x)
        labels = {kw: f"a{label}" for kw, label in zip(ordered, predicted, strict=True)}
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    ordered = sorted(labels)
    predicted = [labels[k] if labels[k] != UNCLUSTERED else f"u:{k}" for k in ordered]
    truth = [topic[k] for k in ordered]
    summary = {
        "keywords": len(labels),
        "clusters": len({v for v in labels.values() if v != UNCLUSTERED}),
        "unclustered": sum(v == UNCLUSTERED for v in labels.values()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_mb": peak_mb,
        "ami": adjusted_mutual_info_score(truth, predicted),
        "homogeneity": homogeneity_score(truth, predicted),
    }
    print(json.dumps(summary))


def _run(method: str, path: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, path], capture_output=True, text=True, check=True
    )
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    baseline_help = "largest size the full-matrix baseline runs at"
    parser.add_argument("--baseline-max", type=int, default=10000, help=baseline_help)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} load={os.getloadavg()[0]:.1f}")
    columns = [
        "keywords", "clusters", "unclustered %", "seconds", "cpu s", "peak MB", "AMI / hom.", "s / 60 s",
        "MB / 2 GB", "baseline s", "baseline MB", "baseline AMI / hom.", "s vs baseline", "MB vs baseline",
    ]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = os.path.join(tmp, f"keywords-{n}.tsv")
            with open(path, "w") as f:
                f.writelines(f"{kw}\t{topic}\n" for kw, topic in synthetic_keywords(n))
            ours = _run("ours", path)
            cells = [
                f"{ours['keywords']:,}",
                f"{ours['clusters']:,}",
                f"{100 * ours['unclustered'] / ours['keywords']:.2f}",
                f"{ours['seconds']:.1f}",
                f"{ours['cpu_seconds']:.1f}",
                f"{ours['peak_mb']:.0f}",
                f"{ours['ami']:.3f} / {ours['homogeneity']:.3f}",
                f"{ours['seconds'] / TARGET_SECONDS:.3f}",
                f"{ours['peak_mb'] / TARGET_MB:.3f}",
            ]
            if n <= args.baseline_max:
                base = _run("naive", path)
                cells += [
                    f"{base['seconds']:.1f}",
                    f"{base['peak_mb']:.0f}",
                    f"{base['ami']:.3f} / {base['homogeneity']:.3f}",
                    f"{ours['seconds'] / base['seconds']:.2f}x",
                    f"{ours['peak_mb'] / base['peak_mb']:.2f}x",
                ]
            else:
                cells += [f"not run (~{n * (n - 1) / 2 * 8 / 1e9:.0f} GB matrix)", "-", "-", "-", "-"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
