"""`kubectl stablelb` runs the console script pyproject.toml declares (`kubectl-stablelb` on PATH)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def entry_point() -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return str(scripts["kubectl-stablelb"])


def test_the_declared_entry_point_is_the_cli() -> None:
    module, _, func = entry_point().partition(":")
    assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")
def test_kubectl_runs_it_as_a_plugin(tmp_path: Path) -> None:
    # What pip writes for the console script, pointing at this interpreter and this checkout.
    module, _, func = entry_point().partition(":")
    script = tmp_path / "kubectl-stablelb"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n")
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        ["kubectl", "stablelb", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("kubectl-stablelb ")
    listed = subprocess.run(
        ["kubectl", "plugin", "list"], capture_output=True, text=True, env=env, check=False
    )
    assert str(script) in listed.stdout
