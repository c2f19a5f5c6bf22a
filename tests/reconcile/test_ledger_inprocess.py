"""The release ledger's writer and its flush, against the real API server.

The writer runs on a fake clock (so "at most one write per second per pool" is counted, not timed); the
flush test runs a whole controller in-process with a writer allowed one write an hour, so only the forced
flush at a clean shutdown can have written what the test finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.trace import NoOpTracer

from controller.app import Controller
from controller.config import Settings
from controller.http import HealthState
from controller.ipam import Allocator, PoolSpec, ServiceKey
from controller.ipam.ledger import LEDGER_MAX_ENTRIES, ledger_to_status, pool_ledger
from controller.kube.client import KubeClient
from controller.kube.events import EventRecorder
from controller.kube.resources import IPPOOLS
from controller.kube.store import Store
from controller.metrics import Metrics
from controller.reconcile.leadership import WriteGate
from controller.reconcile.release_ledger import LedgerSettings, LedgerWriter, restore_ledgers
from e2e.harness.binaries import REPO_ROOT
from e2e.harness.cluster import LocalCluster
from tests.ipam.helpers import svc

pytestmark = pytest.mark.cluster

MERGE = "application/merge-patch+json"


@pytest.fixture
async def admin(stablelb_installed: LocalCluster) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(str(stablelb_installed.kubeconfig))
    yield client
    await client.close()


@pytest.fixture
async def pool(admin: KubeClient) -> AsyncIterator[str]:
    name = f"ledger-{uuid.uuid4().hex[:6]}"
    await admin.request("POST", IPPOOLS.path(), body={
        "apiVersion": "stablelb.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
        "spec": {"addresses": ["192.168.95.0/24"]},
    })
    yield name
    with contextlib.suppress(Exception):
        await admin.request("DELETE", IPPOOLS.path(name=name))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_writer_writes_at_most_once_a_second_per_pool_and_only_the_ledger(
    admin: KubeClient, pool: str
) -> None:
    # Another writer's status fields (the pool reconciler's counts) must survive the ledger's writes.
    await admin.request("PATCH", IPPOOLS.path(name=pool, subresource="status"),
                        body={"status": {"assigned": "7", "available": "249"}}, content_type=MERGE)
    allocator = Allocator()
    allocator.set_pools([PoolSpec(pool, ("192.168.95.0/24",))])
    store = Store()
    store.put(await admin.request("GET", IPPOOLS.path(name=pool)))
    gate = WriteGate()
    gate.open()
    clock = FakeClock()
    deferred: list[tuple[str, float]] = []
    writer = LedgerWriter(client=admin, tracer=NoOpTracer(), gate=gate, allocator=allocator, pools=store,
                          clock=clock, on_deferred=lambda name, wait: deferred.append((name, wait)))
    # 200 releases over 5 seconds of the writer's clock, one sync every 50 ms of it.
    for i in range(200):
        allocator.ensure(svc(f"s{i}"))
        allocator.release(ServiceKey("default", f"s{i}"))
        await writer.sync()
        clock.now += 0.025
    assert 1 <= writer.writes <= 5, f"{writer.writes} ledger writes in 5 s of churn"
    # Each change held back asks to be looked at again once the second is over, not later.
    assert deferred and all(name == pool and 0 < wait <= 1.0 for name, wait in deferred)
    await writer.sync(force=True)
    obj = await admin.request("GET", IPPOOLS.path(name=pool))
    ledger, problem = pool_ledger(obj)
    exported = allocator.release_ledger(pool)
    assert exported is not None and problem is None
    assert ledger_to_status(ledger) == ledger_to_status(exported)  # the same, to the second
    assert len(ledger.entries) == 200 and ledger.entries[-1].service == ServiceKey("default", "s199")
    assert (obj["status"]["assigned"], obj["status"]["available"]) == ("7", "249")
    # Nothing changed: no write, whatever the clock says.
    clock.now += 10
    store.put(obj)
    assert await writer.sync() == 0 and await writer.sync(force=True) == 0


async def test_restore_reads_back_what_was_written_and_warns_on_the_pool_for_junk(
    admin: KubeClient, pool: str
) -> None:
    old = Allocator()
    old.set_pools([PoolSpec(pool, ("192.168.95.0/24",))])
    for name in ("a", "b", "c"):
        old.ensure(svc(name))
    old.release(ServiceKey("default", "b"))
    status = {"releaseLedger": {"entries": [
        {"ip": "192.168.95.1", "releasedAt": "2026-12-01T00:00:00Z", "service": "default/b",
         "uid": "uid-default-b", "reason": "ServiceGone"},
        {"ip": "not-an-ip", "releasedAt": "2026-12-01T00:00:00Z", "service": "default/x"},
    ]}}
    await admin.request("PATCH", IPPOOLS.path(name=pool, subresource="status"), body={"status": status},
                        content_type=MERGE)
    obj = await admin.request("GET", IPPOOLS.path(name=pool))
    new = Allocator()
    new.set_pools([PoolSpec(pool, ("192.168.95.0/24",))])
    recorder = EventRecorder(admin)
    task = asyncio.create_task(recorder.run())
    try:
        assert restore_ledgers(new, [obj], recorder) == 1
        query = {"fieldSelector": f"involvedObject.name={pool},reason=LedgerIgnored"}
        items: list[dict[str, Any]] = []
        for _ in range(300):  # the recorder sends in the background
            items = (await admin.request("GET", "/api/v1/namespaces/default/events", query=query))["items"]
            if items:
                break
            await asyncio.sleep(0.1)
        assert items and items[0]["type"] == "Warning" and "not-an-ip" in items[0]["message"]
        assert items[0]["involvedObject"]["kind"] == "IPPool"
    finally:
        await recorder.close()
        task.cancel()
    # The one good entry placed 192.168.95.1 behind every never-used address.
    assert new.ensure(svc("d")).ips == ("192.168.95.0",)
    assert new.ensure(svc("e")).ips == ("192.168.95.2",)


async def test_a_clean_shutdown_flushes_the_ledger_and_the_restarted_controller_keeps_the_order(
    stablelb_installed: LocalCluster, controller_kubeconfig: Path, admin: KubeClient, pool: str,
    namespace: str, wait_for: Any,
) -> None:
    lb_class = f"ledger.stablelb.io/c-{uuid.uuid4().hex[:8]}"
    settings = Settings(kubeconfig=str(controller_kubeconfig), lb_class=lb_class, handle_unclassed=False,
                        leader_elect=False, workers=2)
    api = stablelb_installed.api

    async def start() -> tuple[Controller, asyncio.Task[int], KubeClient]:
        client = await KubeClient.from_kubeconfig(str(controller_kubeconfig))
        # A writer that may write once an hour, counted from the start: only the forced flush can write.
        controller = Controller(settings, client, metrics=Metrics(), tracer=NoOpTracer(),
                                health=HealthState(), ledger=LedgerSettings(min_interval=3600))
        return controller, asyncio.create_task(controller.run()), client

    async def stop(controller: Controller, task: asyncio.Task[int], client: KubeClient) -> None:
        controller.stopping.set()
        assert await asyncio.wait_for(task, 60) == 0
        await client.close()

    def create(name: str) -> None:
        api.post(f"/api/v1/namespaces/{namespace}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": lb_class, "ports": [{"port": 80}],
                     "allocateLoadBalancerNodePorts": False},
        })

    def ips(name: str) -> list[str]:
        obj = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [e["ip"] for e in ingress]

    controller, task, client = await start()
    try:
        for name in ("a", "b", "c"):
            create(name)
        held = {name: (await wait_for(lambda n=name: ips(n), timeout=60))[0] for name in ("a", "b", "c")}
        api.delete(f"/api/v1/namespaces/{namespace}/services/b")
        api.delete(f"/api/v1/namespaces/{namespace}/services/c")
        reconciler = controller.service_reconciler
        assert reconciler is not None
        await wait_for(lambda: not any(reconciler.allocator.assignment(ServiceKey(namespace, n))
                                       for n in ("b", "c")), timeout=60)
        assert not pool_ledger(api.get(f"{IPPOOLS.path()}/{pool}"))[0].entries  # not written yet
    finally:
        await stop(controller, task, client)
    ledger, problem = pool_ledger(api.get(f"{IPPOOLS.path()}/{pool}"))
    assert problem is None
    assert {e.ip for e in ledger.entries} == {held["b"], held["c"]}
    assert all(e.service_gone and e.service.namespace == namespace for e in ledger.entries)

    # The restarted controller hands out a never-used address, not the lowest one just freed.
    controller, task, client = await start()
    try:
        create("d")
        (ip_d,) = await wait_for(lambda: ips("d"), timeout=60)
        assert ip_d not in held.values()
    finally:
        await stop(controller, task, client)


def test_the_crd_bounds_the_ledger_as_the_controller_does() -> None:
    chart = REPO_ROOT / "charts/stablelb/crds/ippools.stablelb.io.yaml"
    for path in (REPO_ROOT / "manifests/crd-ippools.yaml", chart):
        crd = yaml.safe_load(path.read_text())
        status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        entries = status["properties"]["releaseLedger"]["properties"]["entries"]
        assert entries["maxItems"] == LEDGER_MAX_ENTRIES
