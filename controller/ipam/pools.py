"""Pools at run time: validation, free space per family, overlap between pools, and pool choice."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping

from .addresses import AddressError, IPRange, buggy_ipv4, parse_pool_addresses, usable_ipv4_count
from .freespace import FreeSpace
from .model import (
    FAMILIES,
    IPV4,
    SELECTOR_OPERATORS,
    AllocationOrder,
    FamilyCounts,
    PoolSpec,
    PoolStatus,
    Selector,
    ServiceRequest,
)


def validate_pool(spec: PoolSpec) -> tuple[tuple[IPRange, ...], str | None]:
    """The address ranges of a pool, or the reason it is invalid.

    With avoidBuggyIPs, IPv4 ranges still contain .0/.255 addresses: `Pool` skips them arithmetically
    (splitting a /4 per /24 would be a million ranges)."""
    if not spec.name:
        return (), "the pool has no name"
    try:
        AllocationOrder(spec.allocation_order)
    except ValueError:
        return (), f"allocationOrder {spec.allocation_order!r} is not Lowest or LeastRecentlyReleased"
    try:
        ranges = parse_pool_addresses(spec.addresses)
    except AddressError as exc:
        return (), str(exc)
    if spec.service_allocation is not None:
        alloc = spec.service_allocation
        for what, selectors in (
            ("namespaceSelectors", alloc.namespace_selectors),
            ("serviceSelectors", alloc.service_selectors),
        ):
            for selector in selectors:
                problem = _selector_problem(selector)
                if problem:
                    return (), f"serviceAllocation.{what}: {problem}"
    return ranges, None


def _selector_problem(selector: Selector) -> str | None:
    for req in selector.match_expressions:
        if req.operator not in SELECTOR_OPERATORS:
            allowed = ", ".join(SELECTOR_OPERATORS)
            return f"operator {req.operator!r} of key {req.key!r} is not one of {allowed}"
        if req.operator in ("In", "NotIn") and not req.values:
            return f"operator {req.operator} of key {req.key!r} needs values"
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            return f"operator {req.operator} of key {req.key!r} takes no values"
    return None


class Pool:
    """One pool: its spec, its usable ranges per family, its free space, and its state."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        ranges, self.invalid = validate_pool(spec)
        self.avoid_buggy: dict[str, bool] = {f: spec.avoid_buggy_ips and f == IPV4 for f in FAMILIES}
        self.free: dict[str, FreeSpace] = {
            f: FreeSpace(
                ((r.first, r.last) for r in ranges if r.family == f), avoid_buggy=self.avoid_buggy[f]
            )
            for f in FAMILIES
        }
        # Ranges with both ends on usable addresses (the fresh free space as built, before any allocation).
        self.ranges: dict[str, tuple[IPRange, ...]] = {
            f: tuple(IPRange(f, first, last) for first, last in self.free[f].intervals()) for f in FAMILIES
        }
        self._starts: dict[str, list[int]] = {f: [r.first for r in rs] for f, rs in self.ranges.items()}
        self.totals: dict[str, int] = {f: self.free[f].free_count for f in FAMILIES}
        self.conflict_with: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def order_key(self) -> tuple[float, str]:
        return (self.spec.created, self.spec.name)

    @property
    def allocatable(self) -> bool:
        """Whether the pool may make new allocations. Existing ones stay whatever this says."""
        return self.invalid is None and self.conflict_with is None and not self.spec.disabled

    def has_family(self, family: str) -> bool:
        return self.totals[family] > 0

    def contains(self, family: str, value: int) -> bool:
        if self.avoid_buggy[family] and buggy_ipv4(value):
            return False
        starts = self._starts[family]
        idx = bisect_right(starts, value) - 1
        return idx >= 0 and value <= self.ranges[family][idx].last

    def allocate(self, family: str, preferred: int | None = None) -> int | None:
        free = self.free[family]
        if preferred is not None and free.allocate(preferred):
            return preferred
        if self.spec.allocation_order == AllocationOrder.LOWEST:
            return free.allocate_lowest()
        return free.allocate_least_recently_released()

    def allows(self, request: ServiceRequest) -> bool:
        """serviceAllocation's restrictions, as MetalLB reads them: the namespace must be listed in
        `namespaces` or match one of `namespaceSelectors` (when either is set), and the Service must
        match one of `serviceSelectors` (when set)."""
        alloc = self.spec.service_allocation
        if alloc is None:
            return True
        if alloc.namespaces or alloc.namespace_selectors:
            ns_labels = dict(request.namespace_labels)
            if request.key.namespace not in alloc.namespaces and not any(
                s.matches(ns_labels) for s in alloc.namespace_selectors
            ):
                return False
        if alloc.service_selectors:
            labels = dict(request.labels)
            if not any(s.matches(labels) for s in alloc.service_selectors):
                return False
        return True

    def status(self) -> PoolStatus:
        counts = {}
        for family in FAMILIES:
            total = self.totals[family]
            available = self.free[family].free_count
            counts[family] = FamilyCounts(total=total, assigned=total - available, available=available)
        has_any = any(c.total for c in counts.values())
        return PoolStatus(
            name=self.name,
            ipv4=counts["IPv4"],
            ipv6=counts["IPv6"],
            invalid=self.invalid,
            conflict_with=self.conflict_with,
            disabled=self.spec.disabled,
            exhausted=has_any and all(c.available == 0 for c in counts.values()),
        )


def find_conflicts(pools: Iterable[Pool]) -> dict[str, str]:
    """Pool name -> the older pool it overlaps. Age is (created, name); the oldest pool never conflicts.

    A pool that overlaps any older valid pool is in conflict as a whole (even when the older one itself is).
    """
    ordered = sorted((p for p in pools if p.invalid is None), key=lambda p: p.order_key)
    conflicts: dict[str, str] = {}
    for family in FAMILIES:
        spans = sorted(
            (r.first, r.last, idx) for idx, p in enumerate(ordered) for r in p.ranges[family]
        )
        # sweep: every range overlapping the current one started earlier and ends at or after its first
        active: list[tuple[int, int]] = []  # (last, pool index)
        for first, last, idx in spans:
            active = [(end, j) for end, j in active if end >= first]
            for end, j in active:
                if j == idx:
                    continue
                avoid = ordered[idx].avoid_buggy[family] or ordered[j].avoid_buggy[family]
                if avoid and usable_ipv4_count(first, min(end, last)) == 0:
                    continue  # they share only .0/.255 addresses, which one of them never hands out
                newer, older = (idx, j) if j < idx else (j, idx)
                name = ordered[newer].name
                previous = conflicts.get(name)
                older_name = ordered[older].name
                if previous is None or _age(ordered, older_name) < _age(ordered, previous):
                    conflicts[name] = older_name
            active.append((last, idx))
    return conflicts


def _age(ordered: list[Pool], name: str) -> tuple[float, str]:
    for p in ordered:
        if p.name == name:
            return p.order_key
    return (float("inf"), name)


def choose_pools(pools: Mapping[str, Pool], request: ServiceRequest) -> list[Pool]:
    """Pools a request without requested IPs may allocate from, in the order they are tried.

    The requested pool alone; else pools whose serviceAllocation matches, by priority (unset or 0 after every
    prioritized pool) then name; then autoAssign pools without serviceAllocation, by name.
    Pools that cannot make new allocations are left out.
    """
    if request.requested_pool is not None:
        pool = pools.get(request.requested_pool)
        if pool is None or not pool.allocatable or not pool.allows(request):
            return []
        return [pool]
    matched: list[Pool] = []
    plain: list[Pool] = []
    for pool in pools.values():
        if not pool.allocatable or not pool.spec.auto_assign:
            continue
        alloc = pool.spec.service_allocation
        if alloc is None:
            plain.append(pool)
        elif pool.allows(request):
            matched.append(pool)

    def by_priority(p: Pool) -> tuple[bool, int, str]:
        # As in MetalLB, priority 0 means "no priority": after every pool with a positive one.
        priority = p.spec.service_allocation.priority if p.spec.service_allocation else None
        return (not priority, priority or 0, p.name)

    matched.sort(key=by_priority)
    plain.sort(key=lambda p: p.name)
    return matched + plain
