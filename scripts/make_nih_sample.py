"""Rebuild the vendored NIH ChestX-ray14 demo sample from the 256 px real-image set.

Usage: python scripts/make_nih_sample.py SRC_DIR [--size 128]

SRC_DIR holds ``images/*.png`` (256 px, 8-bit) and ``labels.csv`` (image, patient_id,
finding_labels, view, source_repo, source_commit). The sample is written to
``src/trcgl/resources/nih_sample/``: every image downsized with Lanczos to SIZE px and saved as
an optimised 8-bit PNG, and ``Data_Entry_sample.csv`` in the column layout of NIH's own
``Data_Entry_2017.csv`` (so trcgl's NIH reader reads it as it reads the full data set), with the
source repository and commit of each file kept.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "src" / "trcgl" / "resources" / "nih_sample"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    with (args.src / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out_rows = []
    for row in rows:
        name = Path(row["image"]).name
        with Image.open(args.src / row["image"]) as im:
            small = im.convert("L").resize((args.size, args.size), Image.Resampling.LANCZOS)
        small.save(OUT / "images" / name, optimize=True)
        out_rows.append(
            {
                "Image Index": name,
                "Finding Labels": row["finding_labels"],
                "Patient ID": row["patient_id"],
                "View Position": row["view"],
                "source_repo": row["source_repo"],
                "source_commit": row["source_commit"],
            }
        )
    with (OUT / "Data_Entry_sample.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out_rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(out_rows)
    print(f"wrote {len(out_rows)} images to {OUT}")


if __name__ == "__main__":
    main()
