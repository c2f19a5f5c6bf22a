"""manifests/: complete kustomization, every object accepted by a real API server, restricted Pod Security."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import LocalCluster
from e2e.harness.manifests import MANIFESTS, apply, kustomization_files, load_documents, load_kustomization

pytestmark = pytest.mark.cluster

SAMPLES = MANIFESTS / "samples"


def _by_kind(kind: str) -> dict[str, Any]:
    [obj] = [o for o in load_kustomization() if o["kind"] == kind]
    return obj


def test_kustomization_lists_every_manifest_and_no_sample() -> None:
    listed = {p.resolve() for p in kustomization_files()}
    on_disk = {p.resolve() for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk
    assert not any(SAMPLES in p.parents for p in listed)
    kinds = sorted(o["kind"] for o in load_kustomization())
    assert kinds == sorted(
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
        ]
    )


def test_every_manifest_passes_a_server_side_dry_run_apply(stablelb_installed: LocalCluster) -> None:
    objects = load_kustomization()
    results = apply(stablelb_installed.api, objects, dry_run=True)

    assert [(r["kind"], r["metadata"]["name"]) for r in results] == [
        (o["kind"], o["metadata"]["name"]) for o in objects
    ]


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_passes_a_server_side_dry_run_apply(
    stablelb_installed: LocalCluster, path: Path
) -> None:
    objects = load_documents(path)
    results = apply(stablelb_installed.api, objects, dry_run=True)

    assert len(results) == len(objects) > 0
    for obj, result in zip(objects, results, strict=True):
        assert result["metadata"]["name"] == obj["metadata"]["name"]
        if obj["kind"] == "IPPool":
            assert result["spec"]["addresses"] == obj["spec"]["addresses"]


def test_controller_pod_is_admitted_under_restricted_pod_security(stablelb_installed: LocalCluster) -> None:
    api = stablelb_installed.api
    ns = f"restricted-{uuid.uuid4().hex[:6]}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    api.post("/api/v1/namespaces", {"metadata": {"name": ns, "labels": labels}})
    template = copy.deepcopy(_by_kind("Deployment")["spec"]["template"])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "controller", **template["metadata"]},
        "spec": template["spec"],
    }

    status, body = api.request("POST", f"/api/v1/namespaces/{ns}/pods", pod, query={"dryRun": "All"})
    assert status == 201, body.get("message")

    # The check is real: the same Pod without its securityContext is refused.
    del pod["spec"]["containers"][0]["securityContext"]
    status, body = api.request("POST", f"/api/v1/namespaces/{ns}/pods", pod, query={"dryRun": "All"})
    assert status == 403
    assert "violates PodSecurity" in body["message"]


def test_deployment_runs_two_leader_elected_replicas_with_probes() -> None:
    deployment = _by_kind("Deployment")
    assert deployment["metadata"]["namespace"] == "kube-system"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "stablelb-controller"
    [container] = pod["containers"]
    assert "--leader-elect=true" in container["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "probes": 8081}
    assert {"--metrics-bind-address=:8080", "--health-probe-bind-address=:8081"} <= set(container["args"])
    probes = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in probes.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "probes"}
        assert container[probe]["timeoutSeconds"] >= 1
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = _by_kind("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_deployment_is_scheduled_like_a_cluster_add_on() -> None:
    deployment = _by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == selector
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    pdb = _by_kind("PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert pdb["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_crd_serves_status_subresource_printer_columns_and_big_counts(
    stablelb_installed: LocalCluster,
) -> None:
    api = stablelb_installed.api
    name = f"status-{uuid.uuid4().hex[:6]}"
    pool = {
        "apiVersion": "stablelb.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"addresses": ["2001:db8::/64"]},
    }
    created = api.post("/apis/stablelb.io/v1alpha1/ippools", pool)
    try:
        two_to_64 = str(2**64)
        status = {
            "observedGeneration": created["metadata"]["generation"],
            "assigned": "1",
            "available": str(2**64 - 2),
            "ipv6": {"total": str(2**64 - 1), "assigned": "1", "available": str(2**64 - 2)},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Valid",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        }
        patched = api.call(
            "PATCH",
            f"/apis/stablelb.io/v1alpha1/ippools/{name}/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        assert patched["status"]["ipv6"]["total"] == str(2**64 - 1)
        assert patched["metadata"]["generation"] == created["metadata"]["generation"]

        # The main resource ignores status; the status subresource ignores spec.
        spec_write = api.call(
            "PATCH",
            f"/apis/stablelb.io/v1alpha1/ippools/{name}",
            {"status": {"assigned": two_to_64}},
            content_type="application/merge-patch+json",
        )
        assert spec_write["status"]["assigned"] == "1"

        table = api.call("GET", f"/apis/stablelb.io/v1alpha1/ippools/{name}")  # sanity: readable by name
        assert table["metadata"]["name"] == name
    finally:
        api.delete(f"/apis/stablelb.io/v1alpha1/ippools/{name}")

    crd = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/ippools.stablelb.io")
    [version] = crd["spec"]["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Addresses",
        "Assigned",
        "Available",
        "Ready",
        "Age",
    ]
    assert crd["spec"]["scope"] == "Cluster"
