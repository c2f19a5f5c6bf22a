"""The supported Kubernetes range is the newest three minors; CI checks both ends of it on every run: the
CRD (with its CEL validation), every manifest and sample, and the chart's objects go through a real
kube-apiserver of the oldest (v1.35) and of the newest (v1.37) minor. `make version-matrix` also runs the
e2e smoke scenarios on each end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import LocalCluster
from e2e.harness.binaries import K8S_OLDEST_VERSION, K8S_VERSION, oldest_control_plane_binaries
from e2e.harness.manifests import MANIFESTS, apply, install, load_documents
from tests.cluster.test_crd_validation import INVALID, POOLS, VALID
from tests.packaging.chart import CHART, render_chart, render_kustomization

pytestmark = pytest.mark.cluster

SUPPORTED_MINORS = (35, 36, 37)


@pytest.fixture(scope="module")
def oldest_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster.start(name="k8s-oldest", binaries=oldest_control_plane_binaries())
    try:
        install(cluster.api, [o for o in render_kustomization() if o["kind"] != "Deployment"])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["oldest", "newest"])
def supported_cluster(request: pytest.FixtureRequest) -> tuple[LocalCluster, str]:
    if request.param == "oldest":
        return request.getfixturevalue("oldest_cluster"), K8S_OLDEST_VERSION
    return request.getfixturevalue("stablelb_installed"), K8S_VERSION


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


def _minor(version: str) -> int:
    return int(version.lstrip("v").split(".")[1])


def test_matrix_ends_are_the_oldest_and_newest_supported_minor() -> None:
    assert (_minor(K8S_OLDEST_VERSION), _minor(K8S_VERSION)) == (SUPPORTED_MINORS[0], SUPPORTED_MINORS[-1])
    assert f'kubeVersion: ">=1.{SUPPORTED_MINORS[0]}.0-0"' in (CHART / "Chart.yaml").read_text()


def test_api_server_is_the_expected_version(supported_cluster: tuple[LocalCluster, str]) -> None:
    cluster, version = supported_cluster
    assert cluster.api.get("/version")["gitVersion"] == version


def test_manifests_samples_and_chart_pass_a_server_side_dry_run(
    supported_cluster: tuple[LocalCluster, str], helm_home: Path
) -> None:
    cluster, _ = supported_cluster
    groups: dict[str, list[dict[str, Any]]] = {
        "manifests": render_kustomization(),
        "samples": [o for p in sorted((MANIFESTS / "samples").glob("*.yaml")) for o in load_documents(p)],
        "chart": render_chart(helm_home, "--include-crds"),
        "chart class-only": render_chart(helm_home, "--values", str(CHART / "ci" / "class-only-values.yaml")),
    }
    for what, objects in groups.items():
        results = apply(cluster.api, objects, dry_run=True)
        assert [(r["kind"], r["metadata"]["name"]) for r in results] == [
            (o["kind"], o["metadata"]["name"]) for o in objects
        ], what


def test_crd_validation_rules_work_on_each_end(supported_cluster: tuple[LocalCluster, str]) -> None:
    # The CEL IP/CIDR library the CRD relies on must exist on the oldest supported minor too.
    api = supported_cluster[0].api
    for ident, spec, message in INVALID:
        pool = {"apiVersion": "stablelb.io/v1alpha1", "kind": "IPPool", "metadata": {"name": "x"}}
        status, body = api.request("POST", POOLS, {**pool, "spec": spec}, query={"dryRun": "All"})
        assert status == 422 and message in body.get("message", ""), (ident, status, body.get("message"))
    for addresses in VALID:
        pool = {
            "apiVersion": "stablelb.io/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": "x"},
            "spec": {"addresses": addresses},
        }
        status, body = api.request("POST", POOLS, pool, query={"dryRun": "All"})
        assert status == 201, (addresses, body.get("message"))
