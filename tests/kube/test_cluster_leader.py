"""Leader election against a real kube-apiserver (short durations: 3 s lease, 2 s renew, 0.5 s retry)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.kube.client import KubeClient
from controller.kube.informer import Informer
from controller.kube.leaderelection import LeaderElectionConfig, LeaderElector, LeadershipLost
from controller.kube.resources import LEASES
from e2e.harness.cluster import LocalCluster
from e2e.harness.waiting import wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]


class Candidate:
    def __init__(self, client: KubeClient, namespace: str, lease: str, identity: str, *,
                 release: bool = True) -> None:
        self.identity = identity
        self.leading = False
        self.stops = 0
        cfg = LeaderElectionConfig(namespace, lease, identity, lease_duration=3.0, renew_deadline=2.0,
                                   retry_period=0.5, release_on_cancel=release)
        self.elector = LeaderElector(client, cfg, on_started_leading=self._lead,
                                     on_stopped_leading=self._stopped)
        self.task = asyncio.create_task(self.elector.run())

    async def _lead(self) -> None:
        self.leading = True
        await asyncio.Event().wait()

    def _stopped(self) -> None:
        self.leading = False
        self.stops += 1

    async def cancel(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def clients(cluster: LocalCluster) -> AsyncIterator[list[KubeClient]]:
    made = [await KubeClient.from_kubeconfig(str(cluster.kubeconfig)) for _ in range(3)]
    yield made
    for c in made:
        await c.close()


async def get_lease(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return await client.request("GET", LEASES.path(namespace=namespace, name=name))


async def test_exactly_one_of_three_leads_and_kill_hands_over(
    clients: list[KubeClient], namespace: str
) -> None:
    lease = "lock-" + uuid.uuid4().hex[:6]
    cands = [Candidate(c, namespace, lease, f"c{i}", release=False) for i, c in enumerate(clients)]
    try:
        await wait_for(lambda: any(c.leading for c in cands), timeout=30)
        await asyncio.sleep(4.0)  # longer than a lease: nobody else may have taken over meanwhile
        leaders = [c for c in cands if c.leading]
        assert len(leaders) == 1
        first = leaders[0]
        spec = (await get_lease(clients[0], namespace, lease))["spec"]
        assert spec["holderIdentity"] == first.identity
        transitions = spec.get("leaseTransitions", 0)

        await first.cancel()  # killed: no release, the lease must expire
        rest = [c for c in cands if c is not first]
        await wait_for(lambda: any(c.leading for c in rest), timeout=30)
        second = next(c for c in rest if c.leading)
        spec = (await get_lease(clients[0], namespace, lease))["spec"]
        assert spec["holderIdentity"] == second.identity
        assert spec["leaseTransitions"] == transitions + 1
        assert sum(c.leading for c in cands) == 1
    finally:
        for c in cands:
            await c.cancel()


async def test_clean_shutdown_releases_and_hands_over(clients: list[KubeClient], namespace: str) -> None:
    lease = "lock-" + uuid.uuid4().hex[:6]
    a = Candidate(clients[0], namespace, lease, "a")
    try:
        await wait_for(lambda: a.leading, timeout=30)
        b = Candidate(clients[1], namespace, lease, "b")
        await asyncio.sleep(1.0)
        assert not b.leading
        await a.cancel()
        assert a.stops == 1 and not a.elector.is_leader()
        await wait_for(lambda: b.leading, timeout=30)
        spec = (await get_lease(clients[0], namespace, lease))["spec"]
        assert spec["holderIdentity"] == "b"
        await b.cancel()
        released = (await get_lease(clients[0], namespace, lease))["spec"]
        assert released["holderIdentity"] == ""
        assert released["leaseDurationSeconds"] == 1
    finally:
        await a.cancel()


async def test_leader_losing_the_api_steps_down(cluster: LocalCluster) -> None:
    own = await asyncio.to_thread(LocalCluster.start, name="kube-le-down")
    client = await KubeClient.from_kubeconfig(str(own.kubeconfig))
    try:
        ns = f"le-{uuid.uuid4().hex[:6]}"
        await client.request("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
        a = Candidate(client, ns, "lock", "a")
        await wait_for(lambda: a.leading, timeout=30)
        await asyncio.to_thread(own.kill_apiserver)
        await wait_for(lambda: a.task.done(), timeout=30)
        assert isinstance(a.task.exception(), LeadershipLost)
        assert a.stops == 1 and not a.leading and not a.elector.is_leader()
    finally:
        await client.close()
        await asyncio.to_thread(own.stop)


async def test_sigstopped_leader_makes_no_write_after_it_resumes(
    cluster: LocalCluster, clients: list[KubeClient], namespace: str
) -> None:
    lease = "lock-" + uuid.uuid4().hex[:6]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.kube.lease_candidate",
        str(cluster.kubeconfig), namespace, lease, "frozen",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    history: list[tuple[str, str]] = []  # (holder, resourceVersion) of every Lease version seen
    watcher = Informer(clients[2], LEASES, namespace=namespace, field_selector=f"metadata.name={lease}")

    def note(obj: dict[str, Any]) -> None:
        history.append((obj["spec"].get("holderIdentity", ""), obj["metadata"]["resourceVersion"]))

    watcher.add_handlers(note, lambda _, new: note(new))
    watch_task = asyncio.create_task(watcher.run())
    other: Candidate | None = None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"leading"
        os.kill(proc.pid, signal.SIGSTOP)
        other = Candidate(clients[0], namespace, lease, "other")
        await wait_for(lambda: other is not None and other.leading, timeout=30)
        await asyncio.sleep(4.0)  # well past the frozen process' lease
        resumed_at = len(history)
        os.kill(proc.pid, signal.SIGCONT)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        code = await asyncio.wait_for(proc.wait(), 30)
        await asyncio.sleep(1.5)  # let the watcher catch any late write
        assert rest.split() == [b"stopped", b"lost"], (rest, (await proc.stderr.read())[-2000:])
        assert code == 3
        assert history, "the lease watcher saw nothing"
        assert all(holder == "other" for holder, _ in history[resumed_at:]), history
        spec = (await get_lease(clients[0], namespace, lease))["spec"]
        assert spec["holderIdentity"] == "other"
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            await proc.wait()
        if other is not None:
            await other.cancel()
        watch_task.cancel()
        await asyncio.gather(watch_task, return_exceptions=True)
