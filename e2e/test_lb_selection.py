"""The controller caches only LoadBalancer Services (field selector spec.type=LoadBalancer): a Service that
leaves that selection leaves the cache exactly as a deleted one would, yet it still exists and may carry what
we wrote. These run the real controller against the real API server."""

from __future__ import annotations

from typing import Any

from e2e.support import Scenario, settle

T = 60.0
FOREIGN = {"type": "example.com/Probed", "status": "True", "reason": "Probed", "message": "someone else's",
           "lastTransitionTime": "2026-01-01T00:00:00Z"}


def to_cluster_ip() -> dict[str, Any]:
    return {"spec": {"type": "ClusterIP", "loadBalancerClass": None, "allocateLoadBalancerNodePorts": None,
                     "externalTrafficPolicy": None}}


async def test_type_changed_away_and_back(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.46.1-192.168.46.1"])
    s.start(1)
    s.create_service("web")
    (ip,) = await wait_for(lambda: s.ips("web"), timeout=T, describe=s.describe)
    conditions = [c for c in s.service("web")["status"].get("conditions", [])]
    s.patch_status("web", {"conditions": [*conditions, FOREIGN]})

    s.patch_service("web", to_cluster_ip())
    # Released (the pool's only address serves the next Service), our condition gone, theirs kept.
    s.create_service("next")
    await wait_for(lambda: s.ips("next") == [ip], timeout=T, describe=s.describe)
    await wait_for(lambda: s.condition("web") is None, timeout=T, describe=s.describe)
    web = s.service("web")
    assert web["spec"]["type"] == "ClusterIP"
    assert s.ips("web") == []
    assert [c["type"] for c in web["status"].get("conditions", [])] == [FOREIGN["type"]]
    await wait_for(lambda: "IPReleased" in s.event_reasons("web"), timeout=T, describe=s.describe)

    # Back to LoadBalancer: ours again, and the pool is full now, so it waits (and says so).
    s.patch_service("web", {"spec": {"type": "LoadBalancer", "loadBalancerClass": s.lb_class,
                                     "allocateLoadBalancerNodePorts": False}})
    await wait_for(lambda: s.reason("web") is not None, timeout=T, describe=s.describe)
    assert s.ips("web") == []
    s.delete_service("next")
    await wait_for(lambda: s.ips("web") == [ip], timeout=T, describe=s.describe)
    await settle(1.0)
    assert s.ips("web") == [ip]
