"""Where the control-plane binaries come from: $KUBEBUILDER_ASSETS, the per-version cache, or a build."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "e2e" / "controlplane" / "build-binaries.sh"

K8S_VERSION = os.environ.get("STABLELB_K8S_VERSION", "v1.37.2")
ETCD_VERSION = os.environ.get("STABLELB_ETCD_VERSION", "v3.6.16")
JAEGER_VERSION = os.environ.get("STABLELB_JAEGER_VERSION", "v1.76.0")
# Packaging checks (defaults as in build-binaries.sh): the oldest supported kube-apiserver, helm, actionlint.
K8S_OLDEST_VERSION = os.environ.get("STABLELB_K8S_OLDEST_VERSION", "v1.35.4")
HELM_VERSION = os.environ.get("STABLELB_HELM_VERSION", "v4.3.2")
ACTIONLINT_VERSION = os.environ.get("STABLELB_ACTIONLINT_VERSION", "v1.7.12")


class BinariesMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class ControlPlaneBinaries:
    kube_apiserver: Path
    etcd: Path


def cache_dir() -> Path:
    return Path(os.environ.get("STABLELB_CACHE", Path.home() / ".cache" / "stablelb")) / "bin"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _build(what: str) -> None:
    # The script prints one progress line per step on stderr, which pytest shows with -s and on failure.
    result = subprocess.run(["bash", str(BUILD_SCRIPT), what], check=False)
    if result.returncode != 0:
        raise BinariesMissing(
            f"building {what} failed (exit {result.returncode}); see the messages above, or run "
            f"`bash {BUILD_SCRIPT.relative_to(REPO_ROOT)} {what}` / `make binaries`"
        )


def control_plane_binaries(*, build: bool = True) -> ControlPlaneBinaries:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        found = ControlPlaneBinaries(Path(assets, "kube-apiserver"), Path(assets, "etcd"))
        if _executable(found.kube_apiserver) and _executable(found.etcd):
            return found
    cached = ControlPlaneBinaries(
        cache_dir() / f"k8s-{K8S_VERSION}" / "kube-apiserver",
        cache_dir() / f"etcd-{ETCD_VERSION}" / "etcd",
    )
    if not (_executable(cached.kube_apiserver) and _executable(cached.etcd)):
        if not build:
            raise BinariesMissing("kube-apiserver/etcd missing: `make binaries` or set KUBEBUILDER_ASSETS")
        _build("default")
    return cached


def jaeger_binary(*, build: bool = True) -> Path:
    path = cache_dir() / f"jaeger-{JAEGER_VERSION}" / "jaeger"
    if not _executable(path):
        if not build:
            raise BinariesMissing("jaeger not found; run `make binaries`")
        _build("jaeger")
    return path


def oldest_control_plane_binaries(*, build: bool = True) -> ControlPlaneBinaries:
    """kube-apiserver of the oldest supported minor (with the usual etcd), cached like the default one."""
    newest = control_plane_binaries(build=build)
    kube = cache_dir() / f"k8s-{K8S_OLDEST_VERSION}" / "kube-apiserver"
    if not _executable(kube):
        if not build:
            raise BinariesMissing(f"kube-apiserver {K8S_OLDEST_VERSION} missing: run `make binaries`")
        _build("kube-oldest")
    return ControlPlaneBinaries(kube, newest.etcd)


def tool_binary(name: str, *, build: bool = True) -> Path:
    """A pinned Go tool from build-binaries.sh: "helm" or "actionlint"."""
    version = {"helm": HELM_VERSION, "actionlint": ACTIONLINT_VERSION}[name]
    path = cache_dir() / f"{name}-{version}" / name
    if not _executable(path):
        if not build:
            raise BinariesMissing(f"{name} {version} missing: run `make binaries`")
        _build(name)
    return path
