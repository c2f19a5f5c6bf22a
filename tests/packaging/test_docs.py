"""Docs give commands relative to the repository root, never a path of the machine they were written on."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|root|home/\w+|Users/\w+)/")


def test_docs_name_no_machine_specific_paths() -> None:
    found = [
        f"{doc.relative_to(ROOT)}:{n}: {line.strip()}"
        for doc in DOCS
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert found == []


def test_the_check_sees_such_a_path() -> None:
    assert MACHINE_PATH.search("Command: `cd /work/main && .venv/bin/python bench/informer.py`")
    assert not MACHINE_PATH.search("into `~/.cache/stablelb/bin/` and /opt/stablelb")
