"""The paper's table layouts of a metrics report (Table 1: overall; Table 2: frequency groups).

* Table 1 layout: method | mAP | mAUC | F1 (at 0.5) | F1 at further fixed thresholds (e.g.
  ``F1@0.2``, the authors') | F1 (per-class thresholds);
* Table 2 layout: method | head / medium / tail mAP, mAUC and F1;
* intervals: per subset, each macro metric beside its bootstrap interval
  (:mod:`trcgl.evaluation.bootstrap`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trcgl.evaluation.metrics import MetricsReport

GROUPS = ("head", "medium", "tail")


def fixed_f1_keys(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(summary key, column name) of the F1s at fixed thresholds other than 0.5."""
    keys = sorted((k for k in summary if k.startswith("macro_F1@")), key=lambda k: float(k[9:]))
    return [(k, f"F1@{k[9:]}") for k in keys]


def table1_row(name: str, report: MetricsReport) -> dict[str, Any]:
    s = report.summary["overall"]
    row = {"method": name, "mAP": s["mAP"], "mAUC": s["mAUC"], "F1": s["macro_F1"]}
    for key, column in fixed_f1_keys(s):
        row[column] = s[key]
    if report.has_tuned:
        row["F1 (tuned thr.)"] = s["macro_F1_tuned"]
    return row


def table2_row(name: str, report: MetricsReport) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name}
    for metric, key in (("mAP", "mAP"), ("mAUC", "mAUC"), ("F1", "macro_F1")):
        for g in GROUPS:
            row[f"{g} {metric}"] = report.summary.get(g, {}).get(key, float("nan"))
    return row


def interval_rows(
    summary: dict[str, dict[str, Any]], intervals: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per subset (overall, head, medium, tail): each metric and its interval."""
    from trcgl.evaluation.bootstrap import format_interval

    names = {"mAP": "mAP", "mAUC": "mAUC", "macro_F1": "F1", "macro_F1_tuned": "F1 (tuned thr.)"}
    rows = []
    for subset, stats in summary.items():
        if not stats.get("n_classes"):
            continue
        row: dict[str, Any] = {"subset": subset}
        for key, name in names.items():
            if key in stats and key in intervals.get(subset, {}):
                value = stats[key]
                row[name] = "–" if value is None else f"{value:.4f}"
                row[f"{name} 95 % CI"] = format_interval(*intervals[subset][key])
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    frame = pd.DataFrame(rows)
    head = "| " + " | ".join(frame.columns) + " |"
    sep = (
        "|"
        + "|".join(
            "---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns
        )
        + "|"
    )

    def cell(v: Any) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, int | np.integer):
            return str(v)
        return f"{v:.4f}"

    body = ["| " + " | ".join(cell(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])
