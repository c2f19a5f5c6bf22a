"""The model and the checks behind the randomized long run (e2e/test_randomized.py).

Everything is observed from the outside, through the API: the pools as the test wrote them, and each
Service's inputs and `status.loadBalancer.ingress` as the API server returns them. The checks are pure
functions of those observations, so a failure message can show exactly what they looked at.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

V4, V6 = "IPv4", "IPv6"
SHARING = "stablelb.io/sharing-key"
REQUEST = "stablelb.io/ips"
ORPHAN_POLICY = "stablelb.io/orphan-policy"
CONDITION = "stablelb.io/IPAllocated"

# Policies a generated Service can have: (ipFamilies, ipFamilyPolicy).
KINDS: dict[str, tuple[tuple[str, ...], str]] = {
    "v4": ((V4,), "SingleStack"),
    "v6": ((V6,), "SingleStack"),
    "prefer": ((V4, V6), "PreferDualStack"),
    "require": ((V4, V6), "RequireDualStack"),
}


def family_of(ip: str) -> str:
    return V4 if ipaddress.ip_address(ip).version == 4 else V6


def canonical(ip: str) -> str:
    return str(ipaddress.ip_address(ip))


# -- pools ----------------------------------------------------------------------------------------
@dataclass
class PoolModel:
    """One IPPool as the test wrote it: per family an inclusive range of host numbers (or none).

    Host number n is `<v4 prefix>n` or `<v6 prefix>n` (hex); ranges never start at 0, so the v6
    all-zeros address never comes up.
    """

    full_name: str
    v4_prefix: str
    v6_prefix: str
    ranges: dict[str, tuple[int, int] | None]

    def address(self, family: str, n: int) -> str:
        return canonical(f"{self.v4_prefix}{n}" if family == V4 else f"{self.v6_prefix}{n:x}")

    def addresses(self, family: str) -> set[str]:
        bounds = self.ranges.get(family)
        if bounds is None:
            return set()
        return {self.address(family, n) for n in range(bounds[0], bounds[1] + 1)}

    def all_addresses(self) -> set[str]:
        return self.addresses(V4) | self.addresses(V6)

    def spec_addresses(self) -> list[str]:
        out = []
        for family in (V4, V6):
            bounds = self.ranges.get(family)
            if bounds is None:
                continue
            lo, hi = bounds
            first, last = self.address(family, lo), self.address(family, hi)
            if lo == hi:
                out.append(f"{first}/{32 if family == V4 else 128}")
            else:
                out.append(f"{first}-{last}")
        return out

    def describe(self) -> str:
        return f"{self.full_name}={self.spec_addresses()}"


def pool_of(pools: Iterable[PoolModel], ip: str) -> PoolModel | None:
    for pool in pools:
        if ip in pool.addresses(family_of(ip)):
            return pool
    return None


# -- observed Services --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observed:
    """One Service as read back from the API server."""

    name: str
    uid: str
    rv: str
    ips: tuple[str, ...]
    families: tuple[str, ...]
    policy: str
    ports: frozenset[tuple[str, int]]
    sharing_key: str | None
    requested: str | None
    reassign: bool
    reason: str | None
    message: str | None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Observed:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        ann = meta.get("annotations") or {}
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        cond = next(
            (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == CONDITION), None
        )
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            rv=str(meta["resourceVersion"]),
            ips=tuple(canonical(e["ip"]) for e in ingress if "ip" in e),
            families=tuple(spec.get("ipFamilies") or ()),
            policy=str(spec.get("ipFamilyPolicy") or "SingleStack"),
            ports=frozenset((str(p.get("protocol", "TCP")), int(p["port"])) for p in spec.get("ports") or ()),
            sharing_key=ann.get(SHARING) or None,
            requested=canonical(ann[REQUEST]) if ann.get(REQUEST) else None,
            reassign=ann.get(ORPHAN_POLICY) == "reassign",
            reason=None if cond is None else cond.get("reason"),
            message=None if cond is None else cond.get("message"),
        )

    def wanted(self) -> tuple[str, ...]:
        return self.families if self.policy != "SingleStack" else self.families[:1]

    def line(self) -> str:
        extras = []
        if self.sharing_key:
            extras.append(f"key={self.sharing_key}")
        if self.requested:
            extras.append(f"req={self.requested}")
        if self.reassign:
            extras.append("reassign")
        ports = ",".join(f"{p}/{n}" for p, n in sorted(self.ports))
        return (
            f"{self.name:<6} uid={self.uid[:8]} rv={self.rv:<7} {self.policy}{list(self.families)} "
            f"ports={ports} "
            f"{' '.join(extras)} ips={list(self.ips)} cond={self.reason}: {self.message}"
        )


@dataclass(frozen=True)
class Snapshot:
    services: tuple[Observed, ...]

    @classmethod
    def of(cls, items: Iterable[Mapping[str, Any]]) -> Snapshot:
        return cls(tuple(sorted((Observed.of(o) for o in items), key=lambda o: o.name)))

    def by_uid(self) -> dict[str, Observed]:
        return {o.uid: o for o in self.services}

    def rvs(self) -> dict[str, str]:
        return {o.uid: o.rv for o in self.services}

    def held(self) -> dict[str, list[Observed]]:
        out: dict[str, list[Observed]] = {}
        for o in self.services:
            for ip in o.ips:
                out.setdefault(ip, []).append(o)
        return out

    def table(self) -> str:
        return "\n".join(o.line() for o in self.services) or "(no Services)"


# -- invariants ----------------------------------------------------------------------------------------
def uniqueness_violations(snap: Snapshot) -> list[str]:
    """Design §2.1: an IP has one holder, or holders with one sharing key and pairwise disjoint ports."""
    out = []
    for ip, holders in sorted(snap.held().items()):
        if len(holders) < 2:
            continue
        keys = {h.sharing_key for h in holders}
        clash = [
            (a.name, b.name, sorted(a.ports & b.ports))
            for i, a in enumerate(holders)
            for b in holders[i + 1 :]
            if a.ports & b.ports
        ]
        if None in keys or len(keys) > 1 or clash:
            out.append(
                f"{ip} held by {[h.name for h in holders]} with sharing keys {sorted(map(str, keys))}"
                f" and port clashes {clash}"
            )
    for o in snap.services:
        families = [family_of(ip) for ip in o.ips]
        if len(set(families)) != len(families):
            out.append(f"{o.name} holds two addresses of one family: {list(o.ips)}")
    return out


def request_violations(snap: Snapshot) -> list[str]:
    """A Service that requests an IP holds that IP or nothing (never some other address)."""
    return [
        f"{o.name} requests {o.requested} but holds {list(o.ips)}"
        for o in snap.services
        if o.requested and set(o.ips) - {o.requested}
    ]


def orphan_violations(snap: Snapshot, pools: list[PoolModel]) -> list[str]:
    """Retain policy: a kept IP outside every pool is flagged IPOutsidePool on its Service's condition."""
    out = []
    for o in snap.services:
        if o.reassign:
            continue
        outside = [ip for ip in o.ips if pool_of(pools, ip) is None]
        if outside and o.reason != "IPOutsidePool":
            out.append(f"{o.name} keeps {outside} outside every pool but its condition says {o.reason}")
    return out


def liveness_violations(snap: Snapshot, pools: list[PoolModel]) -> list[str]:
    """Design §2.3, conservatively: only Services that clearly fit in what is free right now.

    Free = in a pool and held by nobody. A requested IP counts only when it is free; a Service that keeps
    an orphaned IP is never asked to grow (a retained orphan blocks additions by design).
    """
    held = snap.held()
    free = {
        pool.full_name: {f: {ip for ip in pool.addresses(f) if ip not in held} for f in (V4, V6)}
        for pool in pools
    }
    out = []
    for o in snap.services:
        wanted = o.wanted()
        if o.requested:
            if (
                family_of(o.requested) in wanted
                and o.requested not in o.ips
                and o.requested not in held
                and pool_of(pools, o.requested) is not None
            ):
                out.append(f"{o.name} requests free in-pool {o.requested} but holds {list(o.ips)}")
            continue
        if not o.ips:
            if o.policy == "RequireDualStack":
                fits = [p for p, f in free.items() if all(f[fam] for fam in wanted)]
            else:
                fits = [p for p, f in free.items() if any(f[fam] for fam in wanted)]
            if fits:
                out.append(f"{o.name} ({o.policy} {list(wanted)}) holds nothing though {fits} have room")
            continue
        if o.policy == "PreferDualStack" and len(o.ips) == 1:
            home = pool_of(pools, o.ips[0])
            missing = [f for f in wanted if f != family_of(o.ips[0])]
            if home is not None and any(free[home.full_name][f] for f in missing):
                out.append(
                    f"{o.name} holds only {list(o.ips)} though its pool {home.full_name} has {missing} free"
                )
    return out


@dataclass
class StepRules:
    """Which IP changes a step permits: inputs it touched, and the pools as they are after it."""

    touched: set[str] = field(default_factory=set)  # uids whose own inputs changed
    frozen: bool = False  # restart / failover: no IP may change, not even be added


def stability_violations(
    before: Snapshot, after: Snapshot, rules: StepRules, pools: list[PoolModel]
) -> list[str]:
    """Design §2.2: a live Service loses an IP only when the step touched its inputs.

    A Service that opted in to `orphan-policy: reassign` may also drop an IP that is now outside every
    pool. Gaining an IP (a pending Service served) is fine, except across a restart or failover, where
    nothing at all may change.
    """
    out = []
    now = after.by_uid()
    for uid, old in before.by_uid().items():
        new = now.get(uid)
        if new is None or uid in rules.touched:
            continue
        for ip in old.ips:
            if ip in new.ips:
                continue
            if old.reassign and pool_of(pools, ip) is None:
                continue
            out.append(f"{old.name} lost {ip}: {list(old.ips)} -> {list(new.ips)}")
        if rules.frozen and old.ips != new.ips:
            out.append(
                f"{old.name} changed IPs across a restart/failover: {list(old.ips)} -> {list(new.ips)}"
            )
    return out


def restart_write_violations(before: Snapshot, after: Snapshot) -> list[str]:
    """Design §2.4/§2.6 (issue 6 scenario 2): a fresh leader re-derives the status it finds, writing nothing.

    A write here means the status a Service had settled on depended on history the new process does not
    have (a stale condition, say), or that the rules do not have one fixed point.
    """
    out = []
    now = after.by_uid()
    for uid, old in before.by_uid().items():
        new = now.get(uid)
        if new is not None and old.rv != new.rv:
            out.append(
                f"{old.name} rewritten by the new leader: rv {old.rv} -> {new.rv}, ips {list(old.ips)} -> "
                f"{list(new.ips)}, condition {old.reason}: {old.message!r} -> {new.reason}: {new.message!r}"
            )
    return out


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
