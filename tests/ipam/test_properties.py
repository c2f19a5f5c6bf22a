"""Stateful properties of the allocator over random Service and pool histories.

Invariants checked after every step: uniqueness, stability, convergence (fixed point), liveness after
settling the retry notifications, restart-equivalence (a fresh allocator adopting the statuses).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controller.ipam import (
    AllocationOrder,
    Allocator,
    PoolSpec,
    Port,
    Reason,
    ServiceAllocation,
    ServiceKey,
    ServiceRequest,
)
from controller.ipam.addresses import buggy_ipv4, parse_ip
from controller.ipam.freespace import FreeSpace
from controller.ipam.pools import validate_pool
from controller.ipam.sharing import SharingTerms, compatible

from .conftest import IPAM_PROFILE

NAMES = ("s0", "s1", "s2", "s3", "s4", "s5")
NAMESPACES = ("ns0", "ns1")
POOL_NAMES = ("a", "b", "c")
PORTS = (Port("TCP", 80), Port("TCP", 443), Port("UDP", 53))


@dataclass(frozen=True)
class Params:
    families: tuple[str, ...]
    policy: str
    requested_ips: tuple[str, ...]
    requested_pool: str | None
    sharing_key: str | None
    ports: frozenset[Port]
    backend_key: str | None
    reassign_orphans: bool
    labels: tuple[tuple[str, str], ...]


v4_ips = st.integers(0, 15).map(lambda i: f"10.0.0.{i}")
v6_ips = st.integers(0, 15).map(lambda i: f"fd00::{i:x}")


@st.composite
def params(draw: st.DrawFn) -> Params:
    families = draw(st.sampled_from([("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")]))
    requested: tuple[str, ...] = ()
    if draw(st.integers(0, 4)) == 0:
        chosen = families if draw(st.booleans()) else families[:1]
        requested = tuple(draw(v4_ips if f == "IPv4" else v6_ips) for f in chosen)
        if draw(st.integers(0, 9)) == 0:
            requested = (*requested, draw(v4_ips))  # sometimes contradictory
    return Params(
        families=families,
        policy=draw(st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"])),
        requested_ips=requested,
        requested_pool=draw(st.one_of(st.none(), st.none(), st.none(), st.sampled_from(POOL_NAMES))),
        sharing_key=draw(st.one_of(st.none(), st.sampled_from(["k1", "k2"]))),
        ports=draw(st.frozensets(st.sampled_from(PORTS), min_size=1)),
        backend_key=draw(st.one_of(st.none(), st.none(), st.sampled_from(["app=x", "app=y"]))),
        reassign_orphans=draw(st.booleans()),
        labels=draw(st.sampled_from([(), (("tier", "gold"),)])),
    )


@st.composite
def block(draw: st.DrawFn, family: str) -> str:
    lo = draw(st.integers(0, 15))
    hi = draw(st.integers(lo, min(15, lo + 3)))
    if draw(st.integers(0, 9)) == 0:
        return "10.0.0.3/28" if family == "IPv4" else "fd00::1/124"  # invalid: host bits
    if family == "IPv4":
        return f"10.0.0.{lo}-10.0.0.{hi}"
    if draw(st.booleans()):
        return "fd00::/125"  # CIDR: its all-zeros address is never handed out
    return f"fd00::{lo:x}-fd00::{hi:x}"


@st.composite
def good_pool_spec(draw: st.DrawFn, name: str) -> PoolSpec:
    lo = draw(st.integers(0, 12))
    v6 = draw(st.sampled_from(["fd00::/125", "fd00::8-fd00::a", "fd00::3"]))
    return PoolSpec(
        name=name,
        addresses=(f"10.0.0.{lo}-10.0.0.{lo + draw(st.integers(0, 3))}", v6),
        created=float(draw(st.integers(0, 3))),
        allocation_order=draw(st.sampled_from(list(AllocationOrder))),
    )


@st.composite
def pool_spec(draw: st.DrawFn, name: str) -> PoolSpec:
    if draw(st.booleans()):
        return draw(good_pool_spec(name))
    addresses: list[str] = []
    if draw(st.integers(0, 3)) > 0:
        addresses.append(draw(block("IPv4")))
    if draw(st.booleans()) or not addresses:
        addresses.append(draw(block("IPv6")))
    alloc = draw(
        st.sampled_from(
            [
                None,
                None,
                ServiceAllocation(priority=1, namespaces=frozenset({"ns1"})),
                ServiceAllocation(priority=None, service_selectors=()),
            ]
        )
    )
    return PoolSpec(
        name=name,
        addresses=tuple(addresses),
        created=float(draw(st.integers(0, 3))),
        auto_assign=draw(st.integers(0, 4)) > 0,
        avoid_buggy_ips=draw(st.integers(0, 4)) == 0,
        allocation_order=draw(st.sampled_from(list(AllocationOrder))),
        service_allocation=alloc,
        disabled=draw(st.integers(0, 5)) == 0,
    )


def _clock() -> float:
    return 0.0


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.alloc = Allocator(clock=_clock)
        self.pools: dict[str, PoolSpec] = {}
        self.services: dict[ServiceKey, ServiceRequest] = {}
        self.uids = itertools.count()
        self.queue: set[ServiceKey] = set()
        # What each Service's condition shows (reason, message): the controller writes it to status, so
        # a decision that changes without the Service being named for a retry is a stale condition, and
        # a later reconcile (after a restart, say) would write it.
        self.shown: dict[ServiceKey, tuple[str, str]] = {}

    # -- helpers ----------------------------------------------------------------------------------------
    def _request(
        self, key: ServiceKey, p: Params, uid: str, created: float, current: tuple[str, ...]
    ) -> ServiceRequest:
        return ServiceRequest(
            key=key,
            uid=uid,
            created=created,
            families=p.families,
            family_policy=p.policy,
            requested_ips=p.requested_ips,
            requested_pool=p.requested_pool,
            sharing_key=p.sharing_key,
            ports=p.ports,
            backend_key=p.backend_key,
            labels=p.labels,
            reassign_orphans=p.reassign_orphans,
            current_ips=current,
        )

    def _in_pool(self, ip: str, pool: PoolSpec) -> bool:
        ranges, invalid = validate_pool(pool)
        family, value = parse_ip(ip)
        if pool.avoid_buggy_ips and family == "IPv4" and buggy_ipv4(value):
            return False
        return invalid is None and any(r.family == family and r.first <= value <= r.last for r in ranges)

    def _is_orphan(self, ip: str, request: ServiceRequest) -> bool:
        if request.requested_pool is not None:
            pool = self.pools.get(request.requested_pool)
            return pool is None or not self._in_pool(ip, pool)
        return not any(self._in_pool(ip, p) for p in self.pools.values())

    def _ensure(self, request: ServiceRequest, *, input_changed: bool) -> None:
        key = request.key
        before = set(request.current_ips)
        orphans = {ip for ip in before if self._is_orphan(ip, request)}
        # Outside the pool it asks for but inside another pool: granted elsewhere, so it moves (an orphan is
        # an address in no pool at all, and only that is retained).
        elsewhere = {ip for ip in orphans if any(self._in_pool(ip, p) for p in self.pools.values())}
        d = self.alloc.ensure(request)
        if not input_changed:
            lost = before - set(d.ips)
            allowed = orphans if request.reassign_orphans else elsewhere
            if allowed and request.family_policy == "RequireDualStack":
                allowed = before  # both families or none: an orphan that cannot move takes its pair along
            assert lost <= allowed, f"stability: {key} lost {lost} without a reason of its own ({d})"
        updated = replace(request, current_ips=d.ips)
        self.services[key] = updated
        self.shown[key] = (d.reason.value, d.message)
        # convergence: feeding the decision back is a fixed point
        again = self.alloc.ensure(updated)
        assert again.ips == d.ips and not again.changed, f"not a fixed point: {d} then {again}"
        # the reconciler keeps showing DuplicateIP while the IPs stay (a sticky reason)
        if not (d.reason == Reason.DUPLICATE_IP and again.reason == Reason.ALLOCATED):
            assert (again.reason, again.message, again.pending) == (d.reason, d.message, d.pending)
        self.queue |= d.retry
        self.queue.discard(key)

    def _settle(self) -> None:
        rounds = 0
        while self.queue:
            rounds += 1
            assert rounds < 100, "retry notifications do not settle"
            key = min(self.queue)
            self.queue.discard(key)
            if key in self.services:
                self._ensure(self.services[key], input_changed=False)
        # liveness: after settling, nobody could get more by being reconciled again
        for key, request in sorted(self.services.items()):
            d = self.alloc.ensure(request)
            assert d.ips == request.current_ips and not d.changed and d.released == (), (
                f"liveness/convergence: {key} had {request.current_ips}, re-ensure gives {d}"
            )
            if self.shown[key][0] == Reason.DUPLICATE_IP.value and d.reason == Reason.ALLOCATED:
                continue  # sticky, as above
            assert (d.reason.value, d.message) == self.shown[key], (
                f"stale condition: {key} shows {self.shown[key]} but re-ensure says {d}; "
                "the change that caused it did not name this Service for a retry"
            )

    def _set_pools(self) -> None:
        change = self.alloc.set_pools(self.pools.values())
        self.queue |= change.retry | change.orphaned

    # -- rules ------------------------------------------------------------------------------------------
    @initialize(a=good_pool_spec("a"), b=st.one_of(st.none(), good_pool_spec("b")))
    def start_with_pools(self, a: PoolSpec, b: PoolSpec | None) -> None:
        self.pools = {p.name: p for p in (a, b) if p is not None}
        self._set_pools()

    @rule(name=st.sampled_from(NAMES), ns=st.sampled_from(NAMESPACES), p=params())
    def create(self, name: str, ns: str, p: Params) -> None:
        key = ServiceKey(ns, name)
        if key in self.services:
            return
        n = next(self.uids)
        self._ensure(self._request(key, p, f"uid{n}", float(n), ()), input_changed=True)
        self._settle()

    @precondition(lambda self: self.services)
    @rule(data=st.data(), p=params())
    def update(self, data: st.DataObject, p: Params) -> None:
        old = self.services[data.draw(st.sampled_from(sorted(self.services)))]
        self._ensure(self._request(old.key, p, old.uid, old.created, old.current_ips), input_changed=True)
        self._settle()

    @precondition(lambda self: self.services)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.services)))
        del self.services[key]
        self.shown.pop(key, None)
        self.queue |= self.alloc.release(key)
        self.queue.discard(key)
        assert self.alloc.assignment(key) == ()
        self._settle()

    @rule(data=st.data(), name=st.sampled_from(POOL_NAMES))
    def put_pool(self, data: st.DataObject, name: str) -> None:
        self.pools[name] = data.draw(pool_spec(name))
        self._set_pools()
        self._settle()

    @rule(name=st.sampled_from(POOL_NAMES))
    def delete_pool(self, name: str) -> None:
        self.pools.pop(name, None)
        self._set_pools()
        self._settle()

    def _fresh_allocator(self) -> Allocator:
        """A new leader's allocator before it adopts anything."""
        fresh = Allocator(clock=_clock)
        fresh.set_pools(self.pools.values())
        return fresh

    @rule()
    def restart(self) -> None:
        fresh = self._fresh_allocator()
        result = fresh.adopt(list(self.services.values()))
        assert result.duplicates == {} and result.invalid == {}
        for key, request in self.services.items():
            assert set(fresh.assignment(key)) == set(request.current_ips), f"restart changed {key}"
            assert fresh.pool_of(key) == self.alloc.pool_of(key)
        assert fresh.orphaned() == self.alloc.orphaned()
        for status in self.alloc.pool_statuses():
            assert fresh.pool_status(status.name) == status
        self.alloc = fresh
        self.queue |= set(self.services)  # the new leader reconciles everything once
        self._settle()

    # -- invariants -------------------------------------------------------------------------------------
    @invariant()
    def uniqueness_and_agreement(self) -> None:
        by_ip: dict[str, list[ServiceRequest]] = {}
        for key, request in self.services.items():
            assert set(self.alloc.assignment(key)) == set(request.current_ips)
            families = [parse_ip(ip)[0] for ip in request.current_ips]
            assert len(families) == len(set(families)), f"{key} holds two IPs of one family"
            for ip in request.current_ips:
                by_ip.setdefault(ip, []).append(request)
        for ip, holders in by_ip.items():
            for x, y in itertools.combinations(holders, 2):
                assert compatible(SharingTerms.of(x), SharingTerms.of(y)), f"{ip} held by {x.key} and {y.key}"
            assert set(self.alloc.holders(ip)) == {h.key for h in holders}

    @invariant()
    def counts_match_assignments(self) -> None:
        held = {ip for r in self.services.values() for ip in r.current_ips}
        for status in self.alloc.pool_statuses():
            spec = self.pools[status.name]
            inside = [ip for ip in held if self._in_pool(ip, spec)]
            assigned = status.ipv4.assigned + status.ipv6.assigned
            assert assigned == len(inside), f"pool {status.name}: {status} vs {inside}"
            for counts in (status.ipv4, status.ipv6):
                assert counts.total == counts.assigned + counts.available


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(settings.get_profile(IPAM_PROFILE), stateful_step_count=50)


@settings(settings.get_profile(IPAM_PROFILE))
@given(
    st.lists(
        st.tuples(st.sampled_from(["lowest", "lrr", "take", "release"]), st.integers(0, 40)), max_size=60
    ),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6)), max_size=4),
)
def test_freespace_matches_a_set_model(ops: list[tuple[str, int]], spans: list[tuple[int, int]]) -> None:
    intervals = [(lo, lo + width) for lo, width in spans]
    universe = {v for lo, hi in intervals for v in range(lo, hi + 1)}
    fs = FreeSpace(intervals)
    free = set(universe)
    released: list[int] = []  # release order of addresses that are free again
    for op, value in ops:
        if op == "lowest":
            got = fs.allocate_lowest()
            assert got == (min(free) if free else None)
        elif op == "lrr":
            got = fs.allocate_least_recently_released()
            never_used = free - set(released)
            expected = min(never_used) if never_used else (released[0] if released else None)
            assert got == expected
        elif op == "take":
            got = value if fs.allocate(value) else None
            assert (got is not None) == (value in free)
        else:
            if value in universe and value not in free:
                assert fs.release(value)
                free.add(value)
                released.append(value)
            continue
        if got is not None:
            free.discard(got)
            if got in released:
                released.remove(got)
        assert fs.free_count == len(free)
        assert all((v in fs) == (v in free) for v in universe)
