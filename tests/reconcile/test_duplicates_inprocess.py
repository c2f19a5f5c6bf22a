"""Issue 9, the Service reconcile path against the real API server: what a new leader does with claims it
finds in status (design §3.4). The controller runs in-process; the statuses are written before it starts, as a
previous leader (or a restore) would have left them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from controller.app import Controller
from controller.config import Settings
from controller.http import HealthState
from controller.kube.client import KubeClient
from controller.metrics import Metrics
from controller.reconcile.service_input import CONDITION_TYPE
from controller.reconcile.writes import FIELD_MANAGER
from e2e.harness.controllers import ControllerSet
from e2e.support import Scenario

pytestmark = pytest.mark.cluster

T = 60.0
Start = Callable[[], Any]


@pytest.fixture
async def scenario(
    stablelb_installed: Any, controller_kubeconfig: Path, namespace: str, tmp_path: Path
) -> AsyncIterator[tuple[Scenario, Start]]:
    s = Scenario(stablelb_installed.api, namespace, ControllerSet(tmp_path, default_kubeconfig=None))
    running: list[tuple[Controller, asyncio.Task[None], KubeClient]] = []

    async def start() -> Controller:
        client = await KubeClient.from_kubeconfig(str(controller_kubeconfig))
        settings = Settings(
            kubeconfig=str(controller_kubeconfig),
            lb_class=s.lb_class,
            handle_unclassed=False,
            leader_elect=False,
            workers=2,
        )
        controller = Controller(
            settings,
            client,
            metrics=Metrics(),
            tracer=TracerProvider().get_tracer("test"),
            health=HealthState(),
        )
        running.append((controller, asyncio.create_task(controller.run()), client))
        return controller

    try:
        yield s, start
    finally:
        for controller, task, client in running:
            controller.stopping.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 20)
            await client.close()
        s.cleanup()


def grant(s: Scenario, name: str, ips: list[str]) -> None:
    """The status a previous leader wrote: the ingress and our condition, under our field manager."""
    status = {
        "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]},
        "conditions": [
            {
                "type": CONDITION_TYPE,
                "status": "True",
                "reason": "Allocated",
                "message": f"assigned {', '.join(ips)}",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    s.api.call(
        "PATCH",
        s.svc_path(name, "status"),
        {"status": status},
        content_type="application/merge-patch+json",
        query={"fieldManager": FIELD_MANAGER},
    )


async def test_duplicate_loser_with_an_input_problem_never_keeps_the_ip(
    scenario: tuple[Scenario, Start], wait_for: Any
) -> None:
    """Defect 2: the newer claim also has conflicting requests; it must still drop the IP from status."""
    s, start = scenario
    s.create_pool("p", ["192.168.71.0/28"])
    s.create_service("older")
    await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution
    conflicting = {"stablelb.io/ips": "192.168.71.9", "metallb.io/loadBalancerIPs": "192.168.71.10"}
    s.create_service("newer", annotations=conflicting)
    for name in ("older", "newer"):
        grant(s, name, ["192.168.71.5"])

    await start()
    await wait_for(lambda: s.reason("newer") == "ConflictingRequests", timeout=T, describe=s.describe)
    await wait_for(lambda: s.ips("newer") == [], timeout=T, describe=s.describe)
    await wait_for(lambda: "DuplicateIPResolved" in s.event_reasons("newer"), timeout=T, describe=s.describe)
    assert s.ips("older") == ["192.168.71.5"]

    # The older one goes; a third Service asking for the address gets it, and only it shows it.
    s.delete_service("older")
    s.create_service("third", annotations={"stablelb.io/ips": "192.168.71.5"})
    await wait_for(lambda: s.ips("third") == ["192.168.71.5"], timeout=T, describe=s.describe)
    assert s.ips("newer") == []


async def test_partial_dual_stack_duplicate_says_duplicate_ip(
    scenario: tuple[Scenario, Start], wait_for: Any
) -> None:
    """Defect 7: losing one family to an older claim is a DuplicateIP too, with its Warning."""
    s, start = scenario
    s.create_pool("p", ["192.168.72.0/28", "fd00:72::/124"])
    s.create_service("older")
    await asyncio.sleep(1.1)
    s.create_service("newer", families=["IPv4", "IPv6"], policy="PreferDualStack")
    grant(s, "older", ["192.168.72.5"])
    grant(s, "newer", ["192.168.72.5", "fd00:72::5"])

    await start()
    await wait_for(lambda: s.reason("newer") == "DuplicateIP", timeout=T, describe=s.describe)
    ips = s.ips("newer")
    assert "fd00:72::5" in ips and "192.168.72.5" not in ips and len(ips) == 2
    await wait_for(lambda: "DuplicateIPResolved" in s.event_reasons("newer"), timeout=T, describe=s.describe)
    assert s.ips("older") == ["192.168.72.5"]


async def test_the_sharer_edited_while_no_leader_ran_is_the_one_that_moves(
    scenario: tuple[Scenario, Start], wait_for: Any
) -> None:
    """Defect 6: the older sharer's ports were edited to clash while no leader ran; it moves, not the other.

    Services have no metadata.generation, so "edited after its status was granted" comes from managedFields.
    """
    s, start = scenario
    s.create_pool("p", ["192.168.73.0/28"])
    key = {"stablelb.io/sharing-key": "k"}
    s.create_service("b-older", ports=[443], annotations=key)
    await asyncio.sleep(1.1)
    s.create_service("a-newer", ports=[80], annotations=key)
    for name in ("b-older", "a-newer"):
        grant(s, name, ["192.168.73.5"])
    await asyncio.sleep(1.1)  # managedFields times have one-second resolution
    s.patch_service("b-older", {"spec": {"ports": [{"name": "tcp-80", "protocol": "TCP", "port": 80}]}})

    await start()
    await wait_for(lambda: s.reason("b-older") == "DuplicateIP", timeout=T, describe=s.describe)
    assert s.ips("a-newer") == ["192.168.73.5"]
    moved = s.ips("b-older")
    assert len(moved) == 1 and moved != ["192.168.73.5"]
