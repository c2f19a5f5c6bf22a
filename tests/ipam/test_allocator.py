from dataclasses import replace

from controller.ipam import AllocationOrder, PoolSpec, Port, Reason, ServiceAllocation, ServiceKey

from .helpers import Clock, allocator, settle, svc

P4 = PoolSpec("p4", ("10.0.0.0/30",))
P46 = PoolSpec("p46", ("10.0.0.0/30", "fd00::/126"))


def test_first_allocation_lowest_never_used_and_fixed_point() -> None:
    a = allocator(P4)
    d, r = settle(a, svc("a"))
    assert d.ips == ("10.0.0.0",) and d.reason == Reason.ALLOCATED and d.changed and not d.pending
    assert d.pool == "p4"
    again = a.ensure(r)
    assert again.ips == d.ips and not again.changed and again.released == ()
    assert a.assignment(r.key) == ("10.0.0.0",)
    assert a.holders("10.0.0.0") == (r.key,)


def test_least_recently_released_does_not_reuse_a_freed_ip_first() -> None:
    a = allocator(P4)
    _, ra = settle(a, svc("a"))
    settle(a, svc("b"))
    a.release(ra.key)
    d, _ = settle(a, svc("c"))
    assert d.ips == ("10.0.0.2",)
    settle(a, svc("d"))
    d, _ = settle(a, svc("e"))
    assert d.ips == ("10.0.0.0",)


def test_lowest_order_reuses_the_freed_ip() -> None:
    a = allocator(replace(P4, allocation_order=AllocationOrder.LOWEST))
    _, ra = settle(a, svc("a"))
    settle(a, svc("b"))
    a.release(ra.key)
    d, _ = settle(a, svc("c"))
    assert d.ips == ("10.0.0.0",)


def test_exhaustion_is_pending_and_release_names_who_to_retry() -> None:
    a = allocator(PoolSpec("tiny", ("10.0.0.1/32",)))
    _, ra = settle(a, svc("a"))
    d = a.ensure(svc("b"))
    assert d.ips == () and d.pending and d.reason == Reason.POOL_EXHAUSTED
    assert "no free IPv4 address in pools 'tiny'" in d.message
    assert a.pending() == {ServiceKey("default", "b")}
    assert a.pool_status("tiny") is not None and a.pool_status("tiny").exhausted  # type: ignore[union-attr]
    assert a.release(ra.key) == {ServiceKey("default", "b")}
    d = a.ensure(svc("b"))
    assert d.ips == ("10.0.0.1",) and not d.pending and a.pending() == frozenset()


def test_no_pool_and_family_unavailable() -> None:
    a = allocator(PoolSpec("manual", ("10.0.0.0/30",), auto_assign=False))
    d = a.ensure(svc("a"))
    assert (
        d.reason == Reason.NO_POOL
        and d.pending
        and d.message == "no pool with autoAssign serves this Service"
    )
    d = a.ensure(svc("b", requested_pool="ghost"))
    assert d.reason == Reason.NO_POOL and d.message == "requested pool 'ghost' does not exist"
    d = a.ensure(svc("c", requested_pool="manual", families=("IPv6",)))
    assert d.reason == Reason.FAMILY_UNAVAILABLE and d.message == "no pool among 'manual' has IPv6 addresses"
    d = a.ensure(svc("d", requested_pool="manual"))
    assert d.reason == Reason.ALLOCATED and d.ips == ("10.0.0.0",)


def test_disabled_pool_keeps_existing_but_makes_no_new_allocations() -> None:
    a = allocator(P4)
    _, r = settle(a, svc("a"))
    change = a.set_pools([replace(P4, disabled=True)])
    assert change.orphaned == frozenset() and change.retry == frozenset()
    assert a.ensure(r).ips == r.current_ips
    d = a.ensure(svc("b"))
    assert d.reason == Reason.NO_POOL and d.pending
    d = a.ensure(svc("c", requested_pool="p4"))
    assert d.message == "requested pool 'p4' is disabled"
    change = a.set_pools([P4])
    assert change.retry == {ServiceKey("default", "b"), ServiceKey("default", "c")}


def test_single_stack_takes_the_first_family_only() -> None:
    a = allocator(P46)
    d, _ = settle(a, svc("a", families=("IPv6", "IPv4")))
    assert d.ips == ("fd00::1",)


def test_require_dual_stack_is_both_or_nothing() -> None:
    a = allocator(PoolSpec("v4", ("10.0.0.0/30",)), PoolSpec("v6", ("fd00::/126",)))
    d = a.ensure(svc("a", families=("IPv4", "IPv6"), policy="RequireDualStack"))
    assert d.ips == () and d.pending and d.reason == Reason.FAMILY_UNAVAILABLE
    assert d.message == "no pool among 'v4', 'v6' has both IPv4 and IPv6 addresses"
    a = allocator(P46)
    d = a.ensure(svc("a", families=("IPv4", "IPv6"), policy="RequireDualStack"))
    assert d.ips == ("10.0.0.0", "fd00::1")


def test_prefer_dual_stack_takes_what_it_can_and_adds_the_rest_later_without_touching_it() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/30", "fd00::1/128")))
    _, blocker = settle(a, svc("blocker", families=("IPv6",)))
    d, r = settle(a, svc("a", families=("IPv4", "IPv6"), policy="PreferDualStack"))
    assert d.ips == ("10.0.0.0",) and d.pending and d.reason == Reason.POOL_EXHAUSTED
    # fixed point while the v6 family stays unavailable: no oscillation between one and two IPs
    again = a.ensure(r)
    assert again.ips == d.ips and not again.changed
    assert a.release(blocker.key) == {r.key}
    d2 = a.ensure(r)
    assert d2.ips == ("10.0.0.0", "fd00::1") and d2.changed and not d2.pending and d2.released == ()


def test_prefer_dual_stack_on_single_stack_cluster_is_stable() -> None:
    # The API server reduced ipFamilies to one family: never add the other one (MetalLB #2726).
    a = allocator(P46)
    d, r = settle(a, svc("a", families=("IPv4",), policy="PreferDualStack"))
    assert d.ips == ("10.0.0.0",) and not d.pending
    for _ in range(3):
        d = a.ensure(r)
        assert d.ips == ("10.0.0.0",) and not d.changed


def test_dropping_a_family_releases_only_that_ip() -> None:
    a = allocator(P46)
    _, r = settle(a, svc("a", families=("IPv4", "IPv6"), policy="RequireDualStack"))
    d = a.ensure(replace(r, families=("IPv4",), family_policy="SingleStack"))
    assert d.ips == ("10.0.0.0",) and d.released == ("fd00::1",) and d.changed


def test_requested_ip_honoured_in_use_and_outside_pool() -> None:
    a = allocator(P4, PoolSpec("manual", ("10.1.0.0/30",), auto_assign=False))
    d, ra = settle(a, svc("a", requested_ips=("10.0.0.2",)))
    assert d.ips == ("10.0.0.2",)
    d = a.ensure(svc("b", requested_ips=("10.0.0.2",)))
    assert d.reason == Reason.REQUESTED_IP_IN_USE and d.pending and d.ips == ()
    assert d.message == "requested IP 10.0.0.2 is in use by default/a (no sharing key)"
    d = a.ensure(svc("c", requested_ips=("10.9.9.9",)))
    assert (
        d.reason == Reason.REQUESTED_IP_OUTSIDE_POOL
        and d.message == "requested IP 10.9.9.9 is not in any pool"
    )
    d = a.ensure(svc("d", requested_ips=("10.1.0.1",)))
    assert d.ips == ("10.1.0.1",)  # autoAssign=false pools serve explicit requests
    d = a.ensure(svc("e", requested_ips=("10.1.0.2",), requested_pool="p4"))
    assert d.reason == Reason.REQUESTED_IP_OUTSIDE_POOL
    assert d.message == "requested IP 10.1.0.2 is not in usable pool 'p4'"
    assert a.release(ra.key) == {ServiceKey("default", "b")}


def test_changing_requested_ip_moves_the_service() -> None:
    a = allocator(P4)
    _, r = settle(a, svc("a"))
    d = a.ensure(replace(r, requested_ips=("10.0.0.3",)))
    assert d.ips == ("10.0.0.3",) and d.released == ("10.0.0.0",)


def test_conflicting_requests_change_nothing() -> None:
    a = allocator(P46)
    _, r = settle(a, svc("a"))
    for bad, message in [
        (("10.0.0.1", "10.0.0.2"), "two IPv4 addresses requested (10.0.0.1 and 10.0.0.2)"),
        (("fd00::1",), "requested IP fd00::1 is IPv6, but the Service's IP families are IPv4"),
        (("nope",), "requested IP: 'nope' is not an IP address"),
    ]:
        d = a.ensure(replace(r, requested_ips=bad))
        assert d.reason == Reason.CONFLICTING_REQUESTS and d.message == message
        assert d.ips == r.current_ips and not d.changed
    d = a.ensure(svc("b", families=("IPv4", "IPv6"), policy="RequireDualStack", requested_ips=("10.0.0.1",)))
    assert d.message == "RequireDualStack needs one requested IP per family"


def test_requested_pool_change_moves_but_pool_edits_do_not() -> None:
    other = PoolSpec("other", ("10.2.0.0/30",))
    a = allocator(P4, other)
    _, r = settle(a, svc("a", requested_pool="p4"))
    d = a.ensure(replace(r, requested_pool="other"))
    assert d.ips == ("10.2.0.0",) and d.released == ("10.0.0.0",) and d.pool == "other"


def test_sharing_key_shares_an_ip_when_compatible() -> None:
    a = allocator(P4)
    d1, r1 = settle(a, svc("a", sharing_key="k", ports=(("TCP", 80),)))
    d2, r2 = settle(a, svc("b", sharing_key="k", ports=(("UDP", 53),)))
    assert d1.ips == d2.ips == ("10.0.0.0",)
    assert set(a.holders("10.0.0.0")) == {r1.key, r2.key}
    d3, _ = settle(a, svc("c", sharing_key="k", ports=(("TCP", 80),)))
    assert d3.ips == ("10.0.0.1",)
    # releasing one sharer frees nothing
    a.release(r1.key)
    assert a.holders("10.0.0.0") == (r2.key,)
    assert a.pool_status("p4").ipv4.assigned == 2  # type: ignore[union-attr]


def test_requested_shared_ip_with_local_policy_needs_same_backends() -> None:
    a = allocator(P4)
    settle(a, svc("a", sharing_key="k", backend_key="app=web", requested_ips=("10.0.0.1",)))
    d = a.ensure(
        svc("b", sharing_key="k", ports=(("UDP", 53),), backend_key="app=db", requested_ips=("10.0.0.1",))
    )
    assert d.reason == Reason.REQUESTED_IP_IN_USE
    assert d.message.endswith("(externalTrafficPolicy Local needs identical selectors)")
    d = a.ensure(
        svc("c", sharing_key="k", ports=(("UDP", 53),), backend_key="app=web", requested_ips=("10.0.0.1",))
    )
    assert d.ips == ("10.0.0.1",)


def test_port_change_that_breaks_sharing_moves_the_changed_service_only() -> None:
    a = allocator(P4)
    _, r1 = settle(a, svc("a", sharing_key="k", ports=(("TCP", 80),)))
    _, r2 = settle(a, svc("b", sharing_key="k", ports=(("UDP", 53),)))
    d = a.ensure(replace(r2, ports=r1.ports))
    assert d.ips == ("10.0.0.1",) and d.released == ("10.0.0.0",)
    assert a.assignment(r1.key) == ("10.0.0.0",)


def test_sharing_key_change_on_a_sole_holder_keeps_the_ip() -> None:
    a = allocator(P4)
    _, r = settle(a, svc("a", sharing_key="k"))
    d = a.ensure(replace(r, sharing_key="other"))
    assert d.ips == r.current_ips and not d.changed


def test_service_allocation_pool_is_preferred_and_priority_orders() -> None:
    a = allocator(
        PoolSpec("general", ("10.0.0.0/30",)),
        PoolSpec(
            "team", ("10.5.0.0/30",), service_allocation=ServiceAllocation(namespaces=frozenset({"team"}))
        ),
        PoolSpec(
            "team-first",
            ("10.6.0.0/30",),
            service_allocation=ServiceAllocation(priority=1, namespaces=frozenset({"team"})),
        ),
    )
    assert settle(a, svc("a", ns="team"))[0].ips == ("10.6.0.0",)
    assert settle(a, svc("b", ns="other"))[0].ips == ("10.0.0.0",)


def test_orphan_retained_by_default_and_moved_on_request() -> None:
    a = allocator(P4, PoolSpec("spare", ("10.3.0.0/30",)))
    _, r = settle(a, svc("a"))
    change = a.set_pools([PoolSpec("spare", ("10.3.0.0/30",))])
    assert change.orphaned == {r.key}
    assert a.orphaned() == {r.key}
    d = a.ensure(r)
    assert d.ips == r.current_ips and d.reason == Reason.IP_OUTSIDE_POOL and not d.pending and not d.changed
    assert d.message == "10.0.0.0 is outside every pool; kept"
    assert d.pool is None
    d = a.ensure(replace(r, reassign_orphans=True))
    assert d.ips == ("10.3.0.0",) and d.reason == Reason.ALLOCATED and d.released == ("10.0.0.0",)
    assert a.orphaned() == frozenset()


def test_pool_back_clears_orphan_and_asks_for_a_retry() -> None:
    a = allocator(P4)
    _, r = settle(a, svc("a"))
    a.set_pools([])
    change = a.set_pools([P4])
    assert change.orphaned == frozenset() and r.key in change.retry
    assert a.ensure(r).reason == Reason.ALLOCATED


def test_pool_shrink_only_orphans_the_owners_outside() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/29",)))
    reqs = [settle(a, svc(f"s{i}"))[1] for i in range(4)]
    change = a.set_pools([PoolSpec("p", ("10.0.0.0/31", "10.0.0.4/30"))])
    assert change.orphaned == {reqs[2].key, reqs[3].key}
    for r in reqs:
        assert a.ensure(r).ips == r.current_ips


def test_pool_growth_retries_pending() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/32",)))
    settle(a, svc("a"))
    a.ensure(svc("b"))
    change = a.set_pools([PoolSpec("p", ("10.0.0.0/31",))])
    assert change.retry == {ServiceKey("default", "b")}
    assert a.ensure(svc("b")).ips == ("10.0.0.1",)


def test_overlapping_newer_pool_conflicts_keeps_its_ips_and_clears_itself() -> None:
    old = PoolSpec("old", ("10.0.0.0/30",), created=1.0)
    new = PoolSpec("new", ("10.0.0.2/31", "10.9.0.0/30"), created=2.0)
    a = allocator(new)
    _, r = settle(a, svc("a"))
    assert r.current_ips == ("10.0.0.2",)
    change = a.set_pools([old, new])
    assert change.conflicts == {"new": "old"} and change.orphaned == frozenset()
    assert a.pool_status("new").conflict_with == "old"  # type: ignore[union-attr]
    assert a.ensure(r).ips == r.current_ips
    # the older pool does not hand out the overlapping IP already taken
    got = [settle(a, svc(f"x{i}"))[0].ips for i in range(3)]
    assert got == [("10.0.0.0",), ("10.0.0.1",), ("10.0.0.3",)]
    d = a.ensure(svc("y", requested_pool="new"))
    assert d.reason == Reason.NO_POOL and d.message == "requested pool 'new' overlaps older pool 'old'"
    change = a.set_pools([new])
    assert change.conflicts == {} and ServiceKey("default", "y") in change.retry


def test_invalid_pool_reported() -> None:
    a = allocator()
    change = a.set_pools([PoolSpec("bad", ("10.0.0.1/24",))])
    assert change.invalid == {"bad": "CIDR '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"}
    st = a.pool_status("bad")
    assert st is not None and st.invalid and st.ipv4.total == 0
    assert a.pool_status("ghost") is None


def test_ipv6_slash64_counts_are_exact() -> None:
    a = allocator(PoolSpec("big", ("fd00:1::/64", "10.0.0.0/12")))
    settle(a, svc("a", families=("IPv6",)))
    st = a.pool_status("big")
    assert st is not None
    assert st.ipv6.total == 2**64 - 1 and st.ipv6.assigned == 1 and st.ipv6.available == 2**64 - 2
    assert st.ipv4.total == 2**20


def test_adopt_registers_oldest_first_and_reports_duplicates() -> None:
    a = allocator(P4)
    older = svc("old", created=1.0, current_ips=("10.0.0.1",))
    newer = svc("new", created=2.0, current_ips=("10.0.0.1",))
    broken = svc("broken", created=3.0, current_ips=("not-an-ip", "10.0.0.2"))
    result = a.adopt([newer, broken, older])
    assert result.adopted == {older.key, broken.key}
    assert result.duplicates == {newer.key: older.key}
    assert result.invalid == {broken.key: "status IP 'not-an-ip': 'not-an-ip' is not an IP address"}
    assert a.pending() == frozenset()
    d = a.ensure(newer)
    assert d.reason == Reason.DUPLICATE_IP and d.ips == ("10.0.0.0",) and d.changed
    assert "10.0.0.1 is also claimed by default/old" in d.message
    assert a.ensure(older).ips == ("10.0.0.1",)


def test_adopt_duplicate_tie_broken_by_uid_and_sharing_claims_both_kept() -> None:
    a = allocator(P4)
    x = svc("x", uid="b", created=1.0, current_ips=("10.0.0.1",))
    y = svc("y", uid="a", created=1.0, current_ips=("10.0.0.1",))
    assert a.adopt([x, y]).duplicates == {x.key: y.key}
    b = allocator(P4)
    s1 = svc("s1", sharing_key="k", current_ips=("10.0.0.1",))
    s2 = svc("s2", sharing_key="k", ports=(("UDP", 1),), current_ips=("10.0.0.1",))
    assert b.adopt([s1, s2]).adopted == {s1.key, s2.key}


def test_adopt_keeps_orphans_and_never_allocates() -> None:
    a = allocator(P4)
    r = svc("a", current_ips=("192.0.2.1",))
    assert a.adopt([r, svc("b")]).adopted == {r.key}
    assert a.orphaned() == {r.key}
    assert a.assignment(ServiceKey("default", "b")) == ()
    assert a.ensure(r).reason == Reason.IP_OUTSIDE_POOL


def test_status_write_lost_does_not_move_the_service() -> None:
    a = allocator(P4)
    d = a.ensure(svc("a"))
    # the status patch failed: the next reconcile still sees an empty status
    again = a.ensure(svc("a"))
    assert again.ips == d.ips and again.changed


def test_reclaim_same_name_within_window() -> None:
    clock = Clock()
    a = allocator(P4, clock=clock, window=60.0)
    _, r = settle(a, svc("a", uid="1"))
    settle(a, svc("b"))
    a.release(r.key)
    clock.now += 30
    d, r2 = settle(a, svc("a", uid="2"))
    assert d.ips == ("10.0.0.0",)
    a.release(r2.key)
    clock.now += 61
    d, _ = settle(a, svc("a", uid="3"))
    assert d.ips == ("10.0.0.2",)


def test_recreated_without_release_is_treated_as_a_new_service_that_reclaims() -> None:
    a = allocator(P4)
    settle(a, svc("a", uid="1"))
    d = a.ensure(svc("a", uid="2"))
    assert d.ips == ("10.0.0.0",)


def test_decision_retry_names_waiters_when_a_service_moves_away() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.1/32",)), PoolSpec("q", ("10.0.1.1/32",), auto_assign=False))
    _, r = settle(a, svc("a"))
    assert a.ensure(svc("b")).pending
    d = a.ensure(replace(r, requested_pool="q"))
    assert d.released == ("10.0.0.1",) and d.retry == {ServiceKey("default", "b")}
    assert a.pending_for(["10.0.0.1"]) == {ServiceKey("default", "b")}


def test_pool_statuses_sorted_and_counts() -> None:
    a = allocator(PoolSpec("b", ("10.0.0.0/30",), avoid_buggy_ips=True), PoolSpec("a", ("fd00::/126",)))
    settle(a, svc("x"))
    sts = a.pool_statuses()
    assert [s.name for s in sts] == ["a", "b"]
    assert (sts[1].ipv4.total, sts[1].ipv4.assigned, sts[1].ipv4.available) == (3, 1, 2)
    assert settle(a, svc("y"))[0].ips == ("10.0.0.2",)


def test_holder_changing_ports_wakes_the_service_waiting_for_its_ip() -> None:
    a = allocator(P4)
    _, holder = settle(a, svc("a", sharing_key="k", requested_ips=("10.0.0.1",)))
    waiter = svc("b", sharing_key="k", requested_ips=("10.0.0.1",))
    d = a.ensure(waiter)
    assert d.reason == Reason.REQUESTED_IP_IN_USE and "(ports overlap (TCP/80))" in d.message
    d = a.ensure(replace(holder, ports=frozenset({Port("UDP", 53)})))
    assert d.ips == holder.current_ips and d.retry == {waiter.key}
    assert a.ensure(waiter).ips == ("10.0.0.1",)


def test_prefer_dual_stack_partial_names_the_missing_family() -> None:
    a = allocator(P4)
    d, r = settle(a, svc("a", families=("IPv4", "IPv6"), policy="PreferDualStack"))
    assert d.ips == ("10.0.0.0",) and d.pending and d.reason == Reason.FAMILY_UNAVAILABLE
    assert d.message == "pool 'p4' has no IPv6 addresses"
    again = a.ensure(r)
    assert (again.ips, again.reason, again.message, again.changed) == (d.ips, d.reason, d.message, False)
    change = a.set_pools([replace(P4, addresses=(*P4.addresses, "fd00::/126"))])
    assert change.retry == {r.key}
    assert a.ensure(r).ips == ("10.0.0.0", "fd00::1")


def test_adopt_reports_two_addresses_of_one_family() -> None:
    a = allocator(P4)
    r = svc("a", current_ips=("10.0.0.1", "10.0.0.2"))
    result = a.adopt([r])
    assert result.invalid == {r.key: "status holds two IPv4 addresses; kept 10.0.0.1"}
    assert a.assignment(r.key) == ("10.0.0.1",)


def test_orphan_of_requested_pool_is_retained_and_reported() -> None:
    a = allocator(P4, PoolSpec("q", ("10.5.0.0/30",)))
    _, r = settle(a, svc("a", requested_pool="q"))
    change = a.set_pools([P4, PoolSpec("q", ("10.5.0.2/31",))])
    assert change.orphaned == {r.key}
    d = a.ensure(r)
    assert d.reason == Reason.IP_OUTSIDE_POOL and d.message == "10.5.0.0 is outside pool 'q'; kept"
    assert d.ips == r.current_ips and not d.pending


def test_retained_orphan_is_not_completed_with_another_family() -> None:
    a = allocator(P46)
    _, r = settle(a, svc("a", families=("IPv4",)))
    a.set_pools([PoolSpec("v6", ("fd00::/126",))])
    dual = replace(r, families=("IPv4", "IPv6"), family_policy="PreferDualStack")
    d = a.ensure(dual)
    assert d.ips == ("10.0.0.0",) and d.reason == Reason.IP_OUTSIDE_POOL and not d.pending
    assert a.ensure(replace(dual, current_ips=d.ips)) == d


def test_requested_ip_leaving_the_pool_names_the_waiting_service() -> None:
    # Found by the randomized e2e run (seed 3): the waiting Service's condition went stale.
    a = allocator(PoolSpec("p", ("10.0.0.1-10.0.0.4",)))
    holder, _ = settle(a, svc("holder", requested_ips=("10.0.0.3",)))
    assert holder.ips == ("10.0.0.3",)
    waiting = a.ensure(svc("waiting", requested_ips=("10.0.0.3",)))
    assert waiting.reason == Reason.REQUESTED_IP_IN_USE
    change = a.set_pools([PoolSpec("p", ("10.0.0.1/32",))])
    assert ServiceKey("default", "waiting") in change.retry
    assert a.ensure(svc("waiting", requested_ips=("10.0.0.3",))).reason == Reason.REQUESTED_IP_OUTSIDE_POOL


def test_a_second_orphaned_address_names_the_owner_again() -> None:
    # Found by the randomized e2e run (seed 9): the IPOutsidePool message named only the first address.
    a = allocator(PoolSpec("p", ("10.0.0.1-10.0.0.3", "fd00::1-fd00::3")))
    d, r = settle(a, svc("s", families=("IPv4", "IPv6"), policy="RequireDualStack"))
    assert d.ips == ("10.0.0.1", "fd00::1")
    first = a.set_pools([PoolSpec("p", ("10.0.0.2-10.0.0.3", "fd00::1-fd00::3"))])
    assert first.orphaned == {r.key}
    second = a.set_pools([PoolSpec("p", ("10.0.0.2-10.0.0.3", "fd00::2-fd00::3"))])
    assert second.orphaned == {r.key}
    kept = a.ensure(r)
    assert kept.ips == d.ips and kept.reason == Reason.IP_OUTSIDE_POOL
    assert "10.0.0.1" in kept.message and "fd00::1" in kept.message
