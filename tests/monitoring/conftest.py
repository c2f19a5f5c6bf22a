"""promtool for the rule tests: the cached build (`make binaries`), else built once like the control plane."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from e2e.harness.binaries import BUILD_SCRIPT, REPO_ROOT, cache_dir

PROMTOOL_VERSION = os.environ.get("STABLELB_PROMTOOL_VERSION", "v0.316.0")
FILES = REPO_ROOT / "charts" / "stablelb" / "files"


@pytest.fixture(scope="session")
def promtool() -> Path:
    path = cache_dir() / f"promtool-{PROMTOOL_VERSION}" / "promtool"
    if not (path.is_file() and os.access(path, os.X_OK)):
        result = subprocess.run(["bash", str(BUILD_SCRIPT), "promtool"], check=False)
        if result.returncode != 0:
            pytest.fail(f"building promtool failed (exit {result.returncode}); run `make binaries`")
    return path
