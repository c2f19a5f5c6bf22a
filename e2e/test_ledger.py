"""The release ledger across failover and restart (issue 12, part 1), against the real API server.

Reuse order and same-name reclaim used to live only in the leader's memory: after a failover the next
Service got the lowest free address, often one released seconds before, and a Service re-created under its
old name lost its IP. The ledger in IPPool status carries both over; it is only a hint, so a ledger edited
to nonsense costs a Warning and changes no Service.
"""

from __future__ import annotations

import ipaddress
import random
import signal
from typing import Any

import pytest

from e2e.support import Scenario, settle

pytestmark = pytest.mark.cluster

T = 60.0


async def assigned(s: Scenario, wait_for: Any, name: str) -> str:
    ips: list[str] = await wait_for(lambda: s.ips(name), timeout=T, describe=lambda: s.describe(name))
    return ips[0]


def ledger_ips(s: Scenario, pool: str) -> list[str]:
    entries = ((s.pool(pool).get("status") or {}).get("releaseLedger") or {}).get("entries") or []
    return [str(e["ip"]) for e in entries]


def last_occurrence_order(ips: list[str]) -> list[str]:
    """The reuse order a ledger gives: each address at its last entry."""
    last = {ip: i for i, ip in enumerate(ips)}
    return [ip for i, ip in enumerate(ips) if last[ip] == i]


async def test_failover_mid_churn_keeps_reuse_order_and_same_name_reclaim(
    scenario: Scenario, wait_for: Any
) -> None:
    s = scenario
    pool = s.create_pool("p", ["192.168.90.0/27"])  # 32 addresses
    s.start(2)
    names = [f"s{i:02d}" for i in range(24)]
    for name in names:
        s.create_service(name)
    ips = {name: await assigned(s, wait_for, name) for name in names}
    every = {str(ip) for ip in ipaddress.ip_network("192.168.90.0/27")}
    never_used = sorted(every - set(ips.values()), key=ipaddress.ip_address)
    assert len(never_used) == 8

    # Churn: half of them deleted in a random order; the leader records each release.
    gone = random.Random(12).sample(names, 12)
    for name in gone:
        s.delete_service(name)
    freed = {ips[name] for name in gone}
    await wait_for(lambda: freed <= set(ledger_ips(s, pool)), timeout=T, describe=s.describe)
    order = last_occurrence_order(ledger_ips(s, pool))
    assert set(order) == freed  # only free addresses, each once for the order

    leader = int(await wait_for(
        lambda: s.leader_index() is not None and str(s.leader_index()), timeout=T, describe=s.describe
    ))
    s.controllers.kill(leader, signal.SIGKILL)
    # While no one leads: one deleted name comes back, and a burst of new Services arrives.
    reclaimer = gone[-1]
    s.create_service(reclaimer)
    burst = [f"n{i:02d}" for i in range(12)]
    for name in burst:
        s.create_service(name)

    # Same-name reclaim survived the failover: the re-created Service has its old address.
    assert await assigned(s, wait_for, reclaimer) == ips[reclaimer]
    assert s.leader_index() not in (None, leader)
    # The burst got the never-used addresses first, then the least recently released — what the old leader
    # would have handed out; without the ledger it got the lowest free ones, released seconds before.
    released_order = [ip for ip in order if ip != ips[reclaimer]]
    got = {name: await assigned(s, wait_for, name) for name in burst}
    assert set(got.values()) == set(never_used) | set(released_order[:4]), s.describe()
    # One at a time from here, so the exact order shows.
    for i, expected in enumerate(released_order[4:7]):
        name = f"m{i}"
        s.create_service(name)
        assert await assigned(s, wait_for, name) == expected
    survivors = [n for n in names if n not in gone]
    assert {n: s.ips(n) for n in survivors} == {n: [ips[n]] for n in survivors}


async def test_a_ledger_edited_to_nonsense_is_ignored_with_a_warning_and_moves_nothing(
    scenario: Scenario, wait_for: Any
) -> None:
    s = scenario
    pool = s.create_pool("p", ["192.168.91.0/29"])
    s.start(1)
    for name in ("a", "b", "c"):
        s.create_service(name)
    ips = {name: await assigned(s, wait_for, name) for name in ("a", "b", "c")}
    s.delete_service("c")
    await wait_for(lambda: ips["c"] in ledger_ips(s, pool), timeout=T, describe=s.describe)
    s.controllers.stop_all()

    nonsense = {
        "entries": [
            {"ip": "banana", "releasedAt": "2026-01-01T00:00:00Z", "service": "x/y"},
            {"ip": "10.99.0.1", "releasedAt": "2026-01-01T00:00:00Z", "service": "x/y"},
            {"ip": ips["a"], "releasedAt": "2026-01-01T00:00:00Z", "service": f"{s.ns}/b",
             "reason": "ServiceGone", "uid": "not-b"},  # a held address, "released" by another name
            {"ip": "192.168.91.7", "releasedAt": "2999-01-01T00:00:00Z", "service": "x/y"},
            {"ip": "192.168.91.6", "releasedAt": "whenever", "service": "nobody"},
        ],
        "truncated": True,
    }
    s.api.call("PATCH", s.pool_path(pool) + "/status", {"status": {"releaseLedger": nonsense}},
               content_type="application/merge-patch+json")
    before = {name: (s.ips(name), s.rv(name)) for name in ("a", "b")}

    s.start(1)

    def ledger_warning() -> str | None:
        selector = f"involvedObject.name={pool},reason=LedgerIgnored"
        items = s.api.get("/api/v1/namespaces/default/events", query={"fieldSelector": selector})["items"]
        return str(items[0]["message"]) if items and items[0]["type"] == "Warning" else None

    message = await wait_for(ledger_warning, timeout=T, describe=s.describe)
    assert "banana" in message and "outside the pool" in message and "in the future" in message
    s.create_service("d")
    ip_d = await assigned(s, wait_for, "d")
    assert ip_d not in (ips["a"], ips["b"])
    # b re-created is a new Service: the ledger's claim that b released a's address is never acted on.
    s.delete_service("b")
    s.create_service("b")
    assert await assigned(s, wait_for, "b") != ips["a"]
    await settle(1.5)
    assert (s.ips("a"), s.rv("a")) == before["a"], "a hand-edited ledger moved or rewrote a Service"
    # The leader writes back a ledger of what it knows, without the nonsense.
    await wait_for(lambda: "banana" not in ledger_ips(s, pool), timeout=T, describe=s.describe)
    assert ips["a"] not in ledger_ips(s, pool)
