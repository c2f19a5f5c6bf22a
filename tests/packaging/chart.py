"""Rendering the Helm chart and the kustomization (the two install paths) for the packaging tests."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.binaries import REPO_ROOT, tool_binary
from e2e.harness.manifests import MANIFESTS, load_kustomization

CHART = REPO_ROOT / "charts" / "stablelb"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


def helm(*args: str, home: Path, kubeconfig: Path | None = None, check: bool = True) -> str:
    """Run the pinned helm with its state under `home` (never the user's ~/.config/helm)."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [str(tool_binary("helm")), *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout if check else result.stdout + result.stderr


def render_chart(
    home: Path, *args: str, release: str = "stablelb", namespace: str = "kube-system"
) -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--namespace", namespace, *args, home=home)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_kustomization(directory: Path = MANIFESTS) -> list[dict[str, Any]]:
    """`kubectl kustomize` for what manifests/ uses: `resources`, and `images` (name -> newName:newTag)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "images"}
    assert not unsupported, f"render_kustomization does not implement {sorted(unsupported)}"
    objects = copy.deepcopy(load_kustomization(directory))
    images = {i["name"]: i for i in kustomization.get("images", [])}
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name in images:
                rule = images[name]
                container["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag or 'latest')}"
    return objects


def by_identity(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
