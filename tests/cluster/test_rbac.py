"""The controller's ServiceAccount may do exactly what it needs, checked cell by cell on the real RBAC."""

from __future__ import annotations

import itertools

import pytest

from e2e.harness import LocalCluster
from e2e.harness.rest import Api

pytestmark = pytest.mark.cluster

SA_USER = "system:serviceaccount:kube-system:stablelb-controller"
SA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]

VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
NAMESPACES = ["kube-system", "default", "team-a"]

# (group, resource, subresource) -> verbs allowed in every namespace; leases only in kube-system.
GRANTED: dict[tuple[str, str, str], set[str]] = {
    ("", "services", ""): {"get", "list", "watch"},
    ("", "services", "status"): {"patch"},
    ("", "namespaces", ""): {"get", "list", "watch"},
    ("", "events", ""): {"create", "patch"},
    ("stablelb.io", "ippools", ""): {"get", "list", "watch"},
    ("stablelb.io", "ippools", "status"): {"patch", "update"},
    ("stablelb.io", "ipreservations", ""): {"get", "list", "watch"},
    ("stablelb.io", "ipreservations", "status"): {"patch", "update"},
}
LEASES = ("coordination.k8s.io", "leases", "")
LEASE_VERBS = {"get", "create", "update"}

CHECKED = [
    *GRANTED,
    LEASES,
    ("", "secrets", ""),
    ("", "configmaps", ""),
    ("", "pods", ""),
    ("", "endpoints", ""),
    ("", "serviceaccounts", "token"),
    ("", "nodes", ""),
    ("events.k8s.io", "events", ""),
    ("discovery.k8s.io", "endpointslices", ""),
    ("apps", "deployments", ""),
    ("rbac.authorization.k8s.io", "roles", ""),
    ("apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("stablelb.io", "ippools", "finalizers"),
]


def _expected(cell: tuple[str, str, str], verb: str, namespace: str) -> bool:
    if cell == LEASES:
        return namespace == "kube-system" and verb in LEASE_VERBS
    return verb in GRANTED.get(cell, set())


def _allowed(api: Api, cell: tuple[str, str, str], verb: str, namespace: str) -> bool:
    group, resource, subresource = cell
    attrs = {"group": group, "resource": resource, "subresource": subresource, "verb": verb}
    if resource not in ("namespaces", "nodes", "ippools", "ipreservations", "customresourcedefinitions"):
        attrs["namespace"] = namespace
    review = api.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": SA_USER, "groups": SA_GROUPS, "resourceAttributes": attrs},
        },
    )
    return bool(review["status"].get("allowed"))


def test_access_matrix_is_exactly_the_granted_set(stablelb_installed: LocalCluster) -> None:
    wrong = []
    for cell, verb, ns in itertools.product(CHECKED, VERBS, NAMESPACES):
        expected = _expected(cell, verb, ns)
        if _allowed(stablelb_installed.api, cell, verb, ns) != expected:
            wrong.append(f"{verb} {'/'.join(filter(None, cell))} in {ns}: expected allowed={expected}")
    assert wrong == []
    assert len(CHECKED) * len(VERBS) * len(NAMESPACES) >= 400


def test_real_requests_with_the_service_account_token(
    stablelb_installed: LocalCluster, controller_kubeconfig: object, namespace: str
) -> None:
    cluster = stablelb_installed
    api = Api.from_kubeconfig(controller_kubeconfig)  # type: ignore[arg-type]
    cluster.api.post(
        f"/api/v1/namespaces/{namespace}/services",
        {"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}},
    )
    svc_path = f"/api/v1/namespaces/{namespace}/services/web"
    merge = "application/merge-patch+json"

    listed = api.request("GET", "/api/v1/services")
    assert listed[0] == 200, listed
    assert api.request("GET", "/apis/stablelb.io/v1alpha1/ippools")[0] == 200
    status_patch = {"status": {"loadBalancer": {"ingress": [{"ip": "192.168.10.1"}]}}}
    assert api.request("PATCH", svc_path + "/status", status_patch, content_type=merge)[0] == 200
    # The spec is not ours to change, Secrets are not ours to read.
    assert (
        api.request("PATCH", svc_path, {"spec": {"externalTrafficPolicy": "Local"}}, content_type=merge)[0]
        == 403
    )
    assert api.request("GET", "/api/v1/namespaces/kube-system/secrets")[0] == 403

    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"probe-{namespace}"},
        "spec": {"holderIdentity": "probe"},
    }
    assert api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", lease)[0] == 201
    assert api.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", lease)[0] == 403
    event = {
        "metadata": {"generateName": "probe-"},
        "involvedObject": {"kind": "Service", "name": "web", "namespace": namespace},
        "reason": "Probe",
        "message": "rbac test",
        "type": "Normal",
    }
    assert api.request("POST", f"/api/v1/namespaces/{namespace}/events", event)[0] == 201
