"""Benchmark the patient-level bootstrap (trcgl.evaluation.bootstrap) against a loop of
scikit-learn calls on the same resamples.

1,000 resamples of a 32,000 × 30 long-tailed score matrix (20,000 patients, 1–4 images
each): trcgl's vectorised bootstrap of mAP, mAUC and macro-F1 against, for the first
``--sklearn-resamples`` of the same resamples, per-class ``average_precision_score``,
``roc_auc_score`` and ``f1_score`` with ``sample_weight`` (the resample's image weights). The
numbers of those resamples are checked equal; the ratio is per resample. Writes
``benchmarks/results/bootstrap.json``.

    python benchmarks/bench_bootstrap.py [--resamples 1000] [--sklearn-resamples 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bench_metrics  # the same score matrix, beside this script
import numpy as np
import sklearn
from results_file import save
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from trcgl.evaluation.bootstrap import bootstrap, patient_weights

N_SAMPLES = bench_metrics.N_SAMPLES
N_CLASSES = bench_metrics.N_CLASSES
N_PATIENTS = 20_000
SEED = 2024
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bootstrap.json"


def make_data(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``bench_metrics``' long-tailed labels and scores, and a patient per image."""
    y, s, _ = bench_metrics.make_data(seed)
    patients = np.sort(np.random.default_rng(seed + 1).integers(0, N_PATIENTS, len(y)))
    return y, s, patients


def sklearn_resample(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    ap, auc, f1 = [], [], []
    keep = w > 0
    for j in range(y.shape[1]):
        yj, sj, wj = y[keep, j], s[keep, j], w[keep]
        if not yj.any():
            continue
        ap.append(average_precision_score(yj, sj, sample_weight=wj))
        f1.append(f1_score(yj, sj >= 0.5, sample_weight=wj, zero_division=0))
        if not yj.all():
            auc.append(roc_auc_score(yj, sj, sample_weight=wj))
    return float(np.mean(ap)), float(np.mean(auc)), float(np.mean(f1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--sklearn-resamples", type=int, default=10)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    y, s, patients = make_data()
    names = [f"c{i}" for i in range(N_CLASSES)]

    started = time.perf_counter()
    weights = patient_weights(patients, args.resamples, seed=0)
    sample = bootstrap(y, s, patients, names, weights=weights)
    ours = time.perf_counter() - started

    k = min(args.sklearn_resamples, args.resamples)
    started = time.perf_counter()
    reference = [sklearn_resample(y, s, weights[r]) for r in range(k)]
    theirs = time.perf_counter() - started

    worst = 0.0
    for r, (ap, auc, f1) in enumerate(reference):
        got = sample.values["overall"]
        worst = max(
            worst,
            abs(got["mAP"][r] - ap),
            abs(got["mAUC"][r] - auc),
            abs(got["macro_F1"][r] - f1),
        )
    per_ours, per_theirs = ours / args.resamples, theirs / k
    result = {
        "benchmark": "patient-level bootstrap of mAP, mAUC, macro-F1",
        "data": {"images": N_SAMPLES, "classes": N_CLASSES, "patients": len(set(patients))},
        "resamples": args.resamples,
        "trcgl_seconds": round(ours, 3),
        "trcgl_seconds_per_resample": per_ours,
        "sklearn_resamples_timed": k,
        "sklearn_seconds_per_resample": per_theirs,
        "sklearn_seconds_for_all_resamples_extrapolated": round(per_theirs * args.resamples, 1),
        "speedup": round(per_theirs / per_ours, 1),
        "max_abs_difference": worst,
    }
    save(result, args.out, numpy=np.__version__, sklearn=sklearn.__version__)


if __name__ == "__main__":
    main()
