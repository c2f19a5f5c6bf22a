"""Pool edits: growth serves the pending, shrink and delete keep (or, when asked, move) orphans, overlap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from e2e.support import Scenario, settle

pytestmark = pytest.mark.cluster

T = 60.0


async def test_grow_shrink_delete(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    pool = s.create_pool("p", ["192.168.20.1-192.168.20.2"])
    s.start(2)
    s.create_service("a")
    await wait_for(lambda: s.ips("a"), timeout=T, describe=s.describe)
    s.create_service("b")
    await wait_for(lambda: s.ips("b"), timeout=T, describe=s.describe)
    s.create_service("c")
    await wait_for(lambda: s.reason("c") == "PoolExhausted", timeout=T, describe=s.describe)
    assert s.condition("c")["status"] == "False"  # type: ignore[index]
    assert "AllocationFailed" in s.event_reasons("c")
    await settle(1.0)
    held = {n: s.ips(n) for n in ("a", "b")}
    rvs = {n: s.rv(n) for n in ("a", "b")}

    # Grow: only the pending Service is touched.
    s.patch_pool(pool, {"addresses": ["192.168.20.1-192.168.20.3"]})
    await wait_for(lambda: s.ips("c") == ["192.168.20.3"], timeout=T, describe=s.describe)
    await settle(1.5)
    assert {n: s.ips(n) for n in ("a", "b")} == held
    assert {n: s.rv(n) for n in ("a", "b")} == rvs, "growing the pool wrote to Services that had IPs"
    await wait_for(
        lambda: (s.pool(pool).get("status") or {}).get("ipv4", {}).get("assigned") == "3",
        timeout=T,
        describe=s.describe,
    )

    # Shrink below c's address (retain is the default): c keeps it, flagged.
    s.patch_pool(pool, {"addresses": ["192.168.20.1-192.168.20.2", "192.168.20.4/32"]})
    await wait_for(lambda: s.reason("c") == "IPOutsidePool", timeout=T, describe=s.describe)
    assert s.ips("c") == ["192.168.20.3"]
    await wait_for(lambda: "IPOutsidePool" in s.event_reasons("c"), timeout=T, describe=s.describe)
    assert {n: s.ips(n) for n in ("a", "b")} == held

    # The Service opts in to moving: it gets the address the pool still has.
    s.patch_service("c", {"metadata": {"annotations": {"stablelb.io/orphan-policy": "reassign"}}})
    await wait_for(lambda: s.ips("c") == ["192.168.20.4"], timeout=T, describe=s.describe)
    assert s.reason("c") == "Allocated"

    # Delete the pool: everybody keeps their address, flagged.
    rvs_before_delete = {n: s.ips(n) for n in ("a", "b")}
    s.delete_pool(pool)
    for n in ("a", "b"):
        await wait_for(lambda n=n: s.reason(n) == "IPOutsidePool", timeout=T, describe=s.describe)
    assert {n: s.ips(n) for n in ("a", "b")} == rvs_before_delete


async def test_orphaned_ips_reassign_flag_moves_orphans(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    pool = s.create_pool("p", ["192.168.21.1-192.168.21.2"])
    s.start(1, "--orphaned-ips=reassign")
    s.create_service("a")
    await wait_for(lambda: s.ips("a") == ["192.168.21.1"], timeout=T, describe=s.describe)
    s.patch_pool(pool, {"addresses": ["192.168.21.2/32"]})
    await wait_for(lambda: s.ips("a") == ["192.168.21.2"], timeout=T, describe=s.describe)


async def test_overlapping_pool_is_in_conflict_until_fixed(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    older = s.create_pool("old", ["192.168.30.0/24"])
    s.start(1)
    await wait_for(
        lambda: (s.pool_condition(older, "Ready") or {}).get("status") == "True",
        timeout=T,
        describe=s.describe,
    )
    await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution; ties go by name
    newer = s.create_pool("new", ["192.168.30.128/25"])
    await wait_for(
        lambda: (s.pool_condition(newer, "Conflict") or {}).get("status") == "True",
        timeout=T,
        describe=s.describe,
    )
    assert older in s.pool_condition(newer, "Conflict")["message"]  # type: ignore[index]
    assert (s.pool_condition(older, "Ready") or {}).get("status") == "True"
    s.patch_pool(newer, {"addresses": ["192.168.31.0/24"]})
    await wait_for(
        lambda: (s.pool_condition(newer, "Conflict") or {}).get("status") == "False",
        timeout=T,
        describe=s.describe,
    )
    assert (s.pool_condition(newer, "Ready") or {}).get("status") == "True"


async def test_namespace_label_change_serves_the_pending_services_there(
    scenario: Scenario, wait_for: Any
) -> None:
    s = scenario
    s.create_pool(
        "prod",
        ["192.168.32.0/24"],
        serviceAllocation={"namespaceSelectors": [{"matchLabels": {"tier": s.ns[-6:]}}]},
    )
    s.start(1)
    s.create_service("a")
    await wait_for(lambda: s.reason("a") == "NoPool", timeout=T, describe=s.describe)
    s.api.call(
        "PATCH",
        f"/api/v1/namespaces/{s.ns}",
        {"metadata": {"labels": {"tier": s.ns[-6:]}}},
        content_type="application/merge-patch+json",
    )
    await wait_for(lambda: s.ips("a"), timeout=T, describe=s.describe)
    assert s.reason("a") == "Allocated"
