"""The GitHub Actions workflows cannot run here; actionlint (pinned, built from the Go module proxy) checks
their syntax, expressions, action inputs and job graph. shellcheck is used for `run:` scripts when on PATH."""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e.harness.binaries import REPO_ROOT, tool_binary

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_binary("actionlint")), "-no-color", *map(str, paths)],
        capture_output=True, text=True, check=False, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip


def test_workflows_cover_lint_test_release_and_kind() -> None:
    names = {p.name for p in WORKFLOWS}
    assert names == {"ci.yaml", "release.yaml", "e2e-kind.yaml"}
    ci = (REPO_ROOT / ".github/workflows/ci.yaml").read_text()
    assert "make lint" in ci and "make test" in ci
    release = (REPO_ROOT / ".github/workflows/release.yaml").read_text()
    assert "linux/amd64,linux/arm64" in release and "tags:" in release
    assert "make e2e" in (REPO_ROOT / ".github/workflows/e2e-kind.yaml").read_text()


def test_actionlint_accepts_every_workflow() -> None:
    result = _actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    # The linter is really looking: an undefined matrix key and an unknown action input are reported.
    broken = tmp_path / ".github" / "workflows" / "broken.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "    - uses: actions/checkout@v4\n      with: {no-such-input: 1}\n"
        "    - run: echo ${{ matrix.missing }}\n"
    )
    result = _actionlint(broken)
    assert result.returncode == 1
    assert "no-such-input" in result.stdout and "matrix" in result.stdout
