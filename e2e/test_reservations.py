"""IPReservations end to end: two controller processes against the real API server.

The reserved address goes to its Service without any annotation, another Service asking for it is refused
with a condition and an Event naming the owner, a reservation for an address someone holds waits without
moving the holder and is honoured once the holder is gone, and a restart of both replicas decides the same.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.harness.rest import ApiError
from e2e.support import Scenario, settle

pytestmark = pytest.mark.cluster

T = 60.0
RESERVATIONS = "/apis/stablelb.io/v1alpha1/ipreservations"


class Reservations:
    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.names: list[str] = []

    def create(self, name: str, addresses: list[str], service: str) -> str:
        full = f"{self.s.ns}-{name}"[:63]
        self.s.api.post(
            RESERVATIONS,
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPReservation",
                "metadata": {"name": full},
                "spec": {"addresses": addresses, "service": {"namespace": self.s.ns, "name": service}},
            },
        )
        self.names.append(full)
        return full

    def status(self, full: str) -> dict[str, Any]:
        return dict(self.s.api.get(f"{RESERVATIONS}/{full}").get("status") or {})

    def event_reasons(self, full: str) -> set[str]:
        selector = f"involvedObject.kind=IPReservation,involvedObject.name={full}"
        items = self.s.api.get("/api/v1/events", query={"fieldSelector": selector}).get("items", [])
        return {str(e.get("reason")) for e in items}

    def cleanup(self) -> None:
        for full in self.names:
            try:
                self.s.api.delete(f"{RESERVATIONS}/{full}")
            except ApiError as err:
                if err.status != 404:
                    raise


@pytest.fixture
def reservations(scenario: Scenario) -> Any:
    r = Reservations(scenario)
    yield r
    r.cleanup()


async def test_reservations_end_to_end(scenario: Scenario, reservations: Reservations, wait_for: Any) -> None:
    s, r = scenario, reservations
    pool = s.create_pool("p", ["192.168.47.0/29"])
    web = r.create("web", ["192.168.47.3"], "web")
    s.start(2)
    await wait_for(lambda: r.status(web).get("state") == "Waiting", timeout=T, describe=s.describe)
    await wait_for(
        lambda: (s.pool(pool).get("status") or {}).get("reserved") == "1", timeout=T, describe=s.describe
    )
    # An address in no pool is reported; a pool edit that takes it in is seen by the reservation.
    edge = r.create("edge", ["192.168.48.1"], "edge")
    await wait_for(lambda: r.status(edge).get("state") == "NotInPool", timeout=T, describe=s.describe)
    await wait_for(lambda: "ReservedIPNotInPool" in r.event_reasons(edge), timeout=T, describe=s.describe)
    s.patch_pool(pool, {"addresses": ["192.168.47.0/29", "192.168.48.0/30"]})
    await wait_for(lambda: r.status(edge).get("state") == "Waiting", timeout=T, describe=s.describe)
    assert r.status(edge)["addresses"][0]["pool"] == pool

    # Free-space allocation passes the reserved address by; a request for it is refused, naming the owner.
    s.create_service("other")
    (other_ip,) = await wait_for(lambda: s.ips("other"), timeout=T, describe=s.describe)
    assert other_ip != "192.168.47.3"
    s.create_service("thief", annotations={"stablelb.io/ips": "192.168.47.3"})
    await wait_for(lambda: s.reason("thief") == "IPReserved", timeout=T, describe=s.describe)
    cond = s.condition("thief")
    assert cond is not None and f"{s.ns}/web" in cond["message"] and web in cond["message"]
    refused = await wait_for(
        lambda: [e for e in s.events("thief") if e.get("reason") == "RequestedIPUnavailable"],
        timeout=T,
        describe=s.describe,
    )
    assert refused[0]["type"] == "Warning" and f"{s.ns}/web" in refused[0]["message"]

    # The named Service gets it without any annotation.
    s.create_service("web")
    await wait_for(lambda: s.ips("web") == ["192.168.47.3"], timeout=T, describe=s.describe)
    await wait_for(lambda: r.status(web).get("state") == "Bound", timeout=T, describe=s.describe)
    # Events are sent after the status write, asynchronously
    await wait_for(lambda: "ReservationBound" in r.event_reasons(web), timeout=T, describe=s.describe)

    # A reservation for an address another Service holds waits; the holder does not move.
    held = r.create("held", [other_ip], "late")
    await wait_for(lambda: r.status(held).get("state") == "HeldByOther", timeout=T, describe=s.describe)
    status = r.status(held)
    assert status["addresses"][0]["holders"] == [f"{s.ns}/other"]
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "HeldByOther")
    assert f"{s.ns}/other" in ready["message"]
    await wait_for(lambda: "ReservedIPHeld" in r.event_reasons(held), timeout=T, describe=s.describe)
    s.create_service("late")
    await wait_for(lambda: s.reason("late") == "RequestedIPInUse", timeout=T, describe=s.describe)
    assert s.ips("other") == [other_ip] and s.ips("late") == []

    # Both replicas restart: the new leader decides the same from Service status and the reservations.
    rv_other, rv_web = s.rv("other"), s.rv("web")
    s.controllers.stop_all()
    s.start(2)
    await wait_for(lambda: s.leader_index() is not None, timeout=T, describe=s.describe)
    # A Service created now is served once the new leader has adopted and queued everything; then give it
    # a moment to do anything it should not.
    s.create_service("probe")
    (probe_ip,) = await wait_for(lambda: s.ips("probe"), timeout=T, describe=s.describe)
    assert probe_ip not in ("192.168.47.3", other_ip, "192.168.48.1")
    await settle(2.0)
    assert s.ips("other") == [other_ip] and s.ips("web") == ["192.168.47.3"] and s.ips("late") == []
    assert (s.rv("other"), s.rv("web")) == (rv_other, rv_web), "a restart rewrote a settled Service"
    assert s.reason("thief") == "IPReserved" and r.status(held).get("state") == "HeldByOther"

    # The holder goes: the reservation is honoured.
    s.delete_service("other")
    await wait_for(lambda: s.ips("late") == [other_ip], timeout=T, describe=s.describe)
    await wait_for(lambda: r.status(held).get("state") == "Bound", timeout=T, describe=s.describe)

    # The reservation for web goes: web keeps its address (never moved); thief still waits for it.
    s.api.delete(f"{RESERVATIONS}/{web}")
    await wait_for(lambda: s.reason("thief") == "RequestedIPInUse", timeout=T, describe=s.describe)
    assert s.ips("web") == ["192.168.47.3"]
