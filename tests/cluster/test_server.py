"""The API server the harness starts is a real one: it allocates clusterIPs, knows its IP families."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

import pytest

from e2e.harness import ApiError, LocalCluster
from e2e.harness.binaries import K8S_VERSION

pytestmark = pytest.mark.cluster


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name}, **spec},
    }


def test_service_gets_a_cluster_ip_from_the_service_cidr(cluster: LocalCluster, namespace: str) -> None:
    created = cluster.api.post(f"/api/v1/namespaces/{namespace}/services", _service("web"))

    ip = ipaddress.ip_address(created["spec"]["clusterIP"])
    assert ip in ipaddress.ip_network("10.96.0.0/16")
    again = cluster.api.get(f"/api/v1/namespaces/{namespace}/services/web")
    assert again["spec"]["clusterIP"] == str(ip)
    assert again["metadata"]["uid"] == created["metadata"]["uid"]


def test_require_dual_stack_service_gets_two_cluster_ips(cluster: LocalCluster, namespace: str) -> None:
    created = cluster.api.post(
        f"/api/v1/namespaces/{namespace}/services",
        _service("dual", type="LoadBalancer", ipFamilyPolicy="RequireDualStack"),
    )

    spec = created["spec"]
    assert spec["ipFamilies"] == ["IPv4", "IPv6"]
    v4, v6 = (ipaddress.ip_address(ip) for ip in spec["clusterIPs"])
    assert v4 in ipaddress.ip_network("10.96.0.0/16")
    assert v6 in ipaddress.ip_network("fd00:10:96::/112")
    assert 30000 <= spec["ports"][0]["nodePort"] <= 32767


def test_single_stack_cluster_has_only_ipv4(single_stack_cluster: LocalCluster) -> None:
    api = single_stack_cluster.api
    suffix = uuid.uuid4().hex[:6]

    with pytest.raises(ApiError) as err:
        api.post(
            "/api/v1/namespaces/default/services",
            _service(f"req-{suffix}", ipFamilyPolicy="RequireDualStack"),
        )
    assert err.value.status == 422
    assert "dual-stack" in err.value.message.lower()

    prefer = api.post(
        "/api/v1/namespaces/default/services", _service(f"pref-{suffix}", ipFamilyPolicy="PreferDualStack")
    )
    assert prefer["spec"]["ipFamilies"] == ["IPv4"]
    assert len(prefer["spec"]["clusterIPs"]) == 1


def test_clusters_run_side_by_side_on_distinct_loopback_ports(
    cluster: LocalCluster, single_stack_cluster: LocalCluster
) -> None:
    assert cluster.server != single_stack_cluster.server
    assert cluster.etcd_url != single_stack_cluster.etcd_url
    for c in (cluster, single_stack_cluster):
        assert c.server.startswith("https://127.0.0.1:")
        assert c.etcd_url.startswith("http://127.0.0.1:")
        assert c.api.get("/version")["gitVersion"] == K8S_VERSION


def test_service_status_can_be_patched_like_a_controller_does(cluster: LocalCluster, namespace: str) -> None:
    cluster.api.post(f"/api/v1/namespaces/{namespace}/services", _service("lb", type="LoadBalancer"))

    patched = cluster.api.call(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/services/lb/status",
        {"status": {"loadBalancer": {"ingress": [{"ip": "192.168.10.1", "ipMode": "VIP"}]}}},
        content_type="application/merge-patch+json",
    )

    assert patched["status"]["loadBalancer"]["ingress"] == [{"ip": "192.168.10.1", "ipMode": "VIP"}]
