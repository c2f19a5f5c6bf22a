"""`pip install -e .` on a fresh clone prints no setuptools warning walls (the table form of
`project.license` was deprecated; setuptools' import-hook editable mode printed an "Editable installation"
notice). Uses the locked setuptools from requirements-build.lock, installed by the image build's own step
(image/install.sh build-env)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WALL_MARKERS = ("Deprecat", "deprecat", "BuildBackendWarning", "SetuptoolsWarning", "!!\n", "********")


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def build_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("pip") / "venv"
    locked = subprocess.run(
        ["sh", str(ROOT / "image/install.sh"), "build-env", str(venv), str(ROOT)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    return venv


def test_editable_install_prints_no_setuptools_warnings(build_venv: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, clone / name)
    shutil.copytree(ROOT / "controller", clone / "controller", ignore=shutil.ignore_patterns("__pycache__"))

    result = _pip("--python", str(build_venv / "bin/python"), "install", "--no-deps", "--no-build-isolation",
                  "-v", "-e", str(clone))  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Successfully installed stablelb" in output
    walls = [m for m in WALL_MARKERS if m in output]
    assert walls == [], output
    # The editable install is a plain path entry for the checkout.
    [pth] = (build_venv / "lib").glob("python3*/site-packages/__editable__.stablelb-*.pth")
    assert pth.read_text().strip() == str(clone)
