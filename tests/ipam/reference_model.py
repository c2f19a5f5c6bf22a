"""An executable specification of the allocation rules, written from the README and design §2-3.

It is deliberately naive: every pool is a set of addresses (enumerated one by one), every question is
answered by looking at every address and every Service. No intervals, no indexes, no incremental state
other than who holds what and the order addresses were freed in. It only works for small pools, which is
all the model-based test needs. Where the specification leaves a choice open, the choice is written
down here, next to the rule it completes.

Addresses are (family, integer). Services are described by their Kubernetes-level inputs (`Svc`), so the
model also reads annotations its own way: it shares no parsing with the controller.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cache

from controller.ipam import PoolSpec, ServiceKey

V4, V6 = "IPv4", "IPv6"
Addr = tuple[str, int]

IP_SOURCES = ("stablelb.io/ips", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs")
POOL_SOURCES = ("stablelb.io/pool", "metallb.io/address-pool", "metallb.universe.tf/address-pool")
SHARING_SOURCES = (
    "stablelb.io/sharing-key",
    "metallb.io/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
)
SPEC_IP = "spec.loadBalancerIP"

ALLOCATED, DUPLICATE, OUTSIDE = "Allocated", "DuplicateIP", "IPOutsidePool"
CONFLICTING, IN_USE, NOT_IN_POOL = "ConflictingRequests", "RequestedIPInUse", "RequestedIPOutsidePool"
WAITING = "Pending"  # no pool, exhausted, family unavailable: the model does not tell these apart


@dataclass(frozen=True)
class Svc:
    """A Service as the user wrote it (only what allocation reads)."""

    key: ServiceKey
    uid: str
    created: float
    families: tuple[str, ...]
    policy: str = "SingleStack"
    annotations: tuple[tuple[str, str], ...] = ()
    spec_ip: str | None = None  # spec.loadBalancerIP
    ports: frozenset[tuple[str, int]] = frozenset()
    local: bool = False  # externalTrafficPolicy: Local
    selector: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    namespace_labels: tuple[tuple[str, str], ...] = ()
    changed_since_grant: bool = False


@dataclass(frozen=True)
class Terms:
    """What the sharing rule compares (MetalLB: key, ports, and a backend key that is "" for Cluster)."""

    key: str | None
    ports: frozenset[tuple[str, int]]
    backend: str


def compatible(a: Terms, b: Terms) -> bool:
    return bool(a.key) and a.key == b.key and not (a.ports & b.ports) and a.backend == b.backend


@dataclass(frozen=True)
class Inputs:
    wanted: tuple[str, ...]  # the families this Service should end up with
    requested: dict[str, int]  # family -> requested address
    pool: str | None
    terms: Terms
    reassign: bool
    problem: str | None


def parse_ip(text: str) -> Addr | None:
    """One address, or None. Zone ids (fd00::1%eth0) and IPv4-mapped IPv6 are not addresses here."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and (ip.scope_id is not None or ip.ipv4_mapped is not None):
        return None
    return (V4 if ip.version == 4 else V6, int(ip))


def read_inputs(svc: Svc, reassign_default: bool) -> Inputs:
    ann = dict(svc.annotations)
    wanted = tuple(dict.fromkeys(svc.families))
    if svc.policy == "SingleStack":
        wanted = wanted[:1]
    problem = None
    # requested IPs: every source given must name the same set of valid IPs, at most one per family
    lists = [ann[s] for s in IP_SOURCES if s in ann] + ([svc.spec_ip] if svc.spec_ip else [])
    sets = []
    for text in lists:
        parsed = [parse_ip(t) for t in text.split(",") if t.strip()]
        if not parsed or None in parsed:
            problem = f"not a list of IPs: {text!r}"
        elif len({a[0] for a in parsed if a}) != len(parsed):
            problem = f"more than one IP of a family: {text!r}"
        sets.append(frozenset(a for a in parsed if a is not None))
    requested: dict[str, int] = {}
    if len(set(sets)) > 1:
        problem = "requested IP sources disagree"
    elif sets and problem is None:
        requested = dict(sets[0])
        if any(f not in wanted for f in requested):
            problem = "requested IP of a family the Service does not have"
        elif requested and svc.policy == "RequireDualStack" and set(requested) != set(wanted):
            problem = "RequireDualStack needs one requested IP per family"
    pools = {ann[s].strip() for s in POOL_SOURCES if s in ann}
    if len(pools) > 1:
        problem, pools = "requested pools disagree", set()
    keys = {ann[s].strip() for s in SHARING_SOURCES if s in ann}
    if len(keys) > 1:
        problem, keys = "sharing keys disagree", set()
    if problem is not None:
        requested = {}  # any input problem: "no allocation change", so no requested IP moves anything either
    # MetalLB's backend key: the selector for Local, "" for Cluster (so Local without a selector is "")
    backend = ",".join(f"{k}={v}" for k, v in sorted(svc.selector)) if svc.local else ""
    policy = ann.get("stablelb.io/orphan-policy")
    return Inputs(
        wanted=wanted,
        requested=requested,
        pool=next(iter(pools), None) or None,
        terms=Terms(next(iter(keys), None) or None, svc.ports, backend),
        reassign=reassign_default if policy is None else policy == "reassign",
        problem=problem,
    )


@cache  # a pure function of a frozen spec; cached only because the test asks it very often
def pool_addresses(spec: PoolSpec) -> frozenset[Addr] | None:
    """Every address a pool may hand out, or None when the pool is invalid."""
    out: set[Addr] = set()
    for block in spec.addresses:
        block = block.strip()
        try:
            if "/" in block:
                net = ipaddress.ip_network(block, strict=True)  # host bits set: invalid, never masked
                hosts = [int(a) for a in (net.network_address, net.broadcast_address)]
                first, last = hosts
                if net.version == 6 and net.prefixlen < 128:
                    first += 1  # the Subnet-Router anycast address is never handed out
                family = V4 if net.version == 4 else V6
            else:
                ends = block.split("-") if "-" in block else [block, block]
                if len(ends) != 2:
                    return None
                a, b = parse_ip(ends[0]), parse_ip(ends[1])
                if a is None or b is None or a[0] != b[0] or a[1] > b[1]:
                    return None
                family, first, last = a[0], a[1], b[1]
        except ValueError:
            return None
        block_addrs = {(family, v) for v in range(first, last + 1)}
        if block_addrs & out:
            return None  # blocks of one pool overlap
        out |= block_addrs
    if not out:
        return None
    if spec.avoid_buggy_ips:
        out = {(f, v) for f, v in out if f != V4 or v % 256 not in (0, 255)}
    return frozenset(out)


@dataclass
class Held:
    uid: str
    ips: dict[str, int]
    terms: Terms


@dataclass(frozen=True)
class Outcome:
    ips: frozenset[Addr]
    pending: bool
    reason: str


@dataclass
class Model:
    reassign_default: bool = False
    pools: dict[str, PoolSpec] = field(default_factory=dict)
    held: dict[ServiceKey, Held] = field(default_factory=dict)
    freed: list[Addr] = field(default_factory=list)  # addresses freed after use, oldest first
    recent: dict[ServiceKey, tuple[str, dict[str, int]]] = field(default_factory=dict)  # reclaim window

    # -- pools -----------------------------------------------------------------------------------------
    def set_pools(self, specs: list[PoolSpec]) -> None:
        self.pools = {p.name: p for p in specs}

    def addrs(self, name: str) -> frozenset[Addr]:
        spec = self.pools.get(name)
        return (pool_addresses(spec) or frozenset()) if spec is not None else frozenset()

    def in_conflict(self, name: str) -> bool:
        """Overlaps an older (created, name) valid pool."""
        me = self.pools[name]
        return any(
            (o.created, o.name) < (me.created, me.name) and self.addrs(o.name) & self.addrs(name)
            for o in self.pools.values()
        )

    def allocatable(self, name: str) -> bool:
        spec = self.pools[name]
        return pool_addresses(spec) is not None and not self.in_conflict(name) and not spec.disabled

    def allows(self, name: str, svc: Svc) -> bool:
        """serviceAllocation (MetalLB): namespace listed or selected (if either is set), Service selected."""
        alloc = self.pools[name].service_allocation
        if alloc is None:
            return True
        ns_labels, labels = dict(svc.namespace_labels), dict(svc.labels)
        listed = svc.key.namespace in alloc.namespaces
        if (alloc.namespaces or alloc.namespace_selectors) and not (
            listed or any(s.matches(ns_labels) for s in alloc.namespace_selectors)
        ):
            return False
        return not alloc.service_selectors or any(s.matches(labels) for s in alloc.service_selectors)

    def tiers(self, svc: Svc, inp: Inputs) -> list[list[str]]:
        """Pools a Service may get new addresses from, in tiers, best first (MetalLB's pinned, then plain)."""
        if inp.pool is not None:
            ok = inp.pool in self.pools and self.allocatable(inp.pool) and self.allows(inp.pool, svc)
            return [[inp.pool]] if ok else []
        usable = [
            n for n, p in self.pools.items() if p.auto_assign and self.allocatable(n) and self.allows(n, svc)
        ]

        def by_priority(name: str) -> tuple[bool, int, str]:
            # lower wins; unset or 0 after every prioritized pool (MetalLB reads 0 as unset)
            priority = self.pools[name].service_allocation.priority or 0  # type: ignore[union-attr]
            return (priority == 0, priority, name)

        matched = sorted((n for n in usable if self.pools[n].service_allocation), key=by_priority)
        plain = sorted(n for n in usable if not self.pools[n].service_allocation)
        return [tier for tier in (matched, plain) if tier]

    def candidates(self, svc: Svc, inp: Inputs) -> list[str]:
        return [name for tier in self.tiers(svc, inp) for name in tier]

    def home(self, family: str, value: int) -> str | None:
        """The pool an address belongs to: the oldest non-conflicting pool containing it."""
        names = [n for n in self.pools if (family, value) in self.addrs(n)]
        names.sort(key=lambda n: (self.in_conflict(n), self.pools[n].created, n))
        return names[0] if names else None

    # -- who holds what ----------------------------------------------------------------------------------
    def holders(self, addr: Addr) -> list[ServiceKey]:
        return [k for k, h in self.held.items() if h.ips.get(addr[0]) == addr[1]]

    def shareable(self, addr: Addr, key: ServiceKey, terms: Terms) -> bool:
        return all(compatible(self.held[k].terms, terms) for k in self.holders(addr) if k != key)

    def next_free(self, name: str, family: str) -> int | None:
        free = sorted(v for f, v in self.addrs(name) if f == family and not self.holders((f, v)))
        if not free:
            return None
        if self.pools[name].allocation_order == "Lowest":
            return free[0]
        never_used = [v for v in free if (family, v) not in self.freed]
        if never_used:
            return never_used[0]
        return next(v for f, v in self.freed if f == family and v in free)

    def shared_ip(self, name: str, family: str, key: ServiceKey, terms: Terms) -> int | None:
        """The lowest address of the pool held by someone this Service may share with."""
        if not terms.key:
            return None
        shared = [
            v
            for f, v in self.addrs(name)
            if f == family and (others := [k for k in self.holders((f, v)) if k != key])
            and all(compatible(self.held[k].terms, terms) for k in others)
        ]
        return min(shared, default=None)

    # -- the rules ---------------------------------------------------------------------------------------
    def release(self, key: ServiceKey) -> None:
        held = self.held.get(key)
        if held is not None:
            self.recent[key] = (held.uid, dict(held.ips))
            self._commit(key, held.uid, held.terms, {})

    def ensure(self, svc: Svc, status: tuple[str, ...]) -> Outcome:
        key = svc.key
        if key in self.held and self.held[key].uid != svc.uid:
            self.release(key)  # deleted and re-created while we were not looking
        inp = read_inputs(svc, self.reassign_default)
        held = self.held.get(key)
        mine = dict(held.ips) if held is not None else {}
        offered: dict[str, list[int]] = {f: [v] for f, v in mine.items()}
        for text in status:
            addr = parse_ip(text)
            if addr is not None and addr[1] not in offered.setdefault(addr[0], []):
                offered[addr[0]].append(addr[1])

        # 1. Stability: keep what it has while valid and agreeing with its own requests.
        kept: dict[str, int] = {}
        orphans: set[str] = set()
        lost = False
        for family in inp.wanted:
            for value in offered.get(family, []):
                if inp.requested and inp.requested.get(family) != value:
                    continue
                if not self.shareable((family, value), key, inp.terms):
                    lost = True  # another holder may not share it with this Service (any more)
                    continue
                pools = [inp.pool] if inp.pool is not None else list(self.pools)
                if not any((family, value) in self.addrs(n) for n in pools):
                    # Outside its pool. Retained (orphan) only when it is in no pool at all: then status
                    # cannot tell a shrunk pool from a changed request, and retain is the promise.
                    in_any = any((family, value) in self.addrs(n) for n in self.pools)
                    if in_any or inp.reassign or mine.get(family) != value:
                        continue
                    orphans.add(family)
                kept[family] = value
                break

        target = [f for f in inp.wanted if not inp.requested or f in inp.requested]
        missing = [f for f in target if f not in kept]
        failure: str | None = None
        if inp.problem is not None:
            final, failure = kept, CONFLICTING  # nothing added; what may no longer be kept still goes
        elif missing and inp.requested:
            final, failure = self._claim(svc, inp, missing, kept)
        elif not missing or orphans:
            final = kept  # a retained orphan blocks additions: moving is the operator's call
        elif kept:
            final, failure = self._complete(svc, inp, missing, kept)
            if failure and svc.policy == "RequireDualStack":
                final, failure = self._fresh(svc, inp, target, except_key=key)
        else:
            final, failure = self._fresh(svc, inp, target, except_key=key)
        if svc.policy == "RequireDualStack" and any(f not in final for f in target) and inp.problem is None:
            final = {}  # both or nothing, even when the one it has is a retained orphan
        orphans &= set(final)
        self._commit(key, svc.uid, inp.terms, final)

        complete = all(f in final for f in target)
        if failure is not None or (not complete and not orphans):
            return Outcome(self._ips(final), True, failure or WAITING)
        reason = OUTSIDE if orphans else DUPLICATE if lost else ALLOCATED
        return Outcome(self._ips(final), False, reason)

    def _claim(
        self, svc: Svc, inp: Inputs, missing: list[str], kept: dict[str, int]
    ) -> tuple[dict[str, int], str | None]:
        final, failure = dict(kept), None
        for family in missing:
            addr = (family, inp.requested[family])
            pools = [n for n in self.pools if addr in self.addrs(n) and (inp.pool in (None, n))]
            if not any(self.allocatable(n) and self.allows(n, svc) for n in pools):
                failure = NOT_IN_POOL
            elif not self.shareable(addr, svc.key, inp.terms):
                failure = IN_USE
            else:
                final[family] = addr[1]
        return final, failure

    def _complete(
        self, svc: Svc, inp: Inputs, missing: list[str], kept: dict[str, int]
    ) -> tuple[dict[str, int], str | None]:
        """The missing families from the pool of the address it keeps, if that pool still serves it."""
        home = inp.pool or self.home(*next(iter(kept.items())))
        final = dict(kept)
        if home not in self.candidates(svc, inp):
            return final, WAITING
        for family in missing:
            value = self.shared_ip(home, family, svc.key, inp.terms)
            if value is None:
                value = self.next_free(home, family)
            if value is not None:
                final[family] = value
        return final, None if all(f in final for f in missing) else WAITING

    def _fresh(
        self, svc: Svc, inp: Inputs, target: list[str], except_key: ServiceKey
    ) -> tuple[dict[str, int], str | None]:
        # Its own addresses do not count as taken while it starts over.
        saved = self.held.pop(except_key, None)
        try:
            reclaim: dict[str, int] = {}
            recent = self.recent.get(svc.key)
            if recent is not None and recent[0] != svc.uid:
                reclaim = recent[1]  # re-created under the same name: its old address if still free
            for tier in self.tiers(svc, inp):
                plans = []
                for name in tier:
                    plan: dict[str, int] = {}
                    preferred = False
                    for family in target:
                        value = self.shared_ip(name, family, svc.key, inp.terms)
                        old = reclaim.get(family)
                        if value is None and old is not None and (family, old) in self.addrs(name):
                            value = old if not self.holders((family, old)) else None
                        preferred = preferred or value is not None
                        if value is None:
                            value = self.next_free(name, family)
                        if value is not None:
                            plan[family] = value
                    if plan:
                        plans.append((not preferred, plan))
                # stable sort: a pool with the sharing group's (or a reclaimed) address first, rank order kept
                plans.sort(key=lambda p: p[0])
                # MetalLB's findBestPoolForService: every family, else the first-listed family, else any
                for _, plan in plans:
                    if len(plan) == len(target):
                        return plan, None
                if svc.policy == "PreferDualStack":
                    for _, plan in plans:
                        if target[0] in plan:
                            return plan, WAITING
                    if plans:
                        return plans[0][1], WAITING
            return {}, WAITING
        finally:
            if saved is not None:
                self.held[except_key] = saved

    def _commit(self, key: ServiceKey, uid: str, terms: Terms, final: dict[str, int]) -> None:
        before = self.held.pop(key, None)
        for family, value in final.items():
            if (family, value) in self.freed:
                self.freed.remove((family, value))
        if final:
            self.held[key] = Held(uid, dict(final), terms)
        for family, value in (before.ips.items() if before else ()):
            if not self.holders((family, value)) and final.get(family) != value:
                self.freed.append((family, value))

    @staticmethod
    def _ips(final: dict[str, int]) -> frozenset[Addr]:
        return frozenset(final.items())

    # -- restart -------------------------------------------------------------------------------------------
    def adopt(self, claims: list[tuple[Svc, tuple[str, ...]]]) -> None:
        """A new leader: register status IPs; an unchanged claim beats a changed one, then the oldest wins."""
        for svc, status in sorted(claims, key=lambda c: (c[0].changed_since_grant, c[0].created, c[0].uid)):
            terms = read_inputs(svc, self.reassign_default).terms
            ips: dict[str, int] = {}
            for text in status:
                addr = parse_ip(text)
                if addr is None or addr[0] in ips or not self.shareable(addr, svc.key, terms):
                    continue
                ips[addr[0]] = addr[1]
            if ips:
                self.held[svc.key] = Held(svc.uid, ips, terms)

    def could_satisfy(self, svc: Svc) -> bool:
        """Liveness: is there room for a Service that holds nothing? (Brute force, no order.)"""
        inp = read_inputs(svc, self.reassign_default)
        if inp.problem is not None:
            return False
        target = [f for f in inp.wanted if not inp.requested or f in inp.requested]
        if inp.requested:
            return all(self._claim(svc, inp, [f], {})[1] is None for f in target)
        for name in self.candidates(svc, inp):
            room = [
                f
                for f in target
                if any(g == f and self.shareable((g, v), svc.key, inp.terms) for g, v in self.addrs(name))
            ]
            if len(room) == len(target) or (room and svc.policy == "PreferDualStack"):
                return True
        return False
