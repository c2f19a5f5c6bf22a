"""Takeover under faults: two replicas, one behind a fault proxy, on a real API server.

Each scenario asserts on what the API server held, recorded by watching it from the test (see
e2e/takeover_support.py), never on log lines:
- no Service's IP ever changed and no IP was ever held by two Services, replaying the whole history;
- every Service converged (an IP from the right pool, condition True);
- for the delayed old leader: none of its writes landed after the new leader's first write (nor after
  the new leader took the Lease), ordering by the revisions at which the writes landed.

Timing is random from a seed: STABLELB_TAKEOVER_SEED (fixed by default, `random` for a fresh one, printed in
every failure) and STABLELB_TAKEOVER_RUNS runs of each scenario (1 by default); `make chaos-takeover`
runs fresh seeds. The scenarios get their own control plane (no watch cache for Services, so the recorded
history survives an API server restart without a gap), restarted by one of them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import LocalCluster
from e2e.harness.controllers import ControllerSet
from e2e.harness.faultproxy import FaultProxy, Request, watches, writes
from e2e.harness.manifests import MANIFESTS, install, load_kustomization
from e2e.harness.rest import ApiError
from e2e.support import Scenario
from e2e.takeover_support import (
    Change,
    History,
    converged,
    describe_history,
    duplicates,
    ip_moves,
    late_writes,
    outside,
    proxied_kubeconfig,
    seed_and_runs,
    status_writes,
)

pytestmark = pytest.mark.cluster

T = 90.0  # generous: 2 shared cores; every wait is for a condition, never a timing assertion
LEASE = 4.0  # Scenario.start: lease 4 s, renew deadline 3 s, retry 0.5 s
SEED, RUNS = seed_and_runs()
INFORMERS = ("services", "ippools", "namespaces")
CONTROLLER_COMPONENT = "stablelb-controller"  # reportingComponent of the controller's Events


@pytest.fixture(scope="module")
def takeover_cluster() -> Iterator[LocalCluster]:
    if os.environ.get("STABLELB_E2E_EXTERNAL") == "1":
        pytest.skip("these scenarios restart the API server: local control plane only")
    local = LocalCluster.start(dual_stack=False, watch_cache=False, name="takeover")
    try:
        install(local.api, [o for o in load_kustomization(MANIFESTS) if o["kind"] != "Deployment"])
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def sa_kubeconfig(takeover_cluster: LocalCluster) -> Path:
    return takeover_cluster.service_account_kubeconfig("kube-system", "stablelb-controller")


@dataclass
class Rig:
    cluster: LocalCluster
    s: Scenario
    proxy: FaultProxy
    proxied: Path
    history: History
    rng: random.Random
    seed: str
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def tell(self) -> str:
        """Everything a failure message needs to replay and understand the run."""
        return (
            f"seed={self.seed} (replay: STABLELB_TAKEOVER_SEED={self.seed.split('/')[0]})\n"
            f"steps: {'; '.join(self.notes)}\n"
            f"proxied replica's exchanges (faulted or writes):\n"
            + "\n".join(
                f"  #{e.id} {e.request} -> {e.status} rv={e.resource_version} {e.outcome} {e.faults}"
                for e in self.proxy.exchanges()
                if e.faults or e.request.write
            )
        )


@pytest.fixture
def controllers(tmp_path: Path, sa_kubeconfig: Path) -> Iterator[ControllerSet]:
    group = ControllerSet(tmp_path / "controllers", default_kubeconfig=sa_kubeconfig)
    yield group
    group.stop_all()


@pytest.fixture
def rig(
    takeover_cluster: LocalCluster,
    sa_kubeconfig: Path,
    controllers: ControllerSet,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Rig]:
    run = request.node.callspec.params["run"]
    seed = f"{SEED}/{request.node.originalname}/{run}"
    api = takeover_cluster.api
    namespace = f"takeover-{random.SystemRandom().randrange(16**6):06x}"
    api.post("/api/v1/namespaces", {"metadata": {"name": namespace}})
    s = Scenario(api, namespace, controllers)
    proxy = FaultProxy.start(takeover_cluster.server)
    proxied = proxied_kubeconfig(sa_kubeconfig, proxy.url, tmp_path / "kubeconfig-proxied")
    history = History(api, "kube-system", controllers.lease_name).start()
    try:
        yield Rig(takeover_cluster, s, proxy, proxied, history, random.Random(seed), seed)
    finally:
        controllers.stop_all()
        history.stop()
        proxy.stop()
        s.cleanup()


RUN = pytest.mark.parametrize("run", range(RUNS))


# -- steps shared by the scenarios ------------------------------------------------------------------


def holder(s: Scenario) -> str | None:
    try:
        return s.leader()
    except ApiError as err:
        if err.status == 404:  # no replica has created the Lease yet
            return None
        raise


async def leading(r: Rig, i: int, wait_for: Any) -> None:
    s = r.s
    await wait_for(lambda: holder(s) == s.controllers.identity(i), timeout=T, describe=s.describe)


async def ready(r: Rig, i: int, wait_for: Any, *, proxied: bool) -> None:
    """Replica i has synced caches; if proxied, its three watches are open through the proxy."""
    s = r.s

    def synced() -> bool:
        try:
            if s.http_get(i, "/readyz")[0] != 200:
                return False
        except OSError:  # not listening yet
            return False
        open_watches = {e.request.resource for e in r.proxy.open_exchanges(watches(*INFORMERS))}
        return not proxied or open_watches == set(INFORMERS)

    await wait_for(synced, timeout=T, describe=s.describe)


async def leader_and_proxied_standby(r: Rig, net: str, wait_for: Any) -> tuple[int, int]:
    """Pool "p" over `net`; a leader on the direct path, then a standby whose requests cross the fault
    proxy, synced; and 2-4 Services created. Returns (leader, standby)."""
    s = r.s
    s.create_pool("p", [net])
    leader = s.start(1)[0]
    await leading(r, leader, wait_for)
    standby = s.start(1, kubeconfig=r.proxied)[0]
    await ready(r, standby, wait_for, proxied=True)
    for i in range(r.rng.randint(2, 4)):
        s.create_service(f"pre-{i}")
    return leader, standby


def live_services(s: Scenario) -> list[str]:
    """The test's LoadBalancer Services (history markers are ClusterIP)."""
    return sorted(
        item["metadata"]["name"]
        for item in s.api.get(s.svc_path()).get("items", [])
        if item["spec"].get("type") == "LoadBalancer"
    )


async def all_converged(r: Rig, wait_for: Any, network: str, s: Scenario | None = None) -> None:
    s = s or r.s
    names = live_services(s)
    await wait_for(
        lambda: not converged(s.api, s.ns, names, network),
        timeout=T,
        describe=lambda: "\n".join(converged(s.api, s.ns, names, network)) + "\n" + r.tell() + "\n"
        + s.describe(),
    )


async def random_changes(r: Rig, count: int, prefix: str) -> None:
    """Creates, deletes and edits (ports, selector, annotations) Services: none of it may move an IP."""
    s, rng = r.s, r.rng
    for step in range(count):
        names = live_services(s)
        op = rng.choice(["create", "create", "delete", "port", "selector", "annotate"])
        if op != "create" and len(names) < 2:
            op = "create"
        if op == "create":
            name = f"{prefix}-{step}"
            s.create_service(name)
        else:
            name = rng.choice(names)
            if op == "delete":
                s.delete_service(name)
            elif op == "port":
                ports = s.service(name)["spec"]["ports"]
                port = 8000 + step
                extra = {"name": f"tcp-{port}", "protocol": "TCP", "port": port}
                s.patch_service(name, {"spec": {"ports": [*ports, extra]}})
            elif op == "selector":
                s.patch_service(name, {"spec": {"selector": {"app": f"{name}-{step}"}}})
            else:
                s.patch_service(name, {"metadata": {"annotations": {"example.com/step": str(step)}}})
        r.note(f"{op} {name}")
        await asyncio.sleep(rng.uniform(0.0, 0.6))


def check_history(r: Rig, namespaces: list[str]) -> list[Change]:
    """No IP ever moved or was held twice, in the API server's own history of these namespaces."""
    services = r.history.changes("Service", namespaces)
    text = describe_history(services)
    assert r.history.service_gaps() == 0, f"the Service history has a gap (relist)\n{r.tell()}"
    moves = ip_moves(services)
    assert not moves, "an IP moved:\n" + "\n".join(moves) + f"\n{r.tell()}\nhistory:\n{text}"
    dups = duplicates(services)
    assert not dups, "an IP was held twice:\n" + "\n".join(dups) + f"\n{r.tell()}\nhistory:\n{text}"
    return services


# -- scenarios --------------------------------------------------------------------------------------


@RUN
async def test_standby_with_stalled_watches_takes_over_without_moving_an_ip(
    rig: Rig, run: int, wait_for: Any
) -> None:
    """The standby's watches go silent (no FIN, no bytes); the leader works on; kill -9 the leader."""
    r, s, rng = rig, rig.s, rig.rng
    net = "192.168.70.0/26"
    leader, standby = await leader_and_proxied_standby(r, net, wait_for)
    await all_converged(r, wait_for, net)

    stall = r.proxy.stall(watches(*INFORMERS), open_only=True)
    r.note("standby's watches stalled")
    await random_changes(r, rng.randint(4, 8), "during")
    await all_converged(r, wait_for, net)  # the leader did all of it
    await asyncio.sleep(rng.uniform(0.0, 1.0))
    s.controllers.kill(leader, signal.SIGKILL)
    r.note("leader killed")
    await asyncio.sleep(rng.uniform(0.0, LEASE))
    await random_changes(r, rng.randint(1, 3), "after")
    s.create_service("last")  # at least one Service only the new leader can serve
    await leading(r, standby, wait_for)
    await all_converged(r, wait_for, net)
    r.history.flush(s.ns)

    check_history(r, [s.ns])
    # The stall covered the standby's three open watches, and held back what the leader's work sent.
    assert stall.only is not None and len(stall.only) == len(INFORMERS), r.tell()
    assert stall.hits >= 1, f"the stall never held anything back\n{r.tell()}"
    print(r.tell())


@RUN
async def test_old_leaders_delayed_writes_never_land_after_the_new_leaders(
    rig: Rig, run: int, wait_for: Any
) -> None:
    """The leader's renewals are never sent; its Events and the status PATCHes of the held-* Services are
    held until the standby holds the Lease, then released: whatever of them is still waiting goes out.

    Lease 6 s, renew deadline 5 s; the old leader retries every 2.5 s, which with a hung API server made it
    step down only 7.5 s after its last renew, while the standby (retrying every 0.5 s) takes over from 6 s.
    Whatever of the old leader is still waiting when the new leader holds the Lease is sent then.
    """
    r, s, rng = rig, rig.s, rig.rng
    net = "192.168.71.0/26"
    pool = s.create_pool("p", [net])
    timing = ["--leader-elect-lease-duration=6s", "--leader-elect-renew-deadline=5s"]
    old = s.start(1, *timing, "--leader-elect-retry-period=2500ms", kubeconfig=r.proxied)[0]
    await leading(r, old, wait_for)
    new = s.start(1, *timing, "--leader-elect-retry-period=500ms")[0]
    await ready(r, new, wait_for, proxied=False)
    for i in range(rng.randint(2, 3)):
        s.create_service(f"pre-{i}")
    await all_converged(r, wait_for, net)
    await asyncio.sleep(rng.uniform(0.0, 2.5))  # anywhere in the old leader's renew cycle

    renewals = r.proxy.hold_requests(writes("leases"), None, "renewals held")

    def delayed_write(q: Request) -> bool:
        # Events (no precondition protects them) and the status PATCHes of the held-* Services; the other
        # PATCHes go through, so the old leader keeps recording Events for writes that did land.
        held_service = q.resource == "services" and q.name.startswith("held-")
        return q.write and (q.resource == "events" or held_service)

    delayed = r.proxy.hold_requests(delayed_write, None, "writes held")
    r.note("old leader's renewals, Events and held-* PATCHes held")
    await random_changes(r, rng.randint(1, 3), "during")
    for i in range(rng.randint(1, 3)):
        s.create_service(f"held-{i}")
        s.create_service(f"free-{i}")
    s.create_service("legacy", annotations={"metallb.io/address-pool": pool})
    taken = s.controllers.identity(new)
    await wait_for(lambda: holder(s) == taken, timeout=T, interval=0.05, describe=r.tell)
    delayed.clear()
    r.note("new leader holds the lease: old leader's held writes released")
    await all_converged(r, wait_for, net)
    # The old leader exits once it knows it lost the lease; nothing of it may still be on its way.
    await wait_for(
        lambda: not s.controllers.alive(old) and not r.proxy.open_exchanges(), timeout=T, describe=r.tell
    )
    r.history.flush(s.ns)

    services = check_history(r, [s.ns])
    exchanges = r.proxy.exchanges()
    landed = {int(e.resource_version): e for e in exchanges if e.landed and e.resource_version}
    events = [
        c
        for c in r.history.changes("Event", [s.ns])
        if c.obj.get("reportingComponent") == CONTROLLER_COMPONENT
    ]
    theirs = [c for c in [*status_writes(services), *events] if c.rv not in landed]
    first, late = late_writes(landed, [c.rv for c in theirs])
    timeline = describe_history(sorted([*services, *events], key=lambda c: c.rv))
    assert first is not None, f"the new leader never wrote\n{r.tell()}"
    assert not late, (
        f"old leader's writes landed after the new leader's first write (rv {first}): "
        + "; ".join(f"rv {rv} {landed[rv].request}" for rv in late)
        + f"\n{r.tell()}\nhistory:\n{timeline}"
    )
    acquired = min(c.rv for c in r.history.changes("Lease") if c.holder == s.controllers.identity(new))
    _, after_lease = late_writes(landed, [acquired])
    assert not after_lease, (
        f"old leader's writes landed after the new leader took the lease (rv {acquired}): "
        + "; ".join(f"rv {rv} {landed[rv].request}" for rv in after_lease)
        + f"\n{r.tell()}\nhistory:\n{timeline}"
    )
    assert renewals.hits >= 1 and delayed.hits >= 1, f"the faults never held a request\n{r.tell()}"
    print(r.tell())


@RUN
async def test_api_server_restart_mid_takeover_moves_no_ip(rig: Rig, run: int, wait_for: Any) -> None:
    """Kill -9 the leader, then restart the API server at a random point of the takeover."""
    r, s, rng = rig, rig.s, rig.rng
    net = "192.168.72.0/26"
    leader, standby = await leader_and_proxied_standby(r, net, wait_for)
    await random_changes(r, rng.randint(2, 4), "before")
    await all_converged(r, wait_for, net)

    s.controllers.kill(leader, signal.SIGKILL)
    before, down = rng.uniform(0.0, LEASE + 1.0), rng.uniform(0.0, 1.5)
    r.note(f"leader killed; API server down after {before:.1f}s for {down:.1f}s")
    await asyncio.sleep(before)
    # In this thread, not a worker thread: kube-apiserver dies with the thread that started it (PDEATHSIG).
    r.cluster.kill_apiserver()
    await asyncio.sleep(down)
    r.cluster.restart_apiserver()
    r.note("API server back")
    await random_changes(r, rng.randint(1, 3), "after")
    s.create_service("last")
    await leading(r, standby, wait_for)
    await all_converged(r, wait_for, net)
    r.history.flush(s.ns)

    check_history(r, [s.ns])
    print(r.tell())


@RUN
async def test_namespace_and_service_created_together_while_namespaces_watch_stalls(
    rig: Rig, run: int, wait_for: Any
) -> None:
    """The leader's namespaces watch is silent while a labelled Namespace and its Service appear."""
    r, s, rng = rig, rig.s, rig.rng
    team = s.ns[-6:]
    selective, general = "192.168.73.0/28", "192.168.74.0/28"
    by_team = {"namespaceSelectors": [{"matchLabels": {"team": team}}]}
    s.create_pool("team", [selective], serviceAllocation=by_team)
    s.create_pool("general", [general])
    leader = s.start(1, kubeconfig=r.proxied)[0]
    await leading(r, leader, wait_for)
    s.start(1)
    await ready(r, leader, wait_for, proxied=True)
    s.create_service("warm")  # served from the general pool: the leader is working
    await all_converged(r, wait_for, general)

    stall = r.proxy.stall(watches("namespaces"), open_only=True)
    tenant_ns = f"{s.ns}-team"
    s.api.post("/api/v1/namespaces", {"metadata": {"name": tenant_ns, "labels": {"team": team}}})
    tenant = Scenario(s.api, tenant_ns, s.controllers)
    tenant.lb_class = s.lb_class
    tenant.create_service("tenant")
    quiet = rng.uniform(0.5, 3.0)
    await asyncio.sleep(quiet)
    if rng.random() < 0.5:
        stall.clear()
        r.note(f"namespaces watch stalled {quiet:.1f}s, then resumed")
    else:
        r.proxy.drop(watches("namespaces"))
        stall.clear()
        r.note(f"namespaces watch stalled {quiet:.1f}s, then dropped")
    await all_converged(r, wait_for, selective, tenant)
    r.history.flush(tenant_ns)

    services = check_history(r, [s.ns, tenant_ns])
    wrong = outside([c for c in services if c.namespace == tenant_ns], selective, ["tenant"])
    assert not wrong, (
        "the Service took an IP from a pool its namespace does not select:\n"
        + "\n".join(wrong)
        + f"\n{r.tell()}"
    )
    assert stall.hits >= 1, f"the stall never held the namespaces watch\n{r.tell()}"
    assert ipaddress.ip_address(tenant.ips("tenant")[0]) in ipaddress.ip_network(selective)
    print(r.tell())
