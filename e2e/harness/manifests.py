"""Load the kustomize manifests and server-side apply them through the REST API (no kubectl needed)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.binaries import REPO_ROOT
from e2e.harness.rest import Api

MANIFESTS = REPO_ROOT / "manifests"
FIELD_MANAGER = "stablelb-e2e"


def load_documents(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def kustomization_files(directory: Path = MANIFESTS) -> list[Path]:
    """The files a kustomization lists under `resources` (the only kustomize feature the manifests use)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        files.extend(kustomization_files(target) if target.is_dir() else [target])
    return files


def load_kustomization(directory: Path = MANIFESTS) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    namespace = kustomization.get("namespace")
    docs = [doc for path in kustomization_files(directory) for doc in load_documents(path)]
    if namespace:
        raise NotImplementedError("the kustomization must not set a namespace; each object names its own")
    return docs


@dataclass(frozen=True)
class ResourceInfo:
    plural: str
    namespaced: bool


class Discovery:
    """Maps apiVersion/kind to a REST resource by asking the API server (so CRDs work too)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._groups: dict[str, dict[str, ResourceInfo]] = {}

    def resource(self, api_version: str, kind: str) -> ResourceInfo:
        if api_version not in self._groups:
            base = "/api/" if "/" not in api_version else "/apis/"
            listing = self.api.get(base + api_version)
            self._groups[api_version] = {
                r["kind"]: ResourceInfo(r["name"], r["namespaced"])
                for r in listing["resources"]
                if "/" not in r["name"]
            }
        try:
            return self._groups[api_version][kind]
        except KeyError:
            raise LookupError(f"the server does not serve {kind} in {api_version}") from None

    def forget(self, api_version: str) -> None:
        self._groups.pop(api_version, None)

    def object_path(self, obj: dict[str, Any]) -> str:
        api_version, kind = obj["apiVersion"], obj["kind"]
        info = self.resource(api_version, kind)
        base = ("/api/" if "/" not in api_version else "/apis/") + api_version
        meta = obj["metadata"]
        if info.namespaced:
            base += f"/namespaces/{meta.get('namespace', 'default')}"
        return f"{base}/{info.plural}/{meta['name']}"


def apply(
    api: Api,
    objects: Iterable[dict[str, Any]],
    *,
    dry_run: bool = False,
    discovery: Discovery | None = None,
) -> list[dict[str, Any]]:
    """Server-side apply, forcing conflicts (as `kubectl apply --server-side --force-conflicts`)."""
    discovery = discovery or Discovery(api)
    query = {"fieldManager": FIELD_MANAGER, "force": "true"}
    if dry_run:
        query["dryRun"] = "All"
    results = []
    for obj in objects:
        results.append(
            api.call(
                "PATCH",
                discovery.object_path(obj),
                json.dumps(obj),
                query=query,
                content_type="application/apply-patch+yaml",
            )
        )
    return results


def wait_crd_established(api: Api, name: str, *, timeout: float = 30.0) -> None:
    """Until the CRD is Established and each served version answers a LIST with 200.

    Established alone is not enough: for a moment after it the collection still answers 429 while its
    storage initializes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
        if conditions.get("Established") == "True":
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
            paths = [f"/apis/{group}/{version}/{plural}" for version in served]
            if all(api.request("GET", path, query={"limit": "1"})[0] == 200 for path in paths):
                return
        time.sleep(0.1)
    raise AssertionError(f"CRD {name} not Established and served after {timeout}s")


def install(api: Api, objects: list[dict[str, Any]]) -> None:
    """Apply CRDs first and wait until they are served, then everything else."""
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    apply(api, crds)
    for crd in crds:
        wait_crd_established(api, crd["metadata"]["name"])
    apply(api, [o for o in objects if o["kind"] != "CustomResourceDefinition"])
