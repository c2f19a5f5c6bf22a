"""Issue 9: each defect an independent review found, as the smallest scenario that shows it.

Every test here failed on the allocator before its fix. Restart-equivalence checks build a fresh allocator
that adopts the statuses written so far, as a new leader does, and compare what it decides with the live one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from controller.ipam import (
    Allocator,
    Decision,
    PoolSpec,
    Port,
    Reason,
    Selector,
    ServiceAllocation,
    ServiceKey,
    ServiceRequest,
)
from controller.ipam.addresses import AddressError, parse_ip
from controller.ipam.pools import choose_pools, validate_pool
from controller.ipam.sharing import SharingTerms, compatible

from .helpers import allocator, settle, svc

V4 = PoolSpec("p4", ("10.0.0.0/29",))


def restarted(pools: Iterable[PoolSpec], statuses: Iterable[ServiceRequest]) -> Allocator:
    """A new leader: a fresh allocator that knows the pools and adopts what Service status shows."""
    fresh = allocator(*pools)
    fresh.adopt(statuses)
    return fresh


def essence(d: Decision) -> tuple[tuple[str, ...], Reason, bool]:
    return d.ips, d.reason, d.pending


# ---------------------------------------------------------------------------------------------- defect 1
def test_requested_ip_is_checked_against_every_holder_not_only_the_first() -> None:
    a = allocator(V4)
    _, holder = settle(a, svc("a", sharing_key="k", ports=(("TCP", 80),), requested_ips=("10.0.0.1",)))
    d, sharer = settle(a, svc("b", sharing_key="k", ports=(("TCP", 443),), requested_ips=("10.0.0.1",)))
    assert d.ips == ("10.0.0.1",)
    d = a.ensure(svc("c", sharing_key="k", ports=(("TCP", 443),), requested_ips=("10.0.0.1",)))
    assert d.ips == () and d.pending and d.reason == Reason.REQUESTED_IP_IN_USE
    assert "in use by default/b" in d.message and "TCP/443" in d.message
    assert set(a.holders("10.0.0.1")) == {holder.key, sharer.key}


# ---------------------------------------------------------------------------------------------- defect 3
def test_pool_annotation_edited_without_a_leader_moves_the_ip_as_a_live_leader_would() -> None:
    pools = (PoolSpec("p1", ("10.0.0.0/30",)), PoolSpec("p2", ("10.0.1.0/30",)))
    live = allocator(*pools)
    _, r = settle(live, svc("s"))
    assert r.current_ips == ("10.0.0.0",)
    edited = replace(r, requested_pool="p2")
    fresh = restarted(pools, [edited])
    after_restart = fresh.ensure(edited)
    assert after_restart.ips == ("10.0.1.0",) and after_restart.reason == Reason.ALLOCATED
    assert essence(after_restart) == essence(live.ensure(edited))


def test_adopted_ip_of_a_deleted_requested_pool_is_still_retained_as_an_orphan() -> None:
    # No pool contains the IP: the granting pool is unknown, and the request's pool is the best guess.
    r = svc("s", requested_pool="gone", current_ips=("10.9.0.1",))
    fresh = restarted([V4], [r])
    d = fresh.ensure(r)
    assert d.ips == ("10.9.0.1",) and d.reason == Reason.IP_OUTSIDE_POOL


# ---------------------------------------------------------------------------------------------- defect 4
DUAL = PoolSpec("d", ("10.0.0.0/30", "fd00::1/128"))


def test_require_dual_stack_without_the_second_family_holds_nothing() -> None:
    a = allocator(DUAL)
    settle(a, svc("v6user", families=("IPv6",)))
    _, r = settle(a, svc("s"))
    assert r.current_ips == ("10.0.0.0",)
    d = a.ensure(replace(r, families=("IPv4", "IPv6"), family_policy="RequireDualStack"))
    assert d.ips == () and d.pending and d.released == ("10.0.0.0",)
    assert a.assignment(r.key) == () and a.holders("10.0.0.0") == ()


def test_require_dual_stack_requested_ipv6_in_use_holds_nothing() -> None:
    pool = PoolSpec("d", ("10.0.0.0/30", "fd00::/126"))
    a = allocator(pool)
    settle(a, svc("t", families=("IPv6",), requested_ips=("fd00::2",)))
    dual = {"families": ("IPv4", "IPv6"), "policy": "RequireDualStack"}
    d, r = settle(a, svc("s", requested_ips=("10.0.0.1", "fd00::1"), **dual))  # type: ignore[arg-type]
    assert d.ips == ("10.0.0.1", "fd00::1")
    d = a.ensure(replace(r, requested_ips=("10.0.0.1", "fd00::2")))
    assert d.ips == () and d.pending and d.reason == Reason.REQUESTED_IP_IN_USE
    assert set(d.released) == {"10.0.0.1", "fd00::1"} and a.holders("10.0.0.1") == ()


# ---------------------------------------------------------------------------------------------- defect 5
def test_prefer_dual_stack_picks_a_pool_serving_the_first_listed_family() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30",)), PoolSpec("q", ("fd00::/126",)))
    d = a.ensure(svc("s", families=("IPv6", "IPv4"), policy="PreferDualStack"))
    assert d.ips == ("fd00::1",) and d.pool == "q"
    d = a.ensure(svc("t", families=("IPv4", "IPv6"), policy="PreferDualStack"))
    assert d.ips == ("10.0.0.0",) and d.pool == "p"


# ---------------------------------------------------------------------------------------------- defect 6
def test_the_sharer_whose_ports_changed_moves_with_or_without_a_restart() -> None:
    shared = {"sharing_key": "k", "requested_ips": ()}
    live = allocator(V4)
    _, b = settle(live, svc("b", created=1.0, ports=(("TCP", 443),), **shared))  # type: ignore[arg-type]
    _, a = settle(live, svc("a", created=2.0, ports=(("TCP", 80),), **shared))  # type: ignore[arg-type]
    assert a.current_ips == b.current_ips == ("10.0.0.0",)
    # B's ports are edited to overlap A's; B's condition still shows the older generation.
    b_edited = replace(b, ports=frozenset({Port("TCP", 80)}), changed_since_grant=True)

    fresh = restarted([V4], [a, b_edited])
    restart_a, restart_b = fresh.ensure(a), fresh.ensure(b_edited)
    live_a, live_b = live.ensure(a), live.ensure(b_edited)
    assert live_a.ips == ("10.0.0.0",) and live_b.ips != ("10.0.0.0",)
    assert essence(restart_a) == essence(live_a)
    assert essence(restart_b) == essence(live_b)
    assert restart_b.reason == Reason.DUPLICATE_IP and "default/a" in restart_b.message


def test_without_a_change_the_oldest_claim_still_wins() -> None:
    x = svc("x", created=1.0, current_ips=("10.0.0.1",))
    y = svc("y", created=2.0, current_ips=("10.0.0.1",))
    fresh = allocator(V4)
    assert fresh.adopt([y, x]).duplicates == {y.key: x.key}
    both_changed = [replace(x, changed_since_grant=True), replace(y, changed_since_grant=True)]
    assert allocator(V4).adopt(both_changed).duplicates == {y.key: x.key}
    assert allocator(V4).adopt([replace(x, changed_since_grant=True), y]).duplicates == {x.key: y.key}


# ---------------------------------------------------------------------------------------------- defect 7
def test_partial_dual_stack_duplicate_reads_duplicate_ip() -> None:
    pool = PoolSpec("d", ("10.0.0.0/30", "fd00::/126"))
    older = svc("old", created=1.0, current_ips=("10.0.0.1",))
    newer = svc(
        "new",
        created=2.0,
        families=("IPv4", "IPv6"),
        policy="PreferDualStack",
        current_ips=("10.0.0.1", "fd00::1"),
    )
    fresh = restarted([pool], [newer, older])
    d = fresh.ensure(newer)
    assert d.reason == Reason.DUPLICATE_IP and not d.pending
    assert "fd00::1" in d.ips and "10.0.0.1" not in d.ips and len(d.ips) == 2
    assert fresh.holders("10.0.0.1") == (older.key,)


# ---------------------------------------------------------------------------------------------- defect 8
def _two_taken_one_released(a: Allocator) -> None:
    _, first = settle(a, svc("a"))
    settle(a, svc("b"))
    a.release(first.key)  # 10.0.0.0 was released moments ago


def test_reuse_order_survives_a_pool_that_was_briefly_invalid() -> None:
    pool = PoolSpec("p", ("10.0.0.0/30",))
    a = allocator(pool)
    _two_taken_one_released(a)
    a.set_pools([replace(pool, addresses=("10.0.0.0/33",))])
    assert a.pool_status("p").invalid is not None  # type: ignore[union-attr]
    a.set_pools([pool])
    assert a.ensure(svc("c")).ips == ("10.0.0.2",)
    assert a.ensure(svc("d")).ips == ("10.0.0.3",)
    assert a.ensure(svc("e")).ips == ("10.0.0.0",)


def test_reuse_order_survives_a_pool_deleted_and_recreated() -> None:
    pool = PoolSpec("p", ("10.0.0.0/30",))
    a = allocator(pool)
    _two_taken_one_released(a)
    a.set_pools([])
    a.set_pools([replace(pool, created=5.0)])
    assert a.ensure(svc("c")).ips == ("10.0.0.2",)


def test_reuse_order_follows_an_address_into_another_pool() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30",)))
    _two_taken_one_released(a)
    a.set_pools([PoolSpec("q", ("10.0.0.0/30",))])
    assert a.ensure(svc("c")).ips == ("10.0.0.2",)


# ---------------------------------------------------------------------------------------------- defect 9
def test_avoid_buggy_ips_on_a_huge_pool_is_a_handful_of_intervals() -> None:
    spec = PoolSpec("huge", ("16.0.0.0/4",), avoid_buggy_ips=True)
    ranges, invalid = validate_pool(spec)
    assert invalid is None and len(ranges) == 1  # not one range per /24
    a = allocator(spec)
    pool = a._pools["huge"]
    assert len(pool.free["IPv4"].intervals()) <= 2
    status = a.pool_status("huge")
    assert status is not None and status.ipv4.total == 2**28 - 2 * 2**20
    assert not pool.contains("IPv4", parse_ip("16.0.1.0")[1])
    assert not pool.contains("IPv4", parse_ip("16.0.0.255")[1])
    assert pool.contains("IPv4", parse_ip("16.0.1.1")[1])
    assert a.ensure(svc("s")).ips == ("16.0.0.1",)


def test_avoid_buggy_allocation_steps_over_every_zero_and_broadcast() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.250-10.0.2.3",), avoid_buggy_ips=True))
    got = [a.ensure(svc(f"s{i}")).ips[0] for i in range(8)]
    assert got[:5] == ["10.0.0.250", "10.0.0.251", "10.0.0.252", "10.0.0.253", "10.0.0.254"]
    assert got[5:] == ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    st = a.pool_status("p")
    assert st is not None and st.ipv4.total == 5 + 254 + 3 and st.ipv4.assigned == 8


def test_a_pool_change_rebuilds_only_that_pool() -> None:
    big = PoolSpec("big", ("16.0.0.0/8",), avoid_buggy_ips=True)
    small = PoolSpec("small", ("10.0.0.0/30",))
    a = allocator(big, small)
    before = a._pools["big"]
    a.set_pools([big, replace(small, addresses=("10.0.0.0/29",))])
    assert a._pools["big"] is before


def test_conflict_of_avoid_buggy_pools_looks_at_usable_addresses_only() -> None:
    # The two pools share only 10.0.1.0, which the avoiding pool never hands out.
    a = allocator(
        PoolSpec("old", ("10.0.0.0/24", "10.0.1.0/32"), created=1.0),
        PoolSpec("new", ("10.0.1.0/24",), avoid_buggy_ips=True, created=2.0),
    )
    assert a.pool_status("new").conflict_with is None  # type: ignore[union-attr]
    b = allocator(
        PoolSpec("old", ("10.0.1.1/32",), created=1.0),
        PoolSpec("new", ("10.0.1.0/24",), avoid_buggy_ips=True, created=2.0),
    )
    assert b.pool_status("new").conflict_with == "old"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- defect 10
def test_local_policy_without_selector_shares_with_a_cluster_service() -> None:
    # MetalLB's backend key is the selector for Local and "" for Cluster: an empty selector matches Cluster.
    tcp, udp = frozenset({Port("TCP", 80)}), frozenset({Port("UDP", 53)})
    assert compatible(SharingTerms("k", tcp, ""), SharingTerms("k", udp, None))
    assert not compatible(SharingTerms("k", tcp, "app=web"), SharingTerms("k", udp, None))


def test_priority_zero_is_no_priority_as_in_metallb() -> None:
    def restricted(name: str, priority: int | None, block: str) -> PoolSpec:
        return PoolSpec(name, (block,), service_allocation=ServiceAllocation(priority=priority))

    a = allocator(
        restricted("a-unset", None, "10.0.1.0/30"),
        restricted("b-zero", 0, "10.0.2.0/30"),
        restricted("c-five", 5, "10.0.3.0/30"),
    )
    order = [p.name for p in choose_pools(a._pools, svc("s"))]
    assert order[0] == "c-five" and set(order[1:]) == {"a-unset", "b-zero"}
    assert order == ["c-five", "a-unset", "b-zero"]


def test_adding_the_missing_family_respects_service_allocation() -> None:
    only_web = ServiceAllocation(service_selectors=(Selector(match_labels=(("app", "web"),)),))
    pool = PoolSpec("q", ("10.0.0.0/30",), service_allocation=only_web)
    a = allocator(pool)
    d, r = settle(a, svc("s", families=("IPv4", "IPv6"), policy="PreferDualStack", labels=(("app", "web"),)))
    assert d.ips == ("10.0.0.0",) and d.pending
    a.set_pools([replace(pool, addresses=("10.0.0.0/30", "fd00::/126"))])
    relabelled = replace(r, labels=(("app", "db"),))
    d = a.ensure(relabelled)
    assert d.ips == ("10.0.0.0",) and d.pending and d.reason == Reason.FAMILY_UNAVAILABLE
    assert "serviceAllocation" in d.message
    assert a.ensure(r).ips == ("10.0.0.0", "fd00::1")


def test_zone_id_in_a_requested_ip_is_refused() -> None:
    try:
        parse_ip("fd00::9%eth0")
    except AddressError as exc:
        assert "zone" in str(exc)
    else:
        raise AssertionError("fd00::9%eth0 was accepted")
    a = allocator(PoolSpec("p6", ("fd00::/120",)))
    d = a.ensure(svc("s", families=("IPv6",), requested_ips=("fd00::9%eth0",)))
    assert d.ips == () and d.pending and "zone" in d.message
    assert a.holders("fd00::9") == ()



# ---------------------------------------------------------------------------------------------- defect 2
def test_an_input_problem_adds_nothing_but_lets_go_of_what_may_no_longer_be_kept() -> None:
    # The edit that made the problem also made B's ports clash with A on the shared IP (A2's finding 1).
    a = allocator(V4)
    settle(a, svc("a", created=1.0, sharing_key="k", ports=(("TCP", 80),)))
    _, b = settle(a, svc("b", created=2.0, sharing_key="k", ports=(("TCP", 443),)))
    assert a.holders("10.0.0.0") == (ServiceKey("default", "a"), b.key)
    broken = replace(b, ports=frozenset({Port("TCP", 80)}), problem="annotations disagree")
    d = a.ensure(broken)
    assert d.ips == () and d.pending and d.reason == Reason.CONFLICTING_REQUESTS
    assert d.message == "annotations disagree" and d.lost is not None and "default/a" in d.lost
    assert a.holders("10.0.0.0") == (ServiceKey("default", "a"),)
    # without a clash it keeps what it has, and adds nothing
    _, c = settle(a, svc("c"))
    d = a.ensure(replace(c, families=("IPv4", "IPv6"), family_policy="PreferDualStack", problem="bad"))
    assert d.ips == c.current_ips and d.pending and d.lost is None


def test_adding_the_missing_family_respects_auto_assign() -> None:
    # A2's finding 2: the kept IP's pool adds the other family only if it would serve this Service now.
    a = allocator(PoolSpec("manual", ("10.0.0.0/30", "fd00::/125"), auto_assign=False))
    dual = {"families": ("IPv4", "IPv6"), "policy": "PreferDualStack"}
    d, r = settle(a, svc("s", requested_ips=("10.0.0.1",), **dual))  # type: ignore[arg-type]
    assert d.ips == ("10.0.0.1",)
    d = a.ensure(replace(r, requested_ips=()))
    assert d.ips == ("10.0.0.1",) and d.pending and "autoAssign" in d.message
    assert a.ensure(replace(r, requested_ips=(), requested_pool="manual")).ips == ("10.0.0.1", "fd00::1")


def test_service_allocation_pools_come_before_the_first_family_rule() -> None:
    # A2's finding 3: MetalLB tries the pools selecting the Service first, the plain ones only after.
    prio2 = ServiceAllocation(priority=2)
    matched = PoolSpec("c-matched-v4", ("10.0.0.12-10.0.0.15",), service_allocation=prio2)
    a = allocator(PoolSpec("b-plain-v6", ("fd00::/125",)), matched)
    assert a.ensure(svc("s", families=("IPv6", "IPv4"), policy="PreferDualStack")).ips == ("10.0.0.12",)
    both = PoolSpec("a-plain-both", ("10.0.1.0/30", "fd00:1::/125"))
    b = allocator(both, matched)
    assert b.ensure(svc("s", families=("IPv4", "IPv6"), policy="PreferDualStack")).ips == ("10.0.0.12",)


# ------------------------------------------------------------- found by the allocator property (2026-12-02)
def test_require_dual_stack_refusal_names_the_same_address_whatever_was_held() -> None:
    """A retained orphan kept the first pass from asking for its family, so the refusal named the other
    family's address; the next pass, holding nothing, named the orphan's. Two condition writes for one
    edit: the decision was not a fixed point (hypothesis seed 135648998733441064514626123068933487485)."""
    a = allocator(PoolSpec("a", ("10.0.0.2", "fd00::/125")))
    _, r = settle(a, svc("s", requested_ips=("10.0.0.2",)))
    a.set_pools([PoolSpec("a", ("10.0.0.0", "fd00::/125"))])
    d, r = settle(a, r)
    assert d.reason == Reason.IP_OUTSIDE_POOL and d.ips == ("10.0.0.2",)
    dual = {"families": ("IPv6", "IPv4"), "family_policy": "RequireDualStack"}
    edited = replace(r, requested_ips=("fd00::", "10.0.0.2"), **dual)  # type: ignore[arg-type]
    first, edited = settle(a, edited)
    again = a.ensure(edited)
    assert first.ips == again.ips == ()
    assert (again.reason, again.message, again.pending) == (first.reason, first.message, first.pending)
    fresh = allocator(PoolSpec("a", ("10.0.0.0", "fd00::/125"))).ensure(replace(edited, current_ips=()))
    assert fresh.message == first.message  # as a new leader would say it
