"""``write_report``: one self-contained ``report.html`` per run directory (tiny real run)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import trcgl
from trcgl.data.manifest import Manifest
from trcgl.stages.evaluate import evaluate_run
from trcgl.stages.report import write_report

PNG_URI = "data:image/png;base64,"
SECTIONS = [
    "sec-configuration",
    "sec-data",
    "sec-synthetic",
    "sec-training",
    "sec-metrics",
    "sec-per-class",
    "sec-pr-curves",
    "sec-explanations",
]


class Page(HTMLParser):
    """What the tests read from a report: image sources, every src / href, the body rows of
    each table with an id, and per section its notes and <h3> headings."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.notes: dict[str, list[str]] = {}
        self.headings: dict[str, list[str]] = {}
        self.sections: list[str] = []
        self._section: str | None = None
        self._table: str | None = None
        self._body = False
        self._row: list[str] | None = None
        self._text: list[str] | None = None
        self._into: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.urls += [a[k] for k in ("src", "href") if k in a]
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "section":
            self._section = a.get("id")
            self.sections.append(str(self._section))
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._body = True
        elif tag == "tr" and self._table and self._body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._text, self._into = [], "cell"
        elif tag == "p" and "note" in a.get("class", "").split():
            self._text, self._into = [], "note"
        elif tag == "h3":
            self._text, self._into = [], "h3"

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text or []).strip()
        if tag == "td" and self._into == "cell" and self._row is not None:
            self._row.append(text)
            self._text = self._into = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._body = False
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._into == "note":
            self.notes.setdefault(str(self._section), []).append(text)
            self._text = self._into = None
        elif tag == "h3" and self._into == "h3":
            self.headings.setdefault(str(self._section), []).append(text)
            self._text = self._into = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def add_synthetic(run: Path) -> dict:
    """Fabricate the diffusion stage's outputs (names as the diffusion stage writes them)."""
    rng = np.random.default_rng(0)
    (run / "diffusion").mkdir()
    (run / "synthetic").mkdir()
    generator = {
        "loss_before": 0.2125,
        "loss_after": 0.1031,
        "steps": 40,
        "seconds_per_step": 0.5,
        "unet_mode": "lora",
        "images": 63,
    }
    (run / "diffusion" / "train.json").write_text(json.dumps(generator))
    loss = 0.1 + 0.1 * np.exp(-np.arange(40) / 10) + 0.01 * rng.standard_normal(40)
    lines = [json.dumps({"step": i, "loss": float(v), "seconds": 0.5}) for i, v in enumerate(loss)]
    (run / "diffusion" / "loss.jsonl").write_text("\n".join(lines) + "\n")
    per_class = {
        "Nodule": {"planned": 6, "made": 6, "kept": 4, "near_copy": 1, "low_probability": 1},
        "Effusion": {"planned": 3, "made": 3, "kept": 3, "near_copy": 0, "low_probability": 0},
    }
    summary = {
        "planned": 9,
        "made": 9,
        "kept": 7,
        "rejected": {"near_copy": 1, "low_probability": 1},
        "prob_threshold": 0.5,
        "max_similarity": 0.95,
        "w_syn": 0.5,
        "per_class": per_class,
    }
    (run / "synthetic" / "summary.json").write_text(json.dumps(summary))
    grid = (rng.random((64, 128)) * 255).astype(np.uint8)
    Image.fromarray(grid).save(run / "synthetic" / "samples.png")
    return summary


@pytest.fixture(scope="module")
def reports(trained_run, tmp_path_factory) -> dict:
    """The trained run, copied and evaluated on val; its report without synthetic data, then
    with fabricated synthetic outputs added."""
    run, _ = trained_run
    copy = tmp_path_factory.mktemp("html_report") / "run"
    shutil.copytree(run, copy)
    evaluate_run(copy, split="val")
    plain = write_report(copy, explain_images=0).read_text(encoding="utf-8")
    summary = add_synthetic(copy)
    path = write_report(copy, explain_images=2)
    text = path.read_text(encoding="utf-8")
    return {
        "run": copy,
        "path": path,
        "text": text,
        "page": Page(text),
        "summary": summary,
        "plain": Page(plain),
    }


def test_report_is_written_atomically_with_every_section(reports):
    run, page = reports["run"], reports["page"]
    assert reports["path"] == run / "report.html"
    assert not list(run.glob(".report.html.*")), "no temporary file is left behind"
    assert page.sections == SECTIONS
    assert "<nav" in reports["text"] and all(f'href="#{s}"' in reports["text"] for s in SECTIONS)


def test_report_is_self_contained(reports):
    text, page = reports["text"], reports["page"]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not [u for u in page.urls if re.match(r"\s*(https?:)?//", u, re.I)]
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert all(u.startswith(("#", PNG_URI)) for u in page.urls)
    # Fig. 2, generator loss, Fig. 3, training curve, reliability, PR curves, Fig. 4 + 5 of two
    # images.
    assert len(page.images) == 10
    for src in page.images:
        assert src.startswith(PNG_URI)
        data = base64.b64decode(src[len(PNG_URI) :], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "PNG"
            img.verify()


def test_header_names_run_version_and_split(reports):
    text = reports["text"]
    assert "<h1>TRCGL-Net run report: run</h1>" in text
    assert f"<dd>{trcgl.__version__}</dd>" in text
    assert "<dd>val (tuned-threshold F1 is optimistic" in text
    assert "<dd>TRCGL-Net (convnextv2_atto)</dd>" in text


def test_tables_have_one_row_per_class(reports):
    run, page = reports["run"], reports["page"]
    classes = pd.read_csv(run / "evaluation" / "val" / "per_class.csv")["class"].tolist()
    assert [r[0] for r in page.tables["per-class"]] == classes
    assert [r[0] for r in page.tables["label-stats"]] == classes
    stats = pd.read_csv(run / "label_stats.csv")
    row = page.tables["label-stats"][0]
    assert row[1] == stats.loc[0, "group"] and row[2] == str(stats.loc[0, "images_train"])


def test_printed_metrics_equal_metrics_json(reports):
    run, page = reports["run"], reports["page"]
    metrics = json.loads((run / "evaluation" / "val" / "metrics.json").read_text())
    rows = {r[0]: r for r in page.tables["metrics-summary"]}
    assert list(rows) == ["overall", "head", "medium", "tail"]
    for subset, row in rows.items():
        s = metrics["summary"][subset]
        assert row[2:] == [f"{s[k]:.4f}" for k in ("mAP", "mAUC", "macro_F1", "macro_F1_tuned")], (
            subset
        )
    assert rows["overall"][2] == f"{metrics['summary']['overall']['mAP']:.4f}"
    per_class = {r[0]: r for r in page.tables["per-class"]}
    for record in metrics["per_class"]:
        assert f"{record['ap']:.4f}" in per_class[record["class"]]
        assert f"{record['threshold']:.4f}" == per_class[record["class"]][-1]


def test_metrics_carry_their_intervals_and_calibration(reports):
    run, page, text = reports["run"], reports["page"], reports["text"]
    metrics = json.loads((run / "evaluation" / "val" / "metrics.json").read_text())
    rows = {r[0]: r for r in page.tables["metrics-intervals"]}
    low, high = metrics["intervals"]["overall"]["mAP"]
    assert rows["overall"][1:3] == [
        f"{metrics['summary']['overall']['mAP']:.4f}",
        f"[{low:.4f}, {high:.4f}]",
    ]
    cal = {r[0]: r for r in page.tables["calibration"]}
    assert cal["overall"][1] == f"{metrics['calibration']['macro_ece']:.4f}"
    assert cal["overall"][2] == f"{metrics['calibration']['macro_ece_after_temperature']:.4f}"
    assert 'alt="reliability diagram"' in text


def test_synthetic_section_with_and_without_synthetic_data(reports):
    plain, page, summary = reports["plain"], reports["page"], reports["summary"]
    assert any("No synthetic data" in n for n in plain.notes["sec-synthetic"])
    assert "synthetic-per-class" not in plain.tables
    assert "sec-synthetic" not in page.notes or not any(
        "No synthetic data" in n for n in page.notes["sec-synthetic"]
    )
    rows = {r[0]: r for r in page.tables["synthetic-per-class"]}
    assert list(rows) == ["Effusion", "Nodule"]  # class order of the run
    assert rows["Nodule"][1:] == ["tail", "6", "6", "4", "1", "1", f"{4 / 6:.4f}"]
    generator = dict(page.tables["generator"])
    assert generator["loss before"] == "0.2125" and generator["loss after"] == "0.1031"
    filtered = dict(page.tables["synthetic-summary"])
    assert filtered["made"] == str(summary["made"]) and filtered["kept"] == str(summary["kept"])
    assert filtered["rejected"] == "2" and filtered["w syn"] == "0.5000"
    assert 'alt="Fig. 3: synthetic samples"' in reports["text"]
    assert 'alt="generator loss curve"' in reports["text"]


def test_explained_images_have_most_tail_labels(reports):
    run, page = reports["run"], reports["page"]
    info = json.loads((run / "label_stats.json").read_text())
    frame = Manifest.load(run / "manifest.parquet").frame
    val = frame[frame["split"] == "val"].copy()
    val["tail"] = val[info["groups"]["tail"]].sum(axis=1)
    expected = val.sort_values(["tail", "image_id"], ascending=[False, True])["image_id"]
    assert page.headings["sec-explanations"] == expected.head(2).tolist()
    text = reports["text"]
    assert text.count('alt="Fig. 4: ') == 2 and text.count('alt="Fig. 5: ') == 2
    assert "tuned on the validation split" in text


def test_fig4_and_fig5_come_from_the_explain_record_and_the_page_runs_no_model(
    reports, tmp_path, monkeypatch
):
    import trcgl.models.base
    from trcgl.run_dir import RunDir

    copy = tmp_path / "run"
    shutil.copytree(reports["run"], copy)
    run = RunDir(copy)
    record = run.record("explain")
    assert record["asked"] == 2 and len(record["images"]) == 2
    assert record["inputs"] == {
        "train": run.record_id("train"),
        "evaluate val": run.record_id("evaluate val"),
    }
    assert all((copy / image["confidence"]).is_file() for image in record["images"])
    figures = reports["page"].images

    def no_model(*args, **kwargs):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(trcgl.models.base, "load_model", no_model)
    again = Page(write_report(copy, explain_images=2).read_text(encoding="utf-8"))
    assert len(again.images) == len(figures)
    assert run.record("explain") == record  # current: reused
    monkeypatch.undo()
    run.write_record("train", {"best_epoch": 0}, inputs=())  # the model trained again
    write_report(copy, explain_images=2)
    assert run.record("explain")["id"] != record["id"]  # stale: drawn again


def test_unfinished_runs_get_notes_instead_of_sections(prepared, tmp_path):
    run, _ = prepared
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    page = Page(write_report(copy).read_text(encoding="utf-8"))
    assert len(page.images) == 1  # Fig. 2 only
    assert "label-stats" in page.tables and "metrics-summary" not in page.tables
    for section in ("sec-synthetic", "sec-training", "sec-metrics", "sec-per-class"):
        assert page.notes[section], section
    assert any("not been trained" in n for n in page.notes["sec-explanations"])

    empty = tmp_path / "empty"
    empty.mkdir()
    page = Page(write_report(empty).read_text(encoding="utf-8"))
    assert page.sections == SECTIONS and not page.images
    assert all(page.notes.get(s) for s in SECTIONS)


def test_split_defaults_to_test_when_evaluated(tmp_path):
    for split, value in (("val", 0.5), ("test", 0.25)):
        out = tmp_path / "evaluation" / split
        out.mkdir(parents=True)
        summary = {"overall": {"mAP": value, "mAUC": 0.6, "macro_F1": 0.1, "n_classes": 1}}
        (out / "metrics.json").write_text(json.dumps({"method": "m", "summary": summary}))
    test = Page(write_report(tmp_path).read_text(encoding="utf-8"))
    assert test.tables["metrics-summary"][0][:3] == ["overall", "1", "0.2500"]
    assert test.tables["metrics-summary"][0][-1] == "–"  # no tuned thresholds
    val = Page(write_report(tmp_path, "val").read_text(encoding="utf-8"))
    assert val.tables["metrics-summary"][0][2] == "0.5000"
