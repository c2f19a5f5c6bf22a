"""The Helm chart: `helm lint`, `helm template` for each values file, and install / upgrade / uninstall
against the local API server, checking the objects that exist afterwards."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

import controller
from e2e.harness import LocalCluster
from e2e.harness.rest import ApiError
from tests.packaging.chart import CHART, CI_VALUES, helm, render_chart


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


def _kinds(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = _kinds(objects)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_chart_lints_strictly(helm_home: Path, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    assert "0 chart(s) failed" in helm(*args, home=helm_home)


def test_default_values_render_the_production_deployment(helm_home: Path) -> None:
    objects = render_chart(helm_home, release="edge", namespace="lb-system")
    kinds = _kinds(objects)
    assert sorted(kinds) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment",
         "PodDisruptionBudget", "Service"]
    )  # fmt: skip
    assert {o["metadata"]["name"] for o in objects} == {
        "edge-stablelb-controller",
        "edge-stablelb-controller-leader-election",
        "edge-stablelb-controller-metrics",
    }
    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objects)
    assert container["image"] == f"ghcr.io/stablelb/stablelb-controller:{controller.__version__}"
    assert "--lease-name=edge-stablelb-controller" in container["args"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert kinds["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "edge-stablelb-controller", "namespace": "lb-system"}
    ]
    # The CRD comes from crds/ (installed by helm before the templates, never deleted by it).
    with_crds = render_chart(helm_home, "--include-crds")
    assert "CustomResourceDefinition" in _kinds(with_crds)


def test_monitoring_values_add_service_monitor_rules_and_dashboard(helm_home: Path) -> None:
    objects = render_chart(helm_home, "--values", str(CHART / "ci" / "monitoring-values.yaml"))
    kinds = _kinds(objects)
    monitor = kinds["ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == kinds["Service"]["spec"]["ports"][0]["name"]
    assert monitor["spec"]["selector"]["matchLabels"] == kinds["Service"]["spec"]["selector"]
    rules_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert kinds["PrometheusRule"]["spec"]["groups"] == rules_file["groups"]
    assert kinds["PrometheusRule"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = kinds["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["stablelb.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )
    env = {e["name"]: e.get("value") for e in _container(objects)["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"


def test_class_only_values_render_a_single_replica_with_their_settings(helm_home: Path) -> None:
    objects = render_chart(helm_home, "--values", str(CHART / "ci" / "class-only-values.yaml"))
    kinds = _kinds(objects)
    assert "PodDisruptionBudget" not in kinds
    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objects)
    assert deployment["spec"]["replicas"] == 1
    assert container["image"] == (
        "registry.example.com/platform/stablelb-controller@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    args = container["args"]
    for arg in ("--leader-elect=false", "--handle-unclassed=false", "--lb-class=example.com/stablelb",
                "--orphaned-ips=reassign", "--reclaim-window=30m"):  # fmt: skip
        assert arg in args
    assert args[-1] == "--workers=8"  # extraArgs come last, so they win
    assert "priorityClassName" not in pod and "topologySpreadConstraints" not in pod
    assert pod["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["resources"]["limits"] == {"memory": "512Mi"}
    assert {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"} in container["env"]
    assert kinds["ServiceAccount"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["orphanedIPs=sometimes"], "orphanedIPs"),
        (["replicaCount=2", "leaderElection.enabled=false"], "two leaders would hand out the same addresses"),
        (["reclaimWindow=soon"], "reclaimWindow"),
        (["unknownKey=1"], "unknownKey"),
    ],
)
def test_wrong_values_are_refused_with_a_reason(helm_home: Path, sets: list[str], message: str) -> None:
    args = ["template", "x", str(CHART)] + [a for s in sets for a in ("--set", s)]
    out = helm(*args, home=helm_home, check=False)
    assert "Error" in out and message in out, out


def _get(api: Any, path: str) -> dict[str, Any] | None:
    try:
        return api.get(path)  # type: ignore[no-any-return]
    except ApiError as e:
        if e.status == 404:
            return None
        raise


@pytest.mark.cluster
def test_install_upgrade_uninstall_on_the_api_server(
    cluster: LocalCluster, namespace: str, helm_home: Path
) -> None:
    api = cluster.api
    release = f"rel-{uuid.uuid4().hex[:6]}"
    name = f"{release}-stablelb-controller"
    ns_path = f"/apis/apps/v1/namespaces/{namespace}"
    common = ["--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)]

    helm("install", release, str(CHART), *common, home=helm_home)
    deployment = api.get(f"{ns_path}/deployments/{name}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert "--lb-class=stablelb.io/lb" in container["args"]
    pdb_path = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"
    assert api.get(pdb_path)["spec"]["minAvailable"] == 1
    assert api.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
    role = api.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
    assert {"services/status"} in [set(r["resources"]) for r in role["rules"]]
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    binding = api.get(f"{rbac}/namespaces/{namespace}/rolebindings/{name}-leader-election")
    assert binding["subjects"][0]["namespace"] == namespace
    assert api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ippools.stablelb.io")
    service = api.get(f"/api/v1/namespaces/{namespace}/services/{name}-metrics")
    assert service["spec"]["ports"][0]["port"] == 8080

    helm(
        "upgrade", release, str(CHART), *common,
        "--set", "replicaCount=3",
        "--set", "lbClass=upgraded.example.com/lb",
        "--set", "podDisruptionBudget.enabled=false",
        "--set", "resources.limits.memory=512Mi",
        home=helm_home,
    )  # fmt: skip
    deployment = api.get(f"{ns_path}/deployments/{name}")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert "--lb-class=upgraded.example.com/lb" in container["args"]
    assert "--lb-class=stablelb.io/lb" not in container["args"]
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert _get(api, pdb_path) is None
    history = json.loads(helm("history", release, *common, "--output", "json", home=helm_home))
    assert [h["revision"] for h in history] == [1, 2]
    assert history[-1]["status"] == "deployed"

    helm("uninstall", release, *common, home=helm_home)
    for path in (
        f"{ns_path}/deployments/{name}",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
        f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
        f"/api/v1/namespaces/{namespace}/services/{name}-metrics",
    ):
        assert _get(api, path) is None, f"{path} survived helm uninstall"
    # Helm never deletes CRDs from crds/ (that would delete every IPPool): see docs/upgrading.md.
    assert api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ippools.stablelb.io")
