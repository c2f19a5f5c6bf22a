"""What a Service asks for: requested IPs, sharing, families, class and type, and input that is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.support import Scenario, settle

pytestmark = pytest.mark.cluster

T = 60.0


async def test_requested_ip_held_by_another_waits_for_it(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.40.0/24"])
    s.start(2)
    s.create_service("holder")
    (ip,) = await wait_for(lambda: s.ips("holder"), timeout=T, describe=s.describe)
    s.create_service("wants", annotations={"stablelb.io/ips": ip})
    await wait_for(lambda: s.reason("wants") == "RequestedIPInUse", timeout=T, describe=s.describe)
    cond = s.condition("wants")
    assert cond is not None and cond["status"] == "False" and "holder" in cond["message"]
    await wait_for(
        lambda: "RequestedIPUnavailable" in s.event_reasons("wants"), timeout=T, describe=s.describe
    )
    s.delete_service("holder")
    await wait_for(lambda: s.ips("wants") == [ip], timeout=T, describe=s.describe)
    assert s.reason("wants") == "Allocated"


async def test_sharing_key_shares_when_ports_are_disjoint(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.41.0/24"])
    s.start(2)
    key = {"stablelb.io/sharing-key": "shared"}
    s.create_service("http", ports=[80], annotations=key)
    s.create_service("https", ports=[443], annotations=key)
    (ip1,) = await wait_for(lambda: s.ips("http"), timeout=T, describe=s.describe)
    (ip2,) = await wait_for(lambda: s.ips("https"), timeout=T, describe=s.describe)
    assert ip1 == ip2
    s.create_service("clash", ports=[80], annotations=key)
    (ip3,) = await wait_for(lambda: s.ips("clash"), timeout=T, describe=s.describe)
    assert ip3 != ip1
    s.create_service("udp", ports=[("UDP", 80)], annotations={"metallb.io/allow-shared-ip": "shared"})
    (ip4,) = await wait_for(lambda: s.ips("udp"), timeout=T, describe=s.describe)
    assert ip4 in (ip1, ip3)


async def test_families(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    pool = s.create_pool("p", ["192.168.42.0/24"])
    s.start(2)
    s.create_service("prefer", families=["IPv4", "IPv6"], policy="PreferDualStack")
    s.create_service("require", families=["IPv4", "IPv6"], policy="RequireDualStack")
    s.create_service("v6", families=["IPv6"])
    (v4,) = await wait_for(lambda: s.ips("prefer"), timeout=T, describe=s.describe)
    assert ":" not in v4
    await wait_for(lambda: s.reason("require") == "FamilyUnavailable", timeout=T, describe=s.describe)
    assert s.ips("require") == []
    await wait_for(lambda: s.condition("v6") is not None, timeout=T, describe=s.describe)
    assert s.ips("v6") == []

    s.patch_pool(pool, {"addresses": ["192.168.42.0/24", "fd00:42::/120"]})
    await wait_for(lambda: len(s.ips("prefer")) == 2, timeout=T, describe=s.describe)
    assert s.ips("prefer")[0] == v4, "adding the second family moved the first"
    both = await wait_for(
        lambda: len(s.ips("require")) == 2 and s.ips("require"), timeout=T, describe=s.describe
    )
    assert sum(":" in ip for ip in both) == 1
    (v6,) = await wait_for(lambda: s.ips("v6"), timeout=T, describe=s.describe)
    assert ":" in v6


async def test_class_and_type(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.43.1-192.168.43.1"])
    s.start(1)
    s.create_service("foreign", lb_class="example.com/other")
    s.create_service("mine")
    (ip,) = await wait_for(lambda: s.ips("mine"), timeout=T, describe=s.describe)
    await settle(1.0)
    assert s.ips("foreign") == [] and s.condition("foreign") is None

    s.patch_service(
        "mine",
        {
            "spec": {
                "type": "ClusterIP",
                "loadBalancerClass": None,
                "allocateLoadBalancerNodePorts": None,
                "externalTrafficPolicy": None,
            }
        },
    )
    s.create_service("next")  # the pool has one address: it must have been released
    await wait_for(lambda: s.ips("next") == [ip], timeout=T, describe=s.describe)
    assert s.condition("mine") is None and s.ips("mine") == []


async def test_bad_input_is_reported_and_changes_nothing_else(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.44.0/24"])
    s.start(1)
    s.create_service("good")
    (ip,) = await wait_for(lambda: s.ips("good"), timeout=T, describe=s.describe)
    rv = s.rv("good")
    s.create_service("garbage", annotations={"stablelb.io/ips": "not-an-ip"})
    s.create_service(
        "conflict", annotations={"stablelb.io/ips": "192.168.44.10"}, spec={"loadBalancerIP": "192.168.44.11"}
    )
    s.create_service("nopool", annotations={"stablelb.io/pool": "does-not-exist"})
    await wait_for(lambda: s.reason("garbage") == "InvalidRequest", timeout=T, describe=s.describe)
    await wait_for(lambda: s.reason("conflict") == "ConflictingRequests", timeout=T, describe=s.describe)
    await wait_for(lambda: s.reason("nopool") == "NoPool", timeout=T, describe=s.describe)
    await wait_for(lambda: "AllocationFailed" in s.event_reasons("garbage"), timeout=T, describe=s.describe)
    await wait_for(lambda: "DeprecatedField" in s.event_reasons("conflict"), timeout=T, describe=s.describe)
    for name in ("garbage", "conflict", "nopool"):
        assert s.ips(name) == []
    await settle(1.0)
    assert s.ips("good") == [ip] and s.rv("good") == rv
    assert s.http_get(0, "/healthz")[0] == 200
    assert s.controllers.alive(0)

    # Fixing the input is enough: the conflicting Service gets what it asked for.
    s.patch_service("conflict", {"metadata": {"annotations": {"stablelb.io/ips": "192.168.44.11"}}})
    await wait_for(lambda: s.ips("conflict") == ["192.168.44.11"], timeout=T, describe=s.describe)
