"""IPReservations in the allocator: the address is kept for its target, never handed to another Service."""

from __future__ import annotations

from dataclasses import replace

from controller.ipam import (
    AddressState,
    PoolSpec,
    Reason,
    ReservationIndex,
    ReservationSpec,
    Selector,
    ServiceAllocation,
    ServiceKey,
    describe_target,
)

from .helpers import allocator, settle, svc

POOL = PoolSpec("p", ("10.0.0.0/30", "fd00::/126"))  # 4 + 4 addresses


def web(ip: str = "10.0.0.0") -> ReservationSpec:
    return ReservationSpec(name="web", addresses=(ip,), namespace="team-a", service_name="web")


def test_reserved_address_is_not_handed_out_automatically_and_the_target_gets_it_without_annotation() -> None:
    a = allocator(POOL)
    a.set_reservations([web("10.0.0.0")])
    d = a.ensure(svc("other", ns="team-a"))
    assert d.ips == ("10.0.0.1",)
    assert a.pool_status("p").ipv4.reserved == 1  # type: ignore[union-attr]
    d = a.ensure(svc("web", ns="team-a"))
    assert d.ips == ("10.0.0.0",) and d.reason is Reason.ALLOCATED
    counts = a.pool_status("p").ipv4  # type: ignore[union-attr]
    assert (counts.total, counts.assigned, counts.available, counts.reserved) == (4, 2, 2, 0)
    [state] = a.reservation_states()
    assert state.state is AddressState.BOUND


def test_a_non_target_requesting_the_address_is_refused_naming_the_target() -> None:
    a = allocator(POOL)
    a.set_reservations([web("10.0.0.2")])
    d = a.ensure(svc("thief", ns="team-b", requested_ips=("10.0.0.2",)))
    assert d.ips == () and d.pending and d.reason is Reason.IP_RESERVED
    assert "team-a/web" in d.message and "IPReservation web" in d.message
    # the reservation goes away: the waiting Service is named for a retry and gets the address
    change = a.set_reservations([])
    assert ServiceKey("team-b", "thief") in change.retry
    assert a.ensure(svc("thief", ns="team-b", requested_ips=("10.0.0.2",))).ips == ("10.0.0.2",)


def test_sharing_with_the_target_does_not_open_the_address_to_a_non_target() -> None:
    a = allocator(POOL)
    a.set_reservations([web("10.0.0.0")])
    key = {"sharing_key": "k"}
    assert a.ensure(svc("web", ns="team-a", ports=(("TCP", 80),), **key)).ips == ("10.0.0.0",)
    d = a.ensure(svc("guest", ns="team-a", ports=(("TCP", 443),), **key))
    assert d.ips != ("10.0.0.0",)
    d = a.ensure(svc("asks", ns="team-a", ports=(("TCP", 8443),), requested_ips=("10.0.0.0",), **key))
    assert d.reason is Reason.IP_RESERVED


def test_targets_of_a_selector_share_the_reserved_address() -> None:
    a = allocator(POOL)
    spec = ReservationSpec(
        "set", ("10.0.0.3",), "team-a", selector=Selector(match_labels=(("app", "web"),))
    )
    a.set_reservations([spec])
    key = {"sharing_key": "k", "labels": (("app", "web"),)}
    assert a.ensure(svc("http", ns="team-a", ports=(("TCP", 80),), **key)).ips == ("10.0.0.3",)
    assert a.ensure(svc("https", ns="team-a", ports=(("TCP", 443),), **key)).ips == ("10.0.0.3",)
    # a third target that may not share (same port) is served from the pool instead of waiting forever
    d = a.ensure(svc("again", ns="team-a", ports=(("TCP", 80),), **key))
    assert d.ips and d.ips != ("10.0.0.3",) and not d.pending
    assert describe_target(spec) == "team-a Services matching app=web"


def test_a_held_address_is_never_moved_the_reservation_waits_and_is_honoured_after_release() -> None:
    a = allocator(POOL)
    holder, _ = settle(a, svc("holder", ns="team-b", requested_ips=("10.0.0.0",)))
    assert holder.ips == ("10.0.0.0",)
    a.set_reservations([web("10.0.0.0")])
    [state] = a.reservation_states()
    assert state.state is AddressState.HELD_BY_OTHER and "team-b/holder" in state.message
    # the holder is reconciled again: it keeps its address
    again = a.ensure(svc("holder", ns="team-b", requested_ips=("10.0.0.0",), current_ips=("10.0.0.0",)))
    assert again.ips == ("10.0.0.0",) and not again.changed
    # the target waits for it instead of taking another address it would then have to leave
    d = a.ensure(svc("web", ns="team-a"))
    assert d.ips == () and d.pending and d.reason is Reason.REQUESTED_IP_IN_USE
    assert "team-b/holder" in d.message
    woken = a.release(ServiceKey("team-b", "holder"))
    assert ServiceKey("team-a", "web") in woken
    assert a.ensure(svc("web", ns="team-a")).ips == ("10.0.0.0",)
    # and while it waited, nobody else got it either
    assert a.reservation_states()[0].state is AddressState.BOUND


def test_freed_reserved_address_stays_reserved_and_a_deleted_reservation_returns_it() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/31",)))
    a.set_reservations([web("10.0.0.0")])
    assert a.ensure(svc("web", ns="team-a")).ips == ("10.0.0.0",)
    a.release(ServiceKey("team-a", "web"))
    assert a.ensure(svc("x")).ips == ("10.0.0.1",)
    d = a.ensure(svc("y"))
    assert d.ips == () and d.reason is Reason.POOL_EXHAUSTED
    change = a.set_reservations([])
    assert ServiceKey("default", "y") in change.retry and change.changed_ips == ("10.0.0.0",)
    assert a.ensure(svc("y")).ips == ("10.0.0.0",)


def test_a_served_target_keeps_its_address_when_a_reservation_for_it_appears() -> None:
    a = allocator(POOL)
    d, request = settle(a, svc("web", ns="team-a"))
    assert d.ips == ("10.0.0.0",)
    a.set_reservations([web("10.0.0.2")])
    assert a.ensure(request).ips == ("10.0.0.0",)
    assert a.reservation_states()[0].state is AddressState.WAITING
    # its own request moves it
    moved = a.ensure(replace(request, requested_ips=("10.0.0.2",)))
    assert moved.ips == ("10.0.0.2",)


def test_dual_stack_target_gets_both_reserved_addresses_and_completes_a_missing_family() -> None:
    a = allocator(POOL)
    a.set_reservations([ReservationSpec("web", ("fd00::3", "10.0.0.3"), "team-a", service_name="web")])
    d = a.ensure(svc("web", ns="team-a", families=("IPv4", "IPv6"), policy="RequireDualStack"))
    assert d.ips == ("10.0.0.3", "fd00::3")
    a.set_reservations([ReservationSpec("api", ("10.0.0.2",), "team-a", service_name="api")])
    d = a.ensure(svc("api", ns="team-a", families=("IPv4", "IPv6"), policy="RequireDualStack"))
    assert d.ips[0] == "10.0.0.2" and len(d.ips) == 2


def test_reservation_outside_every_pool_makes_its_target_wait_and_is_reported() -> None:
    a = allocator(POOL)
    a.set_reservations([web("10.9.9.9")])
    [state] = a.reservation_states()
    assert state.state is AddressState.NOT_IN_POOL
    d = a.ensure(svc("web", ns="team-a"))
    assert d.pending and d.reason is Reason.REQUESTED_IP_OUTSIDE_POOL and "not in any pool" in d.message
    change = a.set_pools([POOL, PoolSpec("q", ("10.9.9.9/32",))])
    assert ServiceKey("team-a", "web") in change.retry
    assert a.ensure(svc("web", ns="team-a")).ips == ("10.9.9.9",)


def test_pool_rules_still_apply_to_the_target() -> None:
    manual = PoolSpec("manual", ("10.1.0.0/30",), auto_assign=False)
    a = allocator(POOL, manual)
    a.set_reservations([web("10.1.0.1")])
    d = a.ensure(svc("web", ns="team-a"))
    assert d.pending and "autoAssign false" in d.message
    assert a.ensure(svc("web", ns="team-a", requested_pool="manual")).ips == ("10.1.0.1",)


def test_the_older_reservation_wins_a_shared_address() -> None:
    index = ReservationIndex(
        [
            ReservationSpec("new", ("10.0.0.1",), "b", service_name="x", created=2.0),
            ReservationSpec("old", ("10.0.0.1",), "a", service_name="y", created=1.0),
        ]
    )
    owner = index.owner("10.0.0.1")
    assert owner is not None and owner.name == "old"
    a = allocator(POOL)
    a.set_reservations(index.specs.values())
    states = {s.name: s.state for s in a.reservation_states()}
    assert states == {"new": AddressState.CONFLICT, "old": AddressState.WAITING}


def test_invalid_reservation_reserves_nothing() -> None:
    a = allocator(PoolSpec("p", ("10.0.0.0/32",)))
    a.set_reservations([ReservationSpec("bad", ("10.0.0.0", "nonsense"), "a", service_name="x")])
    [state] = a.reservation_states()
    assert state.state is AddressState.INVALID and "nonsense" in state.message
    assert a.ensure(svc("anyone")).ips == ("10.0.0.0",)


def test_restart_adopts_the_same_outcome() -> None:
    a = allocator(POOL)
    a.set_reservations([web("10.0.0.0")])
    d, target = settle(a, svc("web", ns="team-a"))
    e, other = settle(a, svc("other"))
    b = allocator(POOL)
    b.set_reservations([web("10.0.0.0")])
    b.adopt([target, other])
    assert b.ensure(target).ips == d.ips and b.ensure(other).ips == e.ips
    assert b.pool_statuses() == a.pool_statuses()


def test_a_pool_change_names_a_target_whose_reserved_address_it_contains() -> None:
    a = allocator(POOL)
    a.set_reservations([web("10.9.9.9")])
    assert "not in any pool" in a.ensure(svc("web", ns="team-a")).message
    only_x = ServiceAllocation(namespaces=frozenset({"x"}))
    elsewhere = PoolSpec("q", ("10.9.9.0/24",), service_allocation=only_x)
    change = a.set_pools([POOL, elsewhere])
    assert ServiceKey("team-a", "web") in change.retry  # its condition now names the pool that refuses it
    assert "does not serve this Service" in a.ensure(svc("web", ns="team-a")).message


def test_an_orphan_dropped_for_require_dual_stack_is_decided_as_a_service_holding_nothing() -> None:
    a = allocator(PoolSpec("a", ("10.0.0.0/32", "fd00::/125")))
    d, request = settle(a, svc("web", ns="team-a"))
    assert d.ips == ("10.0.0.0",)
    a.set_pools([])  # the address is now in no pool: retained (IPOutsidePool)
    a.set_reservations([web("10.0.0.0")])
    dual = replace(request, families=("IPv4", "IPv6"), family_policy="RequireDualStack")
    first = a.ensure(dual)
    again = a.ensure(replace(dual, current_ips=first.ips))
    assert (again.ips, again.reason, again.message) == (first.ips, first.reason, first.message)
    assert first.reason is Reason.REQUESTED_IP_OUTSIDE_POOL and "not in any pool" in first.message
