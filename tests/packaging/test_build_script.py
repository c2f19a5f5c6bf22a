"""e2e/controlplane/build-binaries.sh's recipes, run with a stand-in `go` that records its calls and writes
an empty executable where `go build -o` points (the real builds take minutes; CI runs them cold)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from e2e.harness.binaries import BUILD_SCRIPT

FAKE_GO = """#!/bin/sh
echo "$(pwd -P | sed 's|.*/stablelb-build\\..*|WORK|') $*" >> "$FAKE_GO_LOG"
if [ "$1" = build ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = -o ]; then mkdir -p "$(dirname "$2")"; printf '#!/bin/sh\\n' > "$2"; chmod +x "$2"; fi
    shift
  done
fi
"""


def _run_script(tmp_path: Path, *what: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    (bindir / "go").write_text(FAKE_GO)
    (bindir / "go").chmod(0o755)
    log = tmp_path / "go.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STABLELB_", "KUBEBUILDER_"))},
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "STABLELB_CACHE": str(tmp_path / "cache"),
        "FAKE_GO_LOG": str(log),
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *what], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    return result, log.read_text().splitlines() if log.exists() else []


def test_jaeger_and_promtool_share_the_go_get_tool_recipe(tmp_path: Path) -> None:
    result, calls = _run_script(tmp_path, "jaeger", "promtool")
    assert result.returncode == 0, result.stderr
    assert calls == [
        "WORK mod init jaegerbuild",
        "WORK get -tool github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0",
        f"WORK build -ldflags -s -w  -o {tmp_path}/cache/bin/jaeger-v1.76.0.tmp/jaeger "
        "github.com/jaegertracing/jaeger/cmd/jaeger",
        "WORK mod init promtoolbuild",
        "WORK get -tool github.com/prometheus/prometheus/cmd/promtool@v0.316.0",
        "WORK build -tags remove_all_sd -ldflags -s -w "
        "-X github.com/prometheus/common/version.Version=v0.316.0 "
        f"-o {tmp_path}/cache/bin/promtool-v0.316.0.tmp/promtool "
        "github.com/prometheus/prometheus/cmd/promtool",
    ]
    for name in ("jaeger-v1.76.0/jaeger", "promtool-v0.316.0/promtool"):
        assert os.access(tmp_path / "cache/bin" / name, os.X_OK)
    assert not list(tmp_path.glob("stablelb-build.*")), "the throwaway modules are removed"

    again, calls_after = _run_script(tmp_path, "jaeger", "promtool")
    assert again.returncode == 0 and calls_after == calls  # both cached now: go is not called again
    assert "jaeger v1.76.0 cached" in again.stderr and "promtool v0.316.0 cached" in again.stderr


def test_several_targets_in_one_call_and_an_unknown_one_builds_nothing(tmp_path: Path) -> None:
    result, calls = _run_script(tmp_path, "jaeger", "no-such-thing")
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert calls == []
