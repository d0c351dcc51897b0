"""The method description the code cites is in the repository, and every citation of it
points at a section that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
CITATION = re.compile(r"docs/method\.md\s*§(\d+)(?:\s*[–-]\s*§?(\d+))?")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.yaml", "*.toml", ".ci/*"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def test_every_section_cited_exists():
    sections = {int(n) for n in re.findall(r"^## §(\d+) ", METHOD.read_text(), flags=re.M)}
    assert sections == set(range(7))
    cited: dict[int, list[str]] = {}
    for path in _tracked_text_files():
        for m in CITATION.finditer(path.read_text(encoding="utf-8")):
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            for n in range(first, last + 1):
                cited.setdefault(n, []).append(path.relative_to(ROOT).as_posix())
    assert len(cited) >= 5 and sum(map(len, cited.values())) >= 30
    missing = {n: files for n, files in cited.items() if n not in sections}
    assert not missing, f"cited sections that docs/method.md lacks: {missing}"


def test_no_file_cites_a_spec_outside_the_repository():
    stale = [
        p.relative_to(ROOT).as_posix()
        for p in _tracked_text_files()
        if p != Path(__file__).resolve() and "METHOD.md" in p.read_text(encoding="utf-8")
    ]
    assert not stale, f"cite docs/method.md instead: {stale}"
