"""controller/ipam/explain.py: each pool's verdict names the allocator rule that held, not one of its own."""

from __future__ import annotations

from controller.ipam import PoolSpec, ServiceAllocation, ServiceKey
from controller.ipam.explain import Verdict, explain
from controller.ipam.model import Selector

from .helpers import allocator, settle, svc


def verdicts(a, request, decision):  # type: ignore[no-untyped-def]
    return {v.pool: (v.verdict, v.reason) for v in explain(a, request, decision).pools}


def test_served_service_names_its_pool_and_why_every_other_is_skipped() -> None:
    a = allocator(
        PoolSpec("a-main", ("10.0.0.1-10.0.0.2",), created=1),
        PoolSpec("b-team", ("10.0.1.0/30",), created=2,
                 service_allocation=ServiceAllocation(namespaces=frozenset({"x"}))),
        PoolSpec("c-manual", ("10.0.2.0/30",), created=3, auto_assign=False),
        PoolSpec("d-off", ("10.0.3.0/30",), created=4, disabled=True),
        PoolSpec("e-bad", ("nonsense",), created=5),
        PoolSpec("f-overlap", ("10.0.0.2/32",), created=6),
        PoolSpec("g-v6", ("fd00::/126",), created=7),
        PoolSpec("h-labels", ("10.0.4.0/30",), created=8, service_allocation=ServiceAllocation(
            service_selectors=(Selector((("expose", "public"),)),))),
    )  # fmt: skip
    d, request = settle(a, svc("web"))
    got = verdicts(a, request, d)
    assert got["a-main"] == (Verdict.USED, "holds 10.0.0.1")
    assert got["b-team"] == (Verdict.SKIPPED, "namespace 'default' not in serviceAllocation.namespaces (x)")
    assert got["c-manual"][0] == Verdict.SKIPPED and got["c-manual"][1].startswith("autoAssign is false")
    assert got["d-off"] == (Verdict.SKIPPED, "disabled: no new allocations")
    assert got["e-bad"][0] == Verdict.SKIPPED and got["e-bad"][1].startswith("invalid: ")
    assert got["f-overlap"] == (Verdict.SKIPPED, "overlaps older pool 'a-main': no new allocations")
    assert got["g-v6"] == (Verdict.SKIPPED, "has no IPv4 addresses")
    assert got["h-labels"] == (
        Verdict.SKIPPED,
        "the Service's labels match no serviceAllocation.serviceSelectors",
    )
    # tried order first: the pool used leads the table
    assert explain(a, request, d).pools[0].pool == "a-main"


def test_exhausted_pool_is_why_a_service_is_pending() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.1/32",)))
    settle(a, svc("first"))
    d, request = settle(a, svc("second"))
    assert d.pending
    exp = explain(a, request, d)
    assert exp.reason == "PoolExhausted" and exp.ips == ()
    assert [(v.pool, v.verdict, v.reason) for v in exp.pools] == [
        ("p", Verdict.SKIPPED, "exhausted: no free IPv4 address")
    ]


def test_a_pool_that_could_serve_but_is_not_where_the_address_is_is_a_candidate() -> None:
    a = allocator(PoolSpec("a", ("10.0.0.0/30",)), PoolSpec("b", ("10.0.1.0/30",)))
    d, request = settle(a, svc("web"))
    got = verdicts(a, request, d)
    assert got == {
        "a": (Verdict.USED, "holds 10.0.0.0"),
        "b": (Verdict.CANDIDATE, "could serve it, but its address is in pool 'a'"),
    }


def test_requested_ip_held_by_another_names_the_holder() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30",)))
    settle(a, svc("holder"))
    d, request = settle(a, svc("asker", requested_ips=("10.0.0.0",)))
    exp = explain(a, request, d)
    assert exp.reason == "RequestedIPInUse" and exp.pending
    assert exp.holders == (("10.0.0.0", (ServiceKey("default", "holder"),)),)
    assert [(v.pool, v.verdict) for v in exp.pools] == [("p", Verdict.CANDIDATE)]


def test_requested_pool_and_requested_ips_skip_the_other_pools() -> None:
    a = allocator(PoolSpec("a", ("10.0.0.0/30",)), PoolSpec("gold", ("10.0.1.0/30",), auto_assign=False))
    d, request = settle(a, svc("web", requested_pool="gold"))
    assert verdicts(a, request, d) == {
        "gold": (Verdict.USED, "holds 10.0.1.0"),
        "a": (Verdict.SKIPPED, "the Service asks for pool 'gold' (annotation)"),
    }
    d, request = settle(a, svc("db", requested_ips=("10.0.0.3",)))
    assert verdicts(a, request, d)["gold"] == (Verdict.SKIPPED, "does not contain the requested IP 10.0.0.3")


def test_a_kept_orphan_is_in_no_pool() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30",)))
    d, request = settle(a, svc("web"))
    a.set_pools([PoolSpec("p", ("10.0.1.0/30",))])
    d, request = settle(a, request)
    exp = explain(a, request, d)
    assert exp.reason == "IPOutsidePool" and exp.ips == ("10.0.0.0",) and exp.pool is None
    assert [(v.pool, v.verdict) for v in exp.pools] == [("p", Verdict.CANDIDATE)]
