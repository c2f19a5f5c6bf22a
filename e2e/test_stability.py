"""The seed problem and its relatives: IPs survive other Services' deletion, restarts and failover."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.controllers import ControllerSet
from e2e.harness.manifests import MANIFESTS, install, load_kustomization
from e2e.support import Scenario, settle

pytestmark = pytest.mark.cluster

T = 60.0


async def assigned(s: Scenario, wait_for: Any, name: str, count: int = 1) -> list[str]:
    result: list[str] = await wait_for(
        lambda: len(s.ips(name)) >= count and s.ips(name), timeout=T, describe=lambda: s.describe(name)
    )
    return result


async def test_deleting_one_service_moves_nobody_and_freed_ip_is_reused_last(
    scenario: Scenario, wait_for: Any
) -> None:
    s = scenario
    s.create_pool("p", ["192.168.10.0/24"])
    s.start(2)
    ips = {}
    for name in ("a", "b", "c"):
        s.create_service(name)
        ips[name] = (await assigned(s, wait_for, name))[0]
    assert len(set(ips.values())) == 3
    await settle(1.5)
    rv_a, rv_c = s.rv("a"), s.rv("c")

    s.delete_service("b")
    s.create_service("d")
    ip_d = (await assigned(s, wait_for, "d"))[0]
    assert ip_d != ips["b"], "a never-used address was free, yet D got B's old one"
    await settle(2.0)
    assert s.ips("a") == [ips["a"]] and s.ips("c") == [ips["c"]]
    assert (s.rv("a"), s.rv("c")) == (rv_a, rv_c), "deleting B caused a write to A or C"
    assert {"IPAllocated"} <= s.event_reasons("d")


async def test_metallb_2723_prefer_dual_stack_on_single_stack_cluster_converges(
    single_stack_cluster: Any, tmp_path: Path, wait_for: Any
) -> None:
    """MetalLB v0.14.9/v0.16.1 flip such a Service between one and two IPs forever."""
    cluster = single_stack_cluster
    install(cluster.api, load_kustomization(MANIFESTS))
    kubeconfig = cluster.service_account_kubeconfig("kube-system", "stablelb-controller")
    ns = "metallb-2723"
    cluster.api.post(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    group = ControllerSet(tmp_path / "controllers", default_kubeconfig=kubeconfig)
    s = Scenario(cluster.api, ns, group)
    try:
        s.create_pool("p", ["192.168.10.0/24", "fd00:10::/120"])
        s.start(2)
        for name in ("a", "b", "c"):
            s.create_service(name, policy="PreferDualStack")
        got = {name: await assigned(s, wait_for, name) for name in ("a", "b", "c")}
        for name, ips in got.items():
            assert s.service(name)["spec"]["ipFamilies"] == ["IPv4"]
            assert len(ips) == 1 and ":" not in ips[0], f"{name} got {ips} on a single-stack cluster"
        s.delete_service("b")
        await settle(1.5)
        before = {name: s.rv(name) for name in ("a", "c")}
        await settle(5.0)
        after = {name: s.rv(name) for name in ("a", "c")}
        assert before == after, "status kept being rewritten after settling (oscillation)"
        assert s.ips("a") == got["a"] and s.ips("c") == got["c"]
    finally:
        group.stop_all()
        s.cleanup()


async def test_restarting_every_controller_changes_nothing(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.11.0/24", "fd00:11::/120"])
    s.start(2)
    names = ["a", "b", "c", "d"]
    s.create_service("a")
    s.create_service("b", families=["IPv6"])
    s.create_service("c", families=["IPv4", "IPv6"], policy="RequireDualStack")
    s.create_service("d", families=["IPv4", "IPv6"], policy="PreferDualStack")
    counts = {"a": 1, "b": 1, "c": 2, "d": 2}
    ips = {n: await assigned(s, wait_for, n, counts[n]) for n in names}
    s.delete_service("a")  # leaves a released address behind, to be remembered only through status
    names.remove("a")
    await settle(1.5)
    rvs = {n: s.rv(n) for n in names}

    s.controllers.stop_all()
    s.start(2)
    s.create_service("e")  # proves the new leader is working before we look for writes
    await assigned(s, wait_for, "e")
    await settle(2.0)
    assert {n: s.ips(n) for n in names} == {n: ips[n] for n in names}
    assert {n: s.rv(n) for n in names} == rvs, "a restart caused status writes"


async def test_killing_the_leader_hands_over_without_changing_ips(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.12.0/24"])
    s.start(2)
    s.create_service("a")
    ip_a = await assigned(s, wait_for, "a")
    leader = await wait_for(
        lambda: s.leader_index() is not None and str(s.leader_index()), timeout=T, describe=s.describe
    )
    rv_a = s.rv("a")
    s.controllers.kill(int(leader), signal.SIGKILL)
    s.create_service("b")
    # Lease duration is 4 s in these tests; the standby must take over and allocate well within the wait.
    await assigned(s, wait_for, "b")
    new_leader = s.leader_index()
    assert new_leader is not None and new_leader != int(leader)
    assert s.ips("a") == ip_a and s.rv("a") == rv_a


async def test_frozen_leader_resumes_without_writing_and_exits(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.13.0/24"])
    s.start(2)
    s.create_service("a")
    await assigned(s, wait_for, "a")
    leader = int(await wait_for(lambda: s.leader_index() is not None and str(s.leader_index()), timeout=T))
    s.controllers.kill(leader, signal.SIGSTOP)
    try:
        await wait_for(lambda: s.leader_index() not in (None, leader), timeout=T, describe=s.describe)
        s.create_service("b")
        await assigned(s, wait_for, "b")
        await settle(1.0)
        before = {n: (s.ips(n), s.rv(n)) for n in ("a", "b")}
        writes_before = s.controllers.logs(leader).count('"status written"')
    finally:
        s.controllers.kill(leader, signal.SIGCONT)
    # It must notice it lost the lease, write nothing, and exit non-zero for a fresh start.
    await wait_for(lambda: not s.controllers.alive(leader), timeout=T, describe=s.describe)
    assert s.controllers.returncode(leader) not in (0, None)
    assert s.controllers.logs(leader).count('"status written"') == writes_before
    await settle(1.0)
    assert {n: (s.ips(n), s.rv(n)) for n in ("a", "b")} == before
