"""Write docs/padchest-mapping.md: what the raw-PadChest → CXR-LT mapping gives on the real CSV.

Usage: python scripts/padchest_mapping_report.py [RUN_DIR]

RUN_DIR is a run prepared with ``trcgl prepare --config padchest`` (default: runs/padchest; it
is prepared if missing). The page lists, per class, the raw findings mapped to it, the images
and patients in the whole CSV and in the training split, the frequency group at the paper's
thresholds, and every raw finding left unmapped with its image count.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from trcgl.config import load_config
from trcgl.data.vocab import load_mapping
from trcgl.stages.prepare import prepare

DOC = Path(__file__).resolve().parents[1] / "docs" / "padchest-mapping.md"


def main() -> None:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/padchest")
    config = load_config("padchest")
    prepare(config, run)
    stats = pd.read_csv(run / "label_stats.csv")
    info = json.loads((run / "label_stats.json").read_text())
    mapping = load_mapping(config.data.mapping)
    sources: dict[str, list[str]] = {c: [] for c in stats["class"]}
    for finding, targets in sorted(mapping.targets.items()):
        for t in targets:
            sources[t].append(finding)
    groups = info["groups"]
    lines = [
        "# Raw PadChest → CXR-LT 2026 classes: what the mapping gives",
        "",
        f"Mapping table `{config.data.mapping}` (in `src/trcgl/resources/`), applied by "
        "`trcgl prepare --config padchest` to the real PadChest label CSV "
        "(`PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`, 160,861 rows). The CXR-LT 2026 "
        "organisers' own harmonisation is not published; this table approximates it, so counts "
        "differ from the challenge's.",
        "",
        "Rows removed before counting: "
        + "; ".join(f"{v:,} {k}" for k, v in info["dropped"].items())
        + f". Kept: {info['images']['train'] + info['images']['val']:,} images of "
        f"{info['patients']['train'] + info['patients']['val']:,} patients; "
        f"{info['images_without_class']:,} of them carry none of the 30 classes (only unmapped "
        "findings). Split: patient-level, 80/20, seed 0.",
        "",
        f"Groups at the paper's thresholds on training images (head > {groups['head_above']:g}, "
        f"tail < {groups['tail_below']:g}): **{len(groups['head'])} head / "
        f"{len(groups['medium'])} medium / {len(groups['tail'])} tail** (the paper reports "
        "13 / 11 / 6 on the challenge's labels and split).",
        "",
        "| # | class | raw PadChest findings | images | patients | train images | train patients "
        "| group |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for i, row in enumerate(stats.itertuples(index=False), start=1):
        r = row._asdict()
        cls = stats["class"].iloc[i - 1]
        lines.append(
            f"| {i} | {cls} | {', '.join(sources[cls])} | {r['images_all']:,} | "
            f"{r['patients_all']:,} | {r['images_train']:,} | {r['patients_train']:,} | "
            f"{r['group']} |"
        )
    lines += [
        "",
        f"## Raw findings left unmapped ({len(info['unmapped_findings'])})",
        "",
        "Images carrying each, counted before the projection and exclusion-list filters:",
        "",
        "| finding | images |",
        "|---|---:|",
    ]
    lines += [f"| {f} | {n:,} |" for f, n in info["unmapped_findings"].items()]
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
