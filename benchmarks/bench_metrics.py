"""Benchmark trcgl.evaluation.metrics against a per-class scikit-learn loop.

Times AP + AUC + F1 (at 0.5) for every class of a 32,000 × 30 long-tailed score matrix, once
with continuous scores and once with scores rounded to 2 decimals (many ties), checks that the
results are equal and writes ``benchmarks/results/metrics.json``.

    python benchmarks/bench_metrics.py [--repeats 7] [--out benchmarks/results/metrics.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

import trcgl
from trcgl.evaluation.metrics import average_precision, evaluate, f1_scores, roc_auc

N_SAMPLES = 32_000
N_CLASSES = 30
SEED = 2024
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "metrics.json"

Metrics = tuple[np.ndarray, np.ndarray, np.ndarray]


def make_data(seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long-tailed labels (prevalence 0.3 → 0.001) and sigmoid scores loosely tied to them."""
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.3, 0.001, N_CLASSES)
    y = (rng.random((N_SAMPLES, N_CLASSES)) < prevalence).astype(np.int64)
    logits = rng.normal(size=(N_SAMPLES, N_CLASSES)) + 1.5 * y - 1.0
    s = 1.0 / (1.0 + np.exp(-logits))
    return y, s, prevalence


def trcgl_metrics(y: np.ndarray, s: np.ndarray) -> Metrics:
    return average_precision(y, s), roc_auc(y, s), f1_scores(y, s, 0.5)


def trcgl_evaluate(y: np.ndarray, s: np.ndarray) -> Metrics:
    pc = evaluate(y, s, [f"c{i}" for i in range(y.shape[1])]).per_class
    return pc["ap"].to_numpy(), pc["auc"].to_numpy(), pc["f1"].to_numpy()


def sklearn_metrics(y: np.ndarray, s: np.ndarray) -> Metrics:
    ap, auc, f1 = [], [], []
    for c in range(y.shape[1]):
        ap.append(average_precision_score(y[:, c], s[:, c]))
        auc.append(roc_auc_score(y[:, c], s[:, c]))
        f1.append(f1_score(y[:, c], (s[:, c] >= 0.5).astype(np.int64)))
    return np.array(ap), np.array(auc), np.array(f1)


def median_time(fn: Callable[[np.ndarray, np.ndarray], Metrics], y, s, repeats: int):
    result = fn(y, s)  # warm-up, and the result to compare
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(y, s)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def max_abs_diff(a: Metrics, b: Metrics) -> dict[str, float]:
    return {
        name: float(np.max(np.abs(x - y)))
        for name, x, y in zip(("ap", "auc", "f1"), a, b, strict=True)
    }


def run(repeats: int) -> dict[str, Any]:
    y, s, prevalence = make_data()
    variants = {"continuous": s, "rounded_2dp": np.round(s, 2)}
    out: dict[str, Any] = {
        "benchmark": "AP + AUC + F1@0.5 for all classes",
        "shape": [N_SAMPLES, N_CLASSES],
        "prevalence_range": [float(prevalence[0]), float(prevalence[-1])],
        "positives_per_class": y.sum(axis=0).tolist(),
        "repeats": repeats,
        "statistic": "median wall-clock seconds",
        "variants": {},
    }
    for name, scores in variants.items():
        t_sk, sk_all, ref = median_time(sklearn_metrics, y, scores, repeats)
        t_tr, tr_all, got = median_time(trcgl_metrics, y, scores, repeats)
        t_ev, ev_all, got_ev = median_time(trcgl_evaluate, y, scores, repeats)
        diff = max_abs_diff(got, ref)
        diff_ev = max_abs_diff(got_ev, ref)
        out["variants"][name] = {
            "distinct_scores_per_class_min": int(
                min(np.unique(scores[:, c]).size for c in range(N_CLASSES))
            ),
            "sklearn_loop_s": t_sk,
            "trcgl_functions_s": t_tr,
            "trcgl_evaluate_s": t_ev,
            "speedup_functions": t_sk / t_tr,
            "speedup_evaluate": t_sk / t_ev,
            "max_abs_diff": diff,
            "max_abs_diff_evaluate": diff_ev,
            "equal_within_1e-9": max(*diff.values(), *diff_ev.values()) <= 1e-9,
            "all_times_s": {
                "sklearn_loop": sk_all,
                "trcgl_functions": tr_all,
                "trcgl_evaluate": ev_all,
            },
        }
    out["versions"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "trcgl": getattr(trcgl, "__version__", None) or _dist_version(),
    }
    out["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    out["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return out


def _dist_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trcgl")
    except PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (≥ 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no silent sklearn warnings in the reference
        result = run(args.repeats)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)

    print(f"AP + AUC + F1@0.5, {N_SAMPLES} × {N_CLASSES}, median of {args.repeats} repeats")
    for name, v in result["variants"].items():
        print(
            f"  {name:12s} sklearn loop {v['sklearn_loop_s'] * 1e3:8.1f} ms | "
            f"trcgl {v['trcgl_functions_s'] * 1e3:6.1f} ms ({v['speedup_functions']:5.1f}×) | "
            f"evaluate {v['trcgl_evaluate_s'] * 1e3:6.1f} ms ({v['speedup_evaluate']:5.1f}×) | "
            f"max |diff| {max(v['max_abs_diff'].values()):.1e}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
