"""One self-contained ``report.html`` per run directory.

:func:`write_report` reads whatever a run directory holds and writes ``<run>/report.html``: a
single file that opens offline in any browser. Every figure is a PNG embedded as a
``data:image/png;base64,`` URI, the style sheet is inline, and there are no scripts, fonts or
links to anything outside the file (a Content-Security-Policy ``<meta>`` says so to the
browser, which then refuses to fetch anything but ``data:`` images).

Sections, in order (each one says in a short note what is missing when its inputs are absent,
e.g. in a labels-only run or a run without synthetic images):

1. **Header**: run name, date written, trcgl version, the split evaluated and the method.
2. **Configuration**: the resolved ``config.yaml``.
3. **Data statistics**: images and patients per split, the frequency-group thresholds, the
   manifest's rows by split and source, Fig. 2 (``figures/label_statistics.png``), the
   per-class counts of ``label_stats.csv`` coloured by group (head / medium / tail) and the
   rows the reader dropped, with why.
4. **Synthetic samples**: the generator's training summary (``diffusion/train.json``: loss
   before / after, steps, seconds per step) and loss curve (``diffusion/loss.jsonl``), the
   filter's made / kept / rejected counts overall and per class (``synthetic/summary.json``)
   and Fig. 3 (``synthetic/samples.png``).
5. **Training**: ``train.json`` and the curve of ``metrics.jsonl`` (validation mAP per epoch,
   overall and per group; training loss).
6. **Metrics**: mAP, mAUC, macro-F1 at 0.5 and at the tuned thresholds, overall and per
   frequency group, with their patient-bootstrap intervals; calibration: macro ECE before and
   after temperature scaling and a reliability diagram (``evaluation/<split>/metrics.json``,
   ``predictions.csv``); localisation: the class maps' pointing game and mass inside the
   radiologist boxes per class, where the run has boxes.
7. **Per-class metrics**: ``evaluation/<split>/per_class.csv`` (AP, AUC, F1, threshold).
8. **Precision–recall curves**: from ``predictions.csv`` (scores and true labels), one panel
   per frequency group, one curve per class, its AP in the legend.
9. **Decision regions and confidences**: Fig. 4 (class attention maps) and Fig. 5 (every
   class's probability against its tuned threshold) of a few validation images, chosen
   deterministically (most positive tail labels first, ties by image id): the figures and the
   record that :func:`trcgl.stages.explain.explain_for_report` keeps in ``figures/explain/``
   (made there, from the model folder and the image cache, unless its record is current).
   Rendering the page itself runs no model.

``split=None`` reports ``test`` when it was evaluated, else ``val``. Text is escaped with
:func:`html.escape`; numbers are right-aligned with four decimals.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
import pandas as pd
from PIL import Image

import trcgl
from trcgl.evaluation.figures import (
    GROUP_COLOURS,
    GROUPS,
    diffusion_loss_figure,
    figure_png,
    is_number,
    pr_curves_figure,
    reliability_figure,
    training_curve_figure,
)
from trcgl.evaluation.tables import fixed_f1_keys, interval_rows
from trcgl.files import atomic_write_text
from trcgl.run_dir import LABEL_STATS, PER_CLASS, RECORD_KEYS, RunDir
from trcgl.stages.explain import explain_for_report

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"
#: Embedded image files larger than this (pixels, longest side) are downscaled.
MAX_IMAGE_SIDE = 2400
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_TINTS = {"head": "#eaf2fa", "medium": "#fff3e6", "tail": "#fcebeb"}


# --------------------------------------------------------------------------------------------
# Small HTML helpers
# --------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _fmt(value: Any) -> str:
    """A table cell's text: integers as they are, other numbers with four decimals."""
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "–" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def _chip(group: str | None) -> str:
    if group not in GROUP_COLOURS:
        return _esc(group or "–")
    return f'<span class="chip {group}">{_esc(group)}</span>'


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    table_id: str | None = None,
    row_groups: Sequence[str | None] | None = None,
    html_columns: Sequence[int] = (),
) -> str:
    """A table; numbers right-aligned. Cells of ``html_columns`` are inserted unescaped."""
    rows = [list(r) for r in rows]
    numeric = [
        bool(rows) and all(is_number(r[j]) or r[j] is None for r in rows) and j not in html_columns
        for j in range(len(header))
    ]
    num = ' class="num"'
    head = "".join(
        f'<th{num if numeric[j] else ""} scope="col">{_esc(h)}</th>' for j, h in enumerate(header)
    )
    body = []
    for i, row in enumerate(rows):
        group = row_groups[i] if row_groups is not None else None
        cls = f' class="g-{group}"' if group in GROUP_COLOURS else ""
        cells = []
        for j, value in enumerate(row):
            text = value if j in html_columns else _esc(_fmt(value))
            cells.append(f'<td class="num">{text}</td>' if is_number(value) else f"<td>{text}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    ident = f' id="{_esc(table_id)}"' if table_id else ""
    return (
        f'<div class="table-wrap"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _key_values(items: Mapping[str, Any], table_id: str | None = None) -> str:
    rows = [[k.replace("_", " "), v] for k, v in items.items()]
    return _table(["", "value"], rows, table_id=table_id)


def _img(png: bytes, alt: str, caption: str = "", css: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cls = f' class="{css}"' if css else ""
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure{cls}><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{cap}</figure>'


def _png_file(path: Path) -> bytes:
    """The bytes of an image file as a PNG no larger than :data:`MAX_IMAGE_SIDE`."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "PNG" and max(img.size) <= MAX_IMAGE_SIDE:
            return data
        img.load()
        if max(img.size) > MAX_IMAGE_SIDE:
            img.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()


# --------------------------------------------------------------------------------------------
# What the run directory holds
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a line cut short by a killed writer is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


@dataclass
class _Run:
    """The run directory and what several sections share."""

    run_dir: Path
    split: str | None
    info: dict[str, Any] | None
    classes: list[str]
    group_of: dict[str, str] = field(default_factory=dict)

    @property
    def eval_dir(self) -> Path | None:
        return None if self.split is None else RunDir(self.run_dir).evaluation(self.split)

    @functools.cached_property
    def predictions(self) -> pd.DataFrame | None:
        """``predictions.csv`` of the reported split (read once for every section)."""
        path = self.eval_dir / "predictions.csv" if self.eval_dir else None
        return pd.read_csv(path) if path is not None and path.is_file() else None

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {g: [] for g in GROUPS}
        for c in self.classes:
            if self.group_of.get(c) in out:
                out[self.group_of[c]].append(c)
        return out


def _choose_split(run_dir: Path, split: str | None) -> str | None:
    if split is not None:
        return split
    for candidate in ("test", "val"):
        if (RunDir(run_dir).evaluation(candidate) / "metrics.json").is_file():
            return candidate
    return None


def _groups_from(frame: pd.DataFrame, group_of: dict[str, str]) -> None:
    """Add the ``class`` → ``group`` pairs of a table that has both columns."""
    if "group" in frame:
        for c, g in zip(frame["class"].astype(str), frame["group"], strict=True):
            if isinstance(g, str):
                group_of.setdefault(c, g)


def _load_run(run_dir: Path, split: str | None) -> _Run:
    info = _read_json(run_dir / LABEL_STATS)
    classes: list[str] = list(info.get("classes", [])) if info else []
    group_of: dict[str, str] = {}
    if info and "groups" in info:
        for g in GROUPS:
            for c in info["groups"].get(g, []):
                group_of[c] = g
    stats = run_dir / "label_stats.csv"
    if stats.is_file():
        frame = pd.read_csv(stats)
        classes = classes or frame["class"].astype(str).tolist()
        _groups_from(frame, group_of)
    chosen = _choose_split(run_dir, split)
    per_class = RunDir(run_dir).evaluation(str(chosen)) / PER_CLASS
    if per_class.is_file():
        frame = pd.read_csv(per_class)
        classes = classes or frame["class"].astype(str).tolist()
        _groups_from(frame, group_of)
    return _Run(run_dir, chosen, info, classes, group_of)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class _Section:
    ident: str
    title: str
    body: str


def _header(run: _Run) -> str:
    config_name = None
    cfg = run.run_dir / "config.yaml"
    if cfg.is_file():
        import yaml

        loaded = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            config_name = loaded.get("name")
    metrics = _read_json(run.eval_dir / "metrics.json") if run.eval_dir else None
    split = run.split or "none (run `trcgl evaluate` first)"
    if run.split == "val":
        split += " (tuned-threshold F1 is optimistic: thresholds tuned on this split)"
    items = {
        "run directory": str(run.run_dir.resolve()),
        "configuration": config_name or "–",
        "written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "trcgl version": trcgl.__version__,
        "split evaluated": split,
        "method": (metrics or {}).get("method", "–"),
        "classes": str(len(run.classes)) if run.classes else "–",
    }
    rows = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items.items())
    name = run.run_dir.resolve().name
    return (
        f'<header><h1>TRCGL-Net run report: {_esc(name)}</h1><dl class="meta">{rows}</dl></header>'
    )


def _configuration(run: _Run) -> str:
    cfg = run.run_dir / "config.yaml"
    if not cfg.is_file():
        return _note("No config.yaml in this run directory.")
    return f"<pre>{_esc(cfg.read_text(encoding='utf-8'))}</pre>"


def _data_statistics(run: _Run) -> str:
    parts: list[str] = []
    info = run.info
    if info is None:
        parts.append(_note("No label_stats.json: the run has not been prepared (`trcgl prepare`)."))
    else:
        images, patients = info.get("images", {}), info.get("patients", {})
        splits = [s for s in ("train", "val", "test") if s in images or s in patients]
        rows = [[s, images.get(s), patients.get(s)] for s in splits]
        rows.append(["all", sum(images.get(s, 0) for s in splits), sum(patients.values())])
        parts.append("<h3>Images and patients per split</h3>")
        parts.append(_table(["split", "images", "patients"], rows, table_id="split-counts"))
        extra = {
            k: info[k] for k in ("images_without_class", "skipped_images", "format") if k in info
        }
        groups = info.get("groups", {})
        extra.update(
            {f"groups: {k}": groups[k] for k in ("mode", "head_above", "tail_below") if k in groups}
        )
        for g in GROUPS:
            if g in groups:
                extra[f"{g} classes"] = len(groups[g])
        if extra:
            parts.append(_key_values(extra, table_id="data-summary"))
    parts.append(_manifest_counts(run))
    fig2 = run.run_dir / "figures" / "label_statistics.png"
    if fig2.is_file():
        caption = (
            "Fig. 2. Training images per class (log scale, coloured by frequency group) and "
            "label co-occurrence P(column | row)."
        )
        parts.append(_img(_png_file(fig2), "Fig. 2: label statistics", caption))
    else:
        parts.append(_note("No figures/label_statistics.png (Fig. 2)."))
    stats = run.run_dir / "label_stats.csv"
    parts.append("<h3>Images and patients per class</h3>")
    if stats.is_file():
        frame = pd.read_csv(stats)
        groups_col = [run.group_of.get(str(c)) for c in frame["class"]]
        header = [c.replace("_", " ") for c in frame.columns]
        rows = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
        html_cols: list[int] = []
        if "group" in frame.columns:
            j = list(frame.columns).index("group")
            for r in rows:
                r[j] = _chip(r[j])
            html_cols = [j]
        parts.append(_legend())
        parts.append(
            _table(
                header, rows, table_id="label-stats", row_groups=groups_col, html_columns=html_cols
            )
        )
    else:
        parts.append(_note("No label_stats.csv."))
    if info is not None:
        dropped = info.get("dropped") or {}
        parts.append("<h3>Rows dropped by the reader</h3>")
        if dropped:
            parts.append(_table(["reason", "rows"], sorted(dropped.items()), table_id="dropped"))
        else:
            parts.append(_note("No rows were dropped."))
    return "".join(parts)


def _legend() -> str:
    chips = " ".join(_chip(g) for g in GROUPS)
    return f'<p class="legend">Rows are coloured by frequency group: {chips}</p>'


def _manifest_counts(run: _Run) -> str:
    path = run.run_dir / "manifest.parquet"
    if not path.is_file():
        return _note("No manifest.parquet.")
    from trcgl.data.manifest import Manifest

    frame = Manifest.load(path).frame
    counts = frame.groupby(["split", "source"]).size()
    rows = [[split, source, int(n)] for (split, source), n in counts.items()]
    synthetic = run.run_dir / "synthetic" / "manifest.parquet"
    if synthetic.is_file():  # the kept synthetic images, beside the real manifest
        rows.append(["train", "synthetic (kept)", len(Manifest.load(synthetic).frame)])
    return "<h3>Manifest rows by split and source</h3>" + _table(
        ["split", "source", "rows"], rows, table_id="manifest-counts"
    )


def _synthetic(run: _Run) -> str:
    gen = _read_json(run.run_dir / "diffusion" / "train.json")
    loss = _read_jsonl(run.run_dir / "diffusion" / "loss.jsonl")
    summary = _read_json(run.run_dir / "synthetic" / "summary.json")
    samples = run.run_dir / "synthetic" / "samples.png"
    if gen is None and not loss and summary is None and not samples.is_file():
        return _note(
            "No synthetic data in this run: the diffusion stage has not run here "
            "(no diffusion/ or synthetic/ outputs)."
        )
    parts = ["<h3>Generator training</h3>"]
    if gen is not None:
        first = ("images", "steps", "unet_mode", "seconds_per_step", "loss_before", "loss_after")
        items = _scalars(gen, first)
        before, after = gen.get("loss_before"), gen.get("loss_after")
        if is_number(before) and is_number(after) and before:
            items["loss change"] = f"{100 * (after - before) / before:+.1f} %"
        parts.append(_key_values(items, table_id="generator"))
    else:
        parts.append(_note("No diffusion/train.json (generator training summary)."))
    if loss:
        parts.append(
            _img(figure_png(diffusion_loss_figure(loss)), "generator loss curve", "Generator loss.")
        )
    else:
        parts.append(_note("No diffusion/loss.jsonl (generator loss curve)."))
    parts.append("<h3>Made, kept and rejected</h3>")
    if summary is not None:
        rejected = summary.get("rejected") or {}
        items = {k: summary[k] for k in ("planned", "made", "kept") if k in summary}
        if isinstance(rejected, Mapping):
            items["rejected"] = sum(rejected.values())
        thresholds = summary.get("prob_threshold")
        if isinstance(thresholds, Mapping):
            summary = {**summary, "prob_threshold": "per class (see the table)"}
        first = ("prob_threshold", "max_similarity", "w_syn")
        items.update(_scalars(summary, first, skip=(*items, *RECORD_KEYS)))
        parts.append(_key_values(items, table_id="synthetic-summary"))
        if isinstance(rejected, Mapping) and rejected:
            rows = sorted(rejected.items())
            parts.append(_table(["rejected because", "images"], rows, table_id="rejected"))
        per_class = summary.get("per_class") or {}
        thr = thresholds if isinstance(thresholds, Mapping) else None
        parts.append(_synthetic_per_class(run, per_class, thr))
        parts.append(_synthetic_quality(summary.get("quality")))
    else:
        parts.append(_note("No synthetic/summary.json (filter summary)."))
    if samples.is_file():
        caption = "Fig. 3. Synthetic samples."
        parts.append(_img(_png_file(samples), "Fig. 3: synthetic samples", caption))
    else:
        parts.append(_note("No synthetic/samples.png (Fig. 3)."))
    return "".join(parts)


def _scalars(
    record: Mapping[str, Any], first: Sequence[str], skip: Sequence[str] = RECORD_KEYS
) -> dict[str, Any]:
    """The record's plain values (not lists or dicts), the keys of ``first`` first."""
    keys = [k for k in first if k in record] + [k for k in record if k not in first]
    return {
        k: record[k]
        for k in keys
        if k not in skip and not isinstance(record[k], Mapping | list | tuple)
    }


def _synthetic_per_class(
    run: _Run,
    per_class: Mapping[str, Mapping[str, Any]],
    thresholds: Mapping[str, Any] | None = None,
) -> str:
    if not per_class:
        return _note("The filter summary has no per-class counts.")
    keys = ("planned", "made", "kept", "near_copy", "low_probability")
    order = [c for c in run.classes if c in per_class] + sorted(
        c for c in per_class if c not in run.classes
    )
    rows, groups = [], []
    for c in order:
        counts = per_class[c]
        made = counts.get("made")
        kept = counts.get("kept")
        rate = kept / made if is_number(made) and made and is_number(kept) else None
        row = [c, _chip(run.group_of.get(c)), *(counts.get(k) for k in keys), rate]
        if thresholds is not None:
            row.append(thresholds.get(c))
        rows.append(row)
        groups.append(run.group_of.get(c))
    header = ["class", "group", "planned", "made", "kept", "near copy", "low probability"]
    header.append("kept / made")
    if thresholds is not None:
        header.append("probability threshold")
    return "<h4>Per class</h4>" + _table(
        header,
        rows,
        table_id="synthetic-per-class",
        row_groups=groups,
        html_columns=[1],
    )


def _synthetic_quality(q: Mapping[str, Any] | None) -> str:
    """KID, precision and recall (and FID) per target class, before / after the filter."""
    if not q or not q.get("per_class"):
        return ""
    rows = []
    for name, pair in q["per_class"].items():
        b, a = pair["before"], pair["after"]
        rows.append(
            [name, b["real"], b["synthetic"], a["synthetic"]]
            + [x.get(key) for key in ("kid", "precision", "recall", "fid") for x in (b, a)]
        )
    header = ["class", "real", "made", "kept"] + [
        f"{m} {when}" for m in ("KID", "precision", "recall", "FID") for when in ("made", "kept")
    ]
    return (
        "<h4>Quality of the synthetic images</h4>"
        f"<p>Each tail class's synthetic images against its real training images, in "
        f"{_esc(q.get('feature_space', 'a feature space'))}, all made and those the filter kept: "
        "KID (unbiased MMD², polynomial kernel; 0 = same distribution), improved precision "
        f"(realism) and recall (coverage) with k = {q.get('k', 3)} neighbours, and FID (biased "
        "upwards for sets this small; compare equal sizes only). – where a set is too small."
        "</p>" + _table(header, rows, table_id="synthetic-quality")
    )


def _training(run: _Run) -> str:
    result = _read_json(run.run_dir / "train.json")
    records = _read_jsonl(run.run_dir / "metrics.jsonl")
    if result is None and not records:
        return _note("Not trained yet: no train.json or metrics.jsonl (`trcgl train`).")
    parts = []
    if result is not None:
        scalars = {
            k: v
            for k, v in result.items()
            if k not in RECORD_KEYS and not isinstance(v, dict | list)
        }
        parts.append(_key_values(scalars, table_id="train-summary"))
    else:
        parts.append(_note("No train.json yet (training still running, or killed)."))
    if records:
        best = (result or {}).get("best_epoch")
        caption = "Validation mAP per epoch (overall and per group) and training loss."
        parts.append(
            _img(figure_png(training_curve_figure(records, best)), "training curve", caption)
        )
    else:
        parts.append(_note("No metrics.jsonl (per-epoch validation metrics)."))
    return "".join(parts)


def _metrics(run: _Run) -> str:
    if run.eval_dir is None:
        return _note("Not evaluated: no evaluation/<split>/metrics.json (`trcgl evaluate`).")
    metrics = _read_json(run.eval_dir / "metrics.json")
    if metrics is None:
        return _note(
            f"The {run.split} split was not evaluated: no evaluation/{run.split}/metrics.json "
            f"(`trcgl evaluate --split {run.split}`)."
        )
    summary = metrics.get("summary", {})
    subsets = [s for s in ("overall", *GROUPS) if s in summary] + [
        s for s in summary if s not in ("overall", *GROUPS)
    ]
    fixed = fixed_f1_keys(summary.get("overall", {}))
    rows = []
    for s in subsets:
        m = summary[s]
        rows.append(
            [
                s,
                m.get("n_classes"),
                m.get("mAP"),
                m.get("mAUC"),
                m.get("macro_F1"),
                *(m.get(k) for k, _ in fixed),
                m.get("macro_F1_tuned"),
            ]
        )
    header = ["subset", "classes", "mAP", "mAUC", "F1 @ 0.5"]
    header += [c.replace("@", " @ ") for _, c in fixed] + ["F1 (tuned thr.)"]
    parts = [
        f"<p>{_esc(metrics.get('method', 'model'))} on the {_esc(run.split)} split; per-class "
        "thresholds tuned on the validation split.</p>",
        _table(header, rows, table_id="metrics-summary", row_groups=subsets),
    ]
    if metrics.get("intervals"):
        boot = metrics.get("bootstrap", {})
        rows = interval_rows(summary, metrics["intervals"])
        if rows:
            parts.append(
                f"<h3>95 % intervals</h3><p>Patient-level bootstrap: {boot.get('resamples', '?')} "
                f"resamples of the {boot.get('patients', '?')} patients (seed "
                f"{boot.get('seed', '?')}); percentile intervals.</p>"
            )
            parts.append(
                _table(
                    list(rows[0]),
                    [list(r.values()) for r in rows],
                    table_id="metrics-intervals",
                    row_groups=[r["subset"] for r in rows],
                )
            )
    parts.append(_calibration(run, metrics.get("calibration")))
    parts.append(_localisation(metrics.get("localisation")))
    if metrics.get("optimistic_tuned_f1") or run.split == "val":
        parts.append(
            _note("F1 (tuned thr.) is optimistic here: the thresholds were tuned on this split.")
        )
    if metrics.get("excluded"):
        parts.append(
            _note(
                "No positives in this split, left out of the means: "
                + ", ".join(metrics["excluded"])
            )
        )
    if metrics.get("excluded_auc"):
        parts.append(
            _note(
                "No negatives in this split, left out of mAUC: "
                + ", ".join(metrics["excluded_auc"])
            )
        )
    return "".join(parts)


def _calibration(run: _Run, cal: Mapping[str, Any] | None) -> str:
    """Macro ECE before / after temperature scaling, per-group ECE, the reliability diagram
    (from ``predictions.csv``)."""
    if not cal:
        return _note("No calibration in metrics.json (evaluated by an older trcgl).")
    from trcgl.evaluation.calibration import reliability_curve

    bins = int(cal.get("bins", 15))
    ece = cal.get("ece") or {}
    rows = [["overall", cal.get("macro_ece"), cal.get("macro_ece_after_temperature")]]
    groups = run.groups()
    for g in GROUPS:
        values = [ece[c] for c in groups.get(g, []) if ece.get(c) is not None]
        if values:
            rows.append([g, float(np.mean(values)), None])
    parts = [
        "<h3>Calibration</h3>",
        f"<p>Expected calibration error of each class's probabilities ({bins} equal-width "
        f"bins), averaged; temperature scaling (one T = {cal.get('temperature', math.nan):.3f} "
        "for all classes, fitted on the validation split, kept in the model folder) changes no "
        "ranking, so AP and AUC stay as above.</p>",
        _table(
            ["subset", "macro ECE", "after temperature scaling"],
            rows,
            table_id="calibration",
            row_groups=[r[0] for r in rows],
        ),
    ]
    preds = run.predictions
    if preds is not None:
        classes = [c for c in preds.columns if c != "ImageID" and not c.startswith("label:")]
        classes = [c for c in classes if f"label:{c}" in preds]
        subsets = {"overall": classes} | {
            g: [c for c in groups.get(g, []) if c in classes] for g in GROUPS
        }
        curves = {
            name: reliability_curve(
                preds[[f"label:{c}" for c in members]].to_numpy(), preds[members].to_numpy(), bins
            )
            for name, members in subsets.items()
            if members
        }
        caption = (
            f"Reliability on the {run.split} split: share of positives against mean probability "
            "per bin, over every (image, class) pair of each subset; right: pairs per bin."
        )
        figure = reliability_figure(curves, cal.get("temperature"))
        parts.append(_img(figure_png(figure), "reliability diagram", caption))
    return "".join(parts)


def _localisation(loc: Mapping[str, Any] | None) -> str:
    """Pointing game and mass inside the radiologist boxes, per class (``metrics.json``'s
    ``localisation``; absent where the run has no boxes on the split)."""
    if not loc:
        return ""
    from trcgl.stages.evaluate import METHOD_NAMES

    o = loc["overall"]
    rows = [
        [r["class"], r["images"], r["pointing"], r["mass_inside"], r["chance"]]
        for r in loc["per_class"]
    ]
    rows.append(
        ["macro", o["pairs"], o["macro_pointing"], o["macro_mass_inside"], o["macro_chance"]]
    )
    return (
        "<h3>Localisation</h3>"
        f"<p>Class maps ({_esc(METHOD_NAMES.get(loc['method'], loc['method']))}) against the "
        "radiologist boxes of this split's images, per class: pointing game (the map's maximum "
        "in a box of the class), the map's mass inside the boxes, and chance (the boxes' share "
        "of the image: what a uniform map scores).</p>"
        + _table(
            ["class", "images", "pointing", "mass inside", "chance"],
            rows,
            table_id="localisation",
            row_groups=[r[0] for r in rows],
        )
    )


def _per_class(run: _Run) -> str:
    path = run.eval_dir / PER_CLASS if run.eval_dir else None
    if path is None or not path.is_file():
        return _note("No per_class.csv (`trcgl evaluate`).")
    frame = pd.read_csv(path)
    train_counts: dict[str, Any] = {}
    stats = run.run_dir / "label_stats.csv"
    if stats.is_file():
        s = pd.read_csv(stats)
        if "images_train" in s:
            train_counts = dict(zip(s["class"].astype(str), s["images_train"], strict=True))
    names = {
        "n_pos": "positives",
        "n_neg": "negatives",
        "ap": "AP",
        "auc": "AUC",
        "f1": "F1 @ 0.5",
        "f1_tuned": "F1 (tuned thr.)",
        "threshold": "tuned threshold",
    }
    for column in frame.columns:
        if column.startswith("f1@"):
            names[column] = f"F1 @ {column[3:]}"
    columns = [c for c in names if c in frame.columns]
    header = ["class", "group"]
    if train_counts:
        header.append("train images")
    header += [names[c] for c in columns]
    rows, groups = [], []
    for _, r in frame.iterrows():
        c = str(r["class"])
        g = run.group_of.get(c) or (r["group"] if isinstance(r.get("group"), str) else None)
        row: list[Any] = [c, _chip(g)]
        if train_counts:
            row.append(train_counts.get(c))
        for col in columns:
            v = r[col]
            row.append(None if pd.isna(v) else (int(v) if col in ("n_pos", "n_neg") else float(v)))
        rows.append(row)
        groups.append(g)
    return _legend() + _table(
        header, rows, table_id="per-class", row_groups=groups, html_columns=[1]
    )


def _pr_curves(run: _Run) -> str:
    preds = run.predictions
    if preds is None:
        return _note("No predictions.csv (`trcgl evaluate`).")
    classes = [c for c in preds.columns if c != "ImageID" and not c.startswith("label:")]
    if not any(f"label:{c}" in preds for c in classes):
        return _note("predictions.csv has no true labels (label:<class> columns).")
    panels: dict[str, list[str]] = {}
    for c in classes:
        if f"label:{c}" in preds:
            panels.setdefault(run.group_of.get(c, "other"), []).append(c)
    order = [g for g in (*GROUPS, "other") if g in panels]
    caption = (
        f"Precision–recall curves on the {run.split} split ({len(preds)} images), one panel per "
        "frequency group; average precision (AP) in the legend."
    )
    return _img(
        figure_png(pr_curves_figure(preds, panels, order)), "precision-recall curves", caption
    )


def _explanations(run: _Run, explained: Mapping[str, Any]) -> str:
    """Fig. 4 / Fig. 5 from the explain record (:func:`trcgl.stages.explain.
    explain_for_report`) and its figure files."""
    if explained.get("note"):
        return _note(explained["note"])
    images = explained["images"]
    rundir = RunDir(run.run_dir)
    parts = [
        f"<p>{len(images)} validation image(s) with the most positive tail labels (ties by image "
        f"id). Thresholds: {_esc(explained['thresholds'])}. ★ marks a true label in Fig. 5.</p>"
    ]
    if not explained.get("attention_maps"):
        parts.append(
            _note(f"{explained['architecture']} has no class attention maps: Fig. 5 only.")
        )
    for image in images:
        chips = ", ".join(f"{_esc(c)} {_chip(run.group_of.get(c))}" for c in image["labels"])
        parts.append(f"<h3>{_esc(image['image_id'])}</h3><p>True labels: {chips or 'none'}</p>")
        figs = []
        if image["regions"]:
            figs.append(
                _img(
                    rundir.resolve(image["regions"]).read_bytes(),
                    f"Fig. 4: {image['image_id']}",
                    "Fig. 4. Class decision regions.",
                )
            )
        figs.append(
            _img(
                rundir.resolve(image["confidence"]).read_bytes(),
                f"Fig. 5: {image['image_id']}",
                "Fig. 5. Prediction confidence.",
            )
        )
        parts.append(f'<div class="grid">{"".join(figs)}</div>')
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def _css() -> str:
    """The style sheet (``resources/report/report.css``), with the group colours of Fig. 2 as
    CSS variables."""
    colours = " ".join(f"--{g}: {GROUP_COLOURS[g]}; --{g}-tint: {_TINTS[g]};" for g in GROUPS)
    sheet = resources.files("trcgl.resources").joinpath("report/report.css").read_text("utf-8")
    return f":root {{ {colours} }}\n" + sheet


def _page(title: str, header: str, sections: list[_Section]) -> str:
    """The page from the template ``resources/report/report.html.j2`` (autoescaped; the
    section bodies are HTML this module built, with every value escaped)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("trcgl", "resources/report"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2").render(
        title=title,
        csp=_CSP,
        css=markupsafe.Markup(_css()),
        header=markupsafe.Markup(header),
        sections=[(s.ident, s.title, markupsafe.Markup(s.body)) for s in sections],
        version=trcgl.__version__,
    )


def write_report(run_dir: str | Path, split: str | None = None, *, explain_images: int = 3) -> Path:
    """Write ``<run_dir>/report.html`` (atomically) from what the run directory holds.

    Args:
        run_dir: a run directory (prepared; trained, evaluated and with synthetic data as far
            as the run got: missing parts get a short note).
        split: the evaluated split to report (``evaluation/<split>/``); ``None``: ``test`` when
            it was evaluated, else ``val``.
        explain_images: how many validation images get Fig. 4 and Fig. 5 (0: none).

    Returns:
        The path of the report.
    """
    run = _load_run(Path(run_dir), split)
    sections = [
        _Section("configuration", "Configuration", _configuration(run)),
        _Section("data", "Data statistics", _data_statistics(run)),
        _Section("synthetic", "Synthetic samples", _synthetic(run)),
        _Section("training", "Training", _training(run)),
        _Section("metrics", "Metrics overall and per group", _metrics(run)),
        _Section("per-class", "Per-class metrics", _per_class(run)),
        _Section("pr-curves", "Precision–recall curves", _pr_curves(run)),
        _Section(
            "explanations",
            "Decision regions and confidences (Fig. 4, Fig. 5)",
            _explanations(run, explain_for_report(run.run_dir, run.split, explain_images)),
        ),
    ]
    for s in sections:  # section ids double as anchors; table ids must not repeat them
        s.ident = f"sec-{s.ident}"
    title = f"trcgl report: {run.run_dir.resolve().name}"
    out = run.run_dir / REPORT_NAME
    atomic_write_text(out, _page(title, _header(run), sections))
    return out
