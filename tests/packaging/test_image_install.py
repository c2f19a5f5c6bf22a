"""The image's install, without Docker: the files the Dockerfile copies, image/install.sh's two steps (the
wheel built with the locked setuptools; a pip-less virtualenv from requirements.lock with --require-hashes),
then the installed `stablelb-controller` run as a non-root user from a read-only tree against the local API
server, with the manifests' RBAC.

Non-root: when the test runs as root it drops to nobody (65534) with `setpriv --reuid --regid --clear-groups`;
otherwise it already runs as an unprivileged user. Read-only: the virtualenv, the working directory, HOME and
TMPDIR are directories the controller's user cannot write (as readOnlyRootFilesystem in the Deployment).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import LocalCluster
from e2e.harness.processes import free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def dockerfile_copies(dockerfile: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each `COPY` from the build context (not `COPY --from=`)."""
    copies = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copies.append((words[1:-1], words[-1]))
    return copies


def _stage_build_context(dest: Path) -> Path:
    """/src as the Dockerfile's build stage sees it (WORKDIR /src; destinations relative to it)."""
    dest.mkdir()
    for sources, target in dockerfile_copies((ROOT / "Dockerfile").read_text()):
        for source in sources:
            src = ROOT / source
            to = dest / target / (src.name if target.endswith("/") else "")
            to.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, to, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, to)
    return dest


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{argv} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A directory standing in for the image: /opt/stablelb (the virtualenv) and nothing writable.

    Outside pytest's tmp_path (0700 for root), so the unprivileged user can reach it.
    """
    base = Path(tempfile.mkdtemp(prefix="stablelb-image-"))
    try:
        src = _stage_build_context(base / "src")
        env = {**os.environ, "PYTHON": sys.executable}
        script, dist = str(src / "image/install.sh"), str(base / "dist")
        _run(["sh", script, "wheel", str(src), dist], env=env)
        _run(["sh", script, "venv", str(base / "opt"), str(src), dist], env=env)
        shutil.rmtree(src)
        for path in (base, *base.rglob("*")):
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod((mode & ~0o222) | (0o555 if path.is_dir() else 0o444))
        yield base
    finally:
        for path in (base, *base.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)


def _as_unprivileged(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all", *argv]


def _unprivileged_env(image: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    env = {
        "PATH": f"{image / 'opt/bin'}:/usr/bin:/bin",
        "HOME": str(image),  # read-only, like /nonexistent in the image
        "TMPDIR": str(image),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "POD_NAMESPACE": "kube-system",
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def test_image_virtualenv_has_the_controller_and_neither_pip_nor_setuptools(image_root: Path) -> None:
    python = image_root / "opt/bin/python"
    for module in ("pip", "setuptools"):
        result = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False)
        assert result.returncode != 0, f"{module} is importable in the image's virtualenv"
    help_run = _run(
        _as_unprivileged(["stablelb-controller", "--help"]), env=_unprivileged_env(image_root), cwd=image_root
    )
    assert "--metrics-bind-address" in help_run.stdout
    version = _run([str(python), "-c", "import importlib.metadata as m; print(m.version('stablelb'))"])
    import controller

    assert version.stdout.strip() == controller.__version__


def test_installed_controller_serves_a_service_as_nobody_from_a_read_only_tree(
    image_root: Path, stablelb_installed: LocalCluster, controller_kubeconfig: Path, tmp_path: Path
) -> None:
    api = stablelb_installed.api
    suffix = uuid.uuid4().hex[:6]
    lb_class = f"pkg-{suffix}.stablelb.io/lb"
    pool_name, ns = f"pkg-{suffix}", f"pkg-{suffix}"
    # The kubeconfig must be readable by the unprivileged user, and only by it (outside the 0700 tmp_path).
    secrets_parent = Path(tempfile.mkdtemp(prefix="stablelb-secrets-"))
    secrets_parent.chmod(0o711)
    secrets_dir = secrets_parent / "secrets"
    secrets_dir.mkdir()
    kubeconfig = secrets_dir / "kubeconfig"
    shutil.copy(controller_kubeconfig, kubeconfig)
    if os.geteuid() == 0:
        for p in (secrets_dir, kubeconfig):
            os.chown(p, NOBODY, NOBODY)
    kubeconfig.chmod(0o400)
    secrets_dir.chmod(0o500)

    metrics_port, probe_port = free_port(), free_port()
    argv = [
        "stablelb-controller",
        f"--lb-class={lb_class}",
        "--handle-unclassed=false",
        f"--lease-name=pkg-{suffix}",
        f"--metrics-bind-address=127.0.0.1:{metrics_port}",
        f"--health-probe-bind-address=127.0.0.1:{probe_port}",
        "--log-format=json",
    ]
    log = tmp_path / "controller.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            _as_unprivileged(argv), env=_unprivileged_env(image_root, kubeconfig), cwd=image_root,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        api.post("/api/v1/namespaces", {"metadata": {"name": ns}})
        api.post(
            "/apis/stablelb.io/v1alpha1/ippools",
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": pool_name},
                "spec": {"addresses": [f"fd00:c1:{int(suffix[:4], 16):x}::/126"], "autoAssign": False},
            },
        )
        api.post(
            f"/api/v1/namespaces/{ns}/services",
            {
                "metadata": {"name": "web", "annotations": {"stablelb.io/pool": pool_name}},
                "spec": {
                    "type": "LoadBalancer",
                    "loadBalancerClass": lb_class,
                    "ipFamilyPolicy": "SingleStack",
                    "ipFamilies": ["IPv6"],
                    "ports": [{"port": 80, "protocol": "TCP"}],
                },
            },
        )

        def assigned() -> str | None:
            assert proc.poll() is None, f"controller exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            status = api.get(f"/api/v1/namespaces/{ns}/services/web").get("status", {})
            ips = [i.get("ip") for i in status.get("loadBalancer", {}).get("ingress", [])]
            return ips[0] if ips else None

        ip = _wait_sync(assigned, timeout=120, what=f"an IP for {ns}/web\n{log}")
        status_lines = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        uids = next(line for line in status_lines if line.startswith("Uid:"))
        assert set(uids.split()[1:]) == {str(os.geteuid() if os.geteuid() != 0 else NOBODY)}
        assert ip.startswith(f"fd00:c1:{int(suffix[:4], 16):x}::")

        ready = urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=10)
        assert ready.status == 200
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        metrics = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        assert "stablelb_allocations_total" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        api.request("DELETE", f"/api/v1/namespaces/{ns}/services/web")
        api.request("DELETE", f"/apis/stablelb.io/v1alpha1/ippools/{pool_name}")
        secrets_dir.chmod(0o700)
        shutil.rmtree(secrets_parent)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert code == 0, log.read_text()[-3000:]
    assert not [entry for entry in lines if entry.get("level") in ("error", "critical")], lines


def _wait_sync(predicate: Any, *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

