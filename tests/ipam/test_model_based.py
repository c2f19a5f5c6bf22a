"""The real Allocator against the reference model (reference_model.py), over random histories.

Services are written as Kubernetes objects and read by the controller's own `read_service`, so annotation
sources, families and sharing terms go through the code a cluster would run; the model reads the same
inputs its own way. Every reconcile is done by both and compared. After every step:

- uniqueness: every IP's holders (by status) are pairwise sharing-compatible, and status shows exactly what
  the allocator holds;
- agreement with the model, decision by decision (IPs, pending, and the reason when not pending);
- fixed point: ensuring again with the status just written changes nothing;
- stability: a Service loses an IP only when its own inputs changed or its pool no longer contains the IP;
- liveness: a Service that holds nothing and is pending has no room anywhere (by brute force);
- restart-equivalence: a fresh allocator adopting the statuses decides exactly what the live one does.

A restart may also happen right after one Service was edited and before it was reconciled (a failover),
then the new leader decides from status alone.

CI runs a fixed derandomized budget (conftest.IPAM_PROFILE); STABLELB_IPAM_EXAMPLES=N runs deeper.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controller.ipam import AllocationOrder, Allocator, PoolSpec, Selector, ServiceAllocation, ServiceKey
from controller.reconcile.service_input import CONDITION_TYPE, read_service

from .conftest import IPAM_PROFILE
from .reference_model import (
    ALLOCATED,
    DUPLICATE,
    IP_SOURCES,
    POOL_SOURCES,
    SHARING_SOURCES,
    Model,
    Outcome,
    Svc,
    compatible,
    parse_ip,
    read_inputs,
)

LB_CLASS = "stablelb.io/lb"
NAMES = ("s0", "s1", "s2", "s3", "s4")
NAMESPACES = {"ns0": (), "ns1": (("tier", "prod"),)}
POOL_NAMES = ("a", "b", "c")
PORTS = (("TCP", 80), ("TCP", 443), ("UDP", 53))
FAMILY_LISTS = [("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _clock() -> float:
    return 1000.0


# ------------------------------------------------------------------------------------------ generators
@dataclass(frozen=True)
class Inputs:
    """What a user may edit on a Service (the model's Svc minus identity), plus class and spec IP."""

    families: tuple[str, ...]
    policy: str
    annotations: tuple[tuple[str, str], ...]
    spec_ip: str | None
    ports: frozenset[tuple[str, int]]
    local: bool
    selector: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    ours: bool

    def spec_part(self) -> tuple[Any, ...]:
        """What metadata.generation counts (spec fields; annotations and labels are metadata)."""
        return (self.families, self.policy, self.spec_ip, self.ports, self.local, self.selector, self.ours)


# requested IPs lean towards the low addresses, which are the ones already handed out
v4 = st.one_of(st.integers(0, 3), st.integers(0, 15)).map(lambda i: f"10.0.0.{i}")
v6 = st.one_of(st.integers(0, 3), st.integers(0, 15)).map(lambda i: f"fd00::{i:x}")


@st.composite
def inputs(draw: st.DrawFn, *, sharing: bool = True) -> Inputs:
    families = draw(st.sampled_from(FAMILY_LISTS))
    policy = draw(st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"]))
    ann: dict[str, str] = {}
    spec_ip = None
    if draw(st.integers(0, 3)) == 0:  # requested IPs, from one or more sources
        ips = [draw(v4 if f == "IPv4" else v6) for f in draw(st.sampled_from([families, families[:1]]))]
        kind = draw(st.integers(0, 9))
        if kind == 0:
            ips = [*ips, draw(v4)]  # contradictory: maybe two IPv4
        elif kind == 1:
            ips = ["fd00::9%eth0"]  # a zone id is not an IP address
        text = ",".join(ips)
        sources = draw(st.lists(st.sampled_from([*IP_SOURCES, "spec"]), min_size=1, max_size=2, unique=True))
        for i, source in enumerate(sources):
            value = text if i == 0 or draw(st.integers(0, 3)) else ",".join([draw(v4)])  # sometimes disagree
            if source == "spec":
                spec_ip = value.split(",")[0] if i == 0 else value
            else:
                ann[source] = value
    if draw(st.integers(0, 3)) == 0:  # requested pool (d does not exist)
        names = draw(st.lists(st.sampled_from(POOL_SOURCES), min_size=1, max_size=2, unique=True))
        pool = draw(st.sampled_from([*POOL_NAMES, "d"]))
        for name in names:
            ann[name] = pool if draw(st.integers(0, 5)) else draw(st.sampled_from(POOL_NAMES))
    if sharing and draw(st.booleans()):
        key = draw(st.sampled_from(["k1", "k2"]))
        for name in draw(st.lists(st.sampled_from(SHARING_SOURCES), min_size=1, max_size=2, unique=True)):
            ann[name] = key
    orphan = draw(st.sampled_from([None, None, "reassign", "retain"]))
    if orphan:
        ann["stablelb.io/orphan-policy"] = orphan
    return Inputs(
        families=families,
        policy=policy,
        annotations=tuple(sorted(ann.items())),
        spec_ip=spec_ip,
        ports=draw(st.frozensets(st.sampled_from(PORTS), min_size=1)),
        local=draw(st.integers(0, 3)) == 0,
        selector=draw(st.sampled_from([(), (("app", "x"),), (("app", "y"),)])),
        labels=draw(st.sampled_from([(), (("tier", "gold"),)])),
        ours=draw(st.integers(0, 9)) > 0,
    )


@st.composite
def one_field_edit(draw: st.DrawFn, old: Inputs) -> Inputs:
    field_name = draw(st.sampled_from(["ports", "labels", "families", "policy", "pool"]))
    if field_name == "pool":  # the pool annotation alone (set, changed or removed)
        ann = {k: v for k, v in old.annotations if k not in POOL_SOURCES}
        pool = draw(st.sampled_from([None, *POOL_NAMES]))
        if pool is not None:
            ann["stablelb.io/pool"] = pool
        return replace(old, annotations=tuple(sorted(ann.items())))
    if field_name == "ports":
        return replace(old, ports=draw(st.frozensets(st.sampled_from(PORTS), min_size=1)))
    if field_name == "labels":
        return replace(old, labels=draw(st.sampled_from([(), (("tier", "gold"),)])))
    if field_name == "families":
        return replace(old, families=draw(st.sampled_from(FAMILY_LISTS)))
    return replace(old, policy=draw(st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"])))


@st.composite
def block(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    lo = draw(st.integers(0, 15))
    hi = draw(st.integers(lo, min(15, lo + 4)))
    if kind == 0:
        return draw(st.sampled_from(["10.0.0.3/28", "fd00::1/124", "10.0.0.9-10.0.0.2"]))  # invalid
    if kind <= 4:
        return f"10.0.0.{lo}-10.0.0.{hi}" if hi > lo else f"10.0.0.{lo}"
    if kind <= 6:
        return draw(st.sampled_from(["10.0.0.0/30", "10.0.0.8/29", "10.0.0.0/28"]))
    if kind == 7:
        return draw(st.sampled_from(["fd00::/125", "fd00::8/125", "fd00::/124"]))  # all-zeros skipped
    return f"fd00::{lo:x}-fd00::{hi:x}"


ALLOCATIONS = [
    None,
    None,
    None,
    ServiceAllocation(priority=1, namespaces=frozenset({"ns1"})),
    ServiceAllocation(priority=0, namespace_selectors=(Selector(match_labels=(("tier", "prod"),)),)),
    ServiceAllocation(priority=None, service_selectors=(Selector(match_labels=(("tier", "gold"),)),)),
    ServiceAllocation(priority=2),
]


@st.composite
def pool_spec(draw: st.DrawFn, name: str) -> PoolSpec:
    blocks = draw(st.lists(block(), min_size=1, max_size=3))
    only = draw(st.sampled_from([None, "10.", "fd00:"]))  # often single-family pools (family order matters)
    if only is not None:
        fallback = "10.0.0.0/30" if only == "10." else "fd00::/125"
        blocks = [b for b in blocks if b.startswith(only)] or [fallback]
    return PoolSpec(
        name=name,
        addresses=tuple(blocks),
        created=float(draw(st.integers(0, 3))),
        auto_assign=draw(st.integers(0, 5)) > 0,
        avoid_buggy_ips=draw(st.integers(0, 4)) == 0,
        allocation_order=draw(st.sampled_from(list(AllocationOrder))),
        service_allocation=draw(st.sampled_from(ALLOCATIONS)),
        disabled=draw(st.integers(0, 6)) == 0,
    )


@st.composite
def serving_pool(draw: st.DrawFn, name: str) -> PoolSpec:
    """A valid, enabled, unrestricted dual-stack pool: without one most runs hold almost no IPs (half the
    Services found no pool), and sharing groups, takeovers and reuse order were hardly ever exercised."""
    return PoolSpec(
        name=name,
        addresses=draw(
            st.sampled_from([("10.0.0.0/29", "fd00::/125"), ("10.0.0.0-10.0.0.3", "fd00::1-fd00::3")])
        ),
        allocation_order=draw(st.sampled_from(list(AllocationOrder))),
    )


# ------------------------------------------------------------------------------------------ the world
@dataclass
class Service:
    key: ServiceKey
    uid: str
    created: int
    inputs: Inputs
    generation: int = 1
    observed: int = 0  # observedGeneration of our condition; 0: none written yet
    status: tuple[str, ...] = ()
    dirty: bool = True  # inputs changed since the last decision was written
    last: tuple[frozenset[str], bool, str] | None = field(default=None)

    def svc(self) -> Svc:
        i = self.inputs
        return Svc(
            key=self.key,
            uid=self.uid,
            created=float(self.created),
            families=i.families,
            policy=i.policy,
            annotations=i.annotations,
            spec_ip=i.spec_ip,
            ports=i.ports,
            local=i.local,
            selector=i.selector,
            labels=i.labels,
            namespace_labels=NAMESPACES[self.key.namespace],
            changed_since_grant=self.observed != 0 and self.generation > self.observed,
        )

    def obj(self) -> dict[str, Any]:
        i = self.inputs
        spec: dict[str, Any] = {
            "type": "LoadBalancer",
            "ipFamilies": list(i.families),
            "ipFamilyPolicy": i.policy,
            "ports": [{"protocol": p, "port": n} for p, n in sorted(i.ports)],
            "externalTrafficPolicy": "Local" if i.local else "Cluster",
            "selector": dict(i.selector),
        }
        if not i.ours:
            spec["loadBalancerClass"] = "other.example/lb"
        if i.spec_ip:
            spec["loadBalancerIP"] = i.spec_ip
        created = datetime.fromtimestamp(EPOCH + self.created, tz=UTC).isoformat().replace("+00:00", "Z")
        conditions = [{"type": CONDITION_TYPE, "observedGeneration": self.observed}] if self.observed else []
        return {
            "metadata": {
                "name": self.key.name,
                "namespace": self.key.namespace,
                "uid": self.uid,
                "creationTimestamp": created,
                "generation": self.generation,
                "annotations": dict(i.annotations),
                "labels": dict(i.labels),
            },
            "spec": spec,
            "status": {
                "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in self.status]},
                "conditions": conditions,
            },
        }


def _addrs(ips: tuple[str, ...] | frozenset[str]) -> frozenset[tuple[str, int]]:
    return frozenset(a for ip in ips if (a := parse_ip(ip)) is not None)


def _show(outcome: Outcome) -> str:
    return f"{sorted(outcome.ips)} pending={outcome.pending} {outcome.reason}"


class ModelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reassign_default = False
        self.alloc = Allocator(clock=_clock)
        self.model = Model()
        self.pools: dict[str, PoolSpec] = {}
        self.services: dict[ServiceKey, Service] = {}
        self.seq = itertools.count(1)

    # -- the controller, as the reconciler drives the allocator ------------------------------------------
    def _request(self, s: Service, alloc: Allocator, *, live: bool) -> Any:
        current = alloc.assignment(s.key) or None if live else None
        inp = read_service(
            s.obj(),
            reassign_orphans=self.reassign_default,
            namespace_labels=dict(NAMESPACES[s.key.namespace]),
            current_ips=current,
        )
        changed = s.observed != 0 and s.generation > s.observed
        return inp, replace(inp.request, changed_since_grant=changed)

    def _decide(self, s: Service, alloc: Allocator) -> tuple[frozenset[str], bool, str]:
        """What the reconciler would write: (IPs, pending, reason). Not-ours Services are released."""
        if not s.inputs.ours:
            alloc.release(s.key)
            return frozenset(), False, "NotOurs"
        # An input problem goes through ensure too (request.problem): nothing is added, what the current
        # inputs may not keep is let go, and the status shows only what the allocator holds (defect 2).
        _, request = self._request(s, alloc, live=True)
        d = alloc.ensure(request)
        return frozenset(d.ips), d.pending, d.reason.value

    def _model_decide(self, s: Service, model: Model) -> Outcome:
        if not s.inputs.ours:
            model.release(s.key)
            return Outcome(frozenset(), False, "NotOurs")
        return model.ensure(s.svc(), s.status)

    def _reconcile(self, s: Service) -> bool:
        """Reconcile one Service with both; check agreement, stability, the fixed point. True if changed."""
        before = set(s.status)
        ips, pending, reason = self._decide(s, self.alloc)
        expected = self._model_decide(s, self.model)
        got = f"{sorted(_addrs(ips))} pending={pending} {reason}"
        context = f"{s.key} ({s.svc()}) status {s.status}"
        assert _addrs(ips) == expected.ips, f"IPs: allocator {got}, model {_show(expected)}; {context}"
        assert pending == expected.pending, f"pending: allocator {got}, model {_show(expected)}; {context}"
        if not pending:
            assert reason == expected.reason, f"reason: allocator {got}, model {_show(expected)}; {context}"
        if not s.dirty:
            self._check_stability(s, before - set(ips))
        s.status = tuple(sorted(ips, key=lambda ip: (":" in ip, ip)))
        decided = (ips, pending, reason)
        changed = decided != s.last
        s.last = decided
        if s.inputs.ours:
            s.observed = s.generation
        s.dirty = False
        # fixed point: deciding again from what was just written changes nothing
        again = self._decide(s, self.alloc)
        m_again = self._model_decide(s, self.model)
        assert again[:2] == decided[:2], f"not a fixed point: {decided} then {again}; {context}"
        assert _addrs(again[0]) == m_again.ips and again[1] == m_again.pending, f"model second pass {m_again}"
        if reason != DUPLICATE:
            assert again == decided, f"reason not a fixed point: {decided} then {again}; {context}"
        s.last = again
        return changed

    def _check_stability(self, s: Service, lost: set[str]) -> None:
        """An unchanged Service loses only IPs its pool no longer holds (RequireDualStack: their twin too)."""
        inp = read_inputs(s.svc(), self.reassign_default)
        pools = [inp.pool] if inp.pool is not None else list(self.pools)
        outside = {ip for ip in s.status if not any(_addrs((ip,)) <= self.model.addrs(n) for n in pools)}
        allowed = outside | (set(s.status) if outside and s.inputs.policy == "RequireDualStack" else set())
        assert lost <= allowed, f"stability: {s.key} lost {lost - allowed} though nothing of its own changed"

    def _settle(self) -> None:
        for _ in range(6):
            changed = [self._reconcile(s) for _, s in sorted(self.services.items())]
            if not any(changed):
                return
        raise AssertionError("reconciling every Service does not settle")

    def _set_pools(self) -> None:
        self.alloc.set_pools(list(self.pools.values()))
        self.model.set_pools(list(self.pools.values()))

    def _restarted(self) -> tuple[Allocator, Model]:
        """A new leader: pools first, then every status claim adopted, before any decision."""
        fresh, model = Allocator(clock=_clock), Model(reassign_default=self.reassign_default)
        fresh.set_pools(list(self.pools.values()))
        model.set_pools(list(self.pools.values()))
        claims = [s for s in self.services.values() if s.inputs.ours and s.status]
        fresh.adopt([self._request(s, fresh, live=False)[1] for s in claims])
        model.adopt([(s.svc(), s.status) for s in claims])
        return fresh, model

    # -- rules -------------------------------------------------------------------------------------------
    @initialize(
        a=st.one_of(serving_pool("a"), pool_spec("a")),
        b=st.one_of(st.none(), pool_spec("b")),
        reassign=st.booleans(),
    )
    def start(self, a: PoolSpec, b: PoolSpec | None, reassign: bool) -> None:
        self.reassign_default = reassign
        self.model.reassign_default = reassign
        self.pools = {p.name: p for p in (a, b) if p is not None}
        self._set_pools()

    def _maybe_request_a_held_ip(self, data: st.DataObject, i: Inputs) -> Inputs:
        """Often ask for an address someone already holds: sharing groups, RequestedIPInUse, duplicates."""
        held = sorted({ip for s in self.services.values() for ip in s.status})
        if not held or data.draw(st.booleans()):
            return i
        ip = data.draw(st.sampled_from(held))
        family = "IPv6" if ":" in ip else "IPv4"
        families = (family, *(f for f in i.families if f != family))
        ann = {k: v for k, v in i.annotations if k not in IP_SOURCES}
        ann["stablelb.io/ips"] = ip
        holders = [s for s in self.services.values() if ip in s.status]
        keys = sorted({v for h in holders for k, v in h.inputs.annotations if k in SHARING_SOURCES})
        share: bool = data.draw(st.integers(0, 3)) > 0
        if keys and share:  # often to share it
            ann = {k: v for k, v in ann.items() if k not in SHARING_SOURCES}
            ann["stablelb.io/sharing-key"] = data.draw(st.sampled_from(keys))
        policy = "PreferDualStack" if i.policy == "RequireDualStack" else i.policy
        annotations = tuple(sorted(ann.items()))
        return replace(i, families=families, policy=policy, annotations=annotations, spec_ip=None)

    @rule(
        data=st.data(),
        name=st.sampled_from(NAMES),
        ns=st.sampled_from(sorted(NAMESPACES)),
        i=inputs(),
        same_second=st.booleans(),
    )
    def create(self, data: st.DataObject, name: str, ns: str, i: Inputs, same_second: bool) -> None:
        key = ServiceKey(ns, name)
        if key in self.services:
            return
        n = next(self.seq)
        created = max((s.created for s in self.services.values()), default=0) + (0 if same_second else 1)
        i = self._maybe_request_a_held_ip(data, i)
        self.services[key] = Service(key, f"uid-{n:04d}", created, i)
        self._reconcile(self.services[key])
        self._settle()

    @rule(name=st.sampled_from(NAMES), key=st.sampled_from(["k1", "k2"]), port=st.sampled_from(PORTS))
    def create_sharer(self, name: str, key: str, port: tuple[str, int]) -> None:
        """A plain Service with a sharing key and one port: the seed of a sharing group."""
        skey = ServiceKey("ns0", name)
        if skey in self.services:
            return
        i = Inputs(
            families=("IPv4",),
            policy="SingleStack",
            annotations=(("stablelb.io/sharing-key", key),),
            spec_ip=None,
            ports=frozenset({port}),
            local=False,
            selector=(),
            labels=(),
            ours=True,
        )
        n = next(self.seq)
        created = max((s.created for s in self.services.values()), default=0) + 1
        self.services[skey] = Service(skey, f"uid-{n:04d}", created, i)
        self._reconcile(self.services[skey])
        self._settle()

    @precondition(lambda self: any(s.status for s in self.services.values()))
    @rule(data=st.data(), newcomers=st.integers(1, 2))
    def join_sharing_group(self, data: st.DataObject, newcomers: int) -> None:
        """New Services ask for a held IP with a holder's sharing key and one port: real sharing groups of
        two and three, where a newcomer may clash with the newest holder only (never the first one the
        allocator looks at) or differ in backend (Local without a selector versus Cluster)."""
        ip = data.draw(st.sampled_from(sorted({ip for s in self.services.values() for ip in s.status})))
        for _ in range(newcomers):
            free_names = [ServiceKey(ns, n) for ns in sorted(NAMESPACES) for n in NAMES]
            free_names = [k for k in free_names if k not in self.services]
            holders = [s for _, s in sorted(self.services.items()) if ip in s.status]
            if not free_names or not holders:
                return
            key = data.draw(st.sampled_from(free_names))
            keyed = [h for h in holders if any(k in SHARING_SOURCES for k, _ in h.inputs.annotations)]
            model = data.draw(st.sampled_from(keyed or holders))
            keys = [v for k, v in model.inputs.annotations if k in SHARING_SOURCES]
            used = [p for h in holders for p in h.inputs.ports]
            newest = max(holders, key=lambda h: (h.created, h.uid))
            only_newest = [p for p in newest.inputs.ports if used.count(p) == 1]
            clash = len(holders) > 1 and only_newest and data.draw(st.booleans())
            others = [p for p in PORTS if p not in used] or list(PORTS)
            port = data.draw(st.sampled_from(only_newest if clash else others))
            local, selector = model.inputs.local, model.inputs.selector
            backend = data.draw(st.sampled_from(["same", "same", "local flipped", "selector changed"]))
            if backend == "local flipped":
                local = not local
            elif backend == "selector changed":
                selector = (("app", "y"),) if selector != (("app", "y"),) else ()
            ann = {"stablelb.io/ips": ip, "stablelb.io/sharing-key": keys[0] if keys else "k1"}
            i = Inputs(
                families=("IPv6" if ":" in ip else "IPv4",),
                policy="SingleStack",
                annotations=tuple(sorted(ann.items())),
                spec_ip=None,
                ports=frozenset({port}),
                local=local,
                selector=selector,
                labels=model.inputs.labels,
                ours=True,
            )
            n = next(self.seq)
            created = max(s.created for s in self.services.values()) + 1
            self.services[key] = Service(key, f"uid-{n:04d}", created, i)
            self._reconcile(self.services[key])
            self._settle()

    def _edit(self, s: Service, i: Inputs) -> None:
        if i.spec_part() != s.inputs.spec_part():
            s.generation += 1
        s.inputs = i
        s.dirty = True

    @precondition(lambda self: self.services)
    @rule(data=st.data(), i=inputs())
    def edit(self, data: st.DataObject, i: Inputs) -> None:
        s = self.services[data.draw(st.sampled_from(sorted(self.services)))]
        self._edit(s, self._maybe_request_a_held_ip(data, i))
        self._reconcile(s)
        self._settle()

    @precondition(lambda self: self.services)
    @rule(data=st.data())
    def edit_one_field(self, data: st.DataObject) -> None:
        """One field only (ports, labels, families, policy): sharers whose ports now clash, relabelled..."""
        s = self.services[data.draw(st.sampled_from(sorted(self.services)))]
        self._edit(s, data.draw(one_field_edit(s.inputs)))
        self._reconcile(s)
        self._settle()

    @precondition(lambda self: self.services)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.services)))
        del self.services[key]
        self.alloc.release(key)
        self.model.release(key)
        assert self.alloc.assignment(key) == ()
        self._settle()

    @rule(data=st.data(), name=st.sampled_from(POOL_NAMES))
    def put_pool(self, data: st.DataObject, name: str) -> None:
        self.pools[name] = data.draw(pool_spec(name))
        self._set_pools()
        self._settle()

    @precondition(lambda self: self.pools)
    @rule(data=st.data())
    def shrink_pool(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.pools)))
        spec = self.pools[name]
        if len(spec.addresses) > 1:
            self.pools[name] = replace(spec, addresses=spec.addresses[1:])
        else:
            self.pools[name] = replace(spec, disabled=not spec.disabled)
        self._set_pools()
        self._settle()

    @precondition(lambda self: self.pools)
    @rule(data=st.data(), how=st.sampled_from(["invalid", "deleted", "recreated later"]))
    def flap_pool(self, data: st.DataObject, how: str) -> None:
        """A pool briefly invalid, or deleted and re-created: nothing of its reuse order may be lost."""
        name = data.draw(st.sampled_from(sorted(self.pools)))
        spec = self.pools[name]
        if how == "invalid":
            self.pools[name] = replace(spec, addresses=(*spec.addresses, "10.0.0.1/24"))
        else:
            del self.pools[name]
        self._set_pools()
        self._settle()
        self.pools[name] = replace(spec, created=spec.created + 10) if how == "recreated later" else spec
        self._set_pools()
        self._settle()

    @rule(name=st.sampled_from(POOL_NAMES))
    def delete_pool(self, name: str) -> None:
        self.pools.pop(name, None)
        self._set_pools()
        self._settle()

    @rule(data=st.data(), while_down=st.booleans())
    def clash_sharers(self, data: st.DataObject, while_down: bool) -> None:
        """A Service sharing an IP takes a port of a co-holder (live, or while no leader runs)."""
        pairs = [
            (x, y)
            for x, y in itertools.permutations(sorted(self.services), 2)
            if set(self.services[x].status) & set(self.services[y].status)
        ]
        if not pairs:
            return
        x, y = data.draw(st.sampled_from(pairs))
        s, other = self.services[x], self.services[y]
        taken = data.draw(st.sampled_from(sorted(other.inputs.ports)))
        self._edit(s, replace(s.inputs, ports=s.inputs.ports | {taken}))
        if while_down:
            self.alloc, self.model = self._restarted()
        else:
            self._reconcile(s)
        self._settle()

    @rule(data=st.data(), edit=st.sampled_from(["none", "one field", "inputs"]))
    def restart(self, data: st.DataObject, edit: str) -> None:
        """Failover; maybe one Service was edited while no leader ran (its sharing key left alone: annotation
        edits leave no trace in metadata.generation, so which claim changed is not knowable from status)."""
        if edit != "none" and self.services:
            s = self.services[data.draw(st.sampled_from(sorted(self.services)))]
            if edit == "one field":
                self._edit(s, data.draw(one_field_edit(s.inputs)))
            else:
                i = data.draw(inputs(sharing=False))
                kept_sharing = tuple(kv for kv in s.inputs.annotations if kv[0] in SHARING_SOURCES)
                others = tuple(kv for kv in i.annotations if kv[0] not in SHARING_SOURCES)
                self._edit(s, replace(i, annotations=tuple(sorted(others + kept_sharing))))
        self.alloc, self.model = self._restarted()
        self._settle()

    # -- invariants --------------------------------------------------------------------------------------
    @invariant()
    def uniqueness(self) -> None:
        by_ip: dict[str, list[Service]] = {}
        for key, s in self.services.items():
            assert _addrs(s.status) == _addrs(self.alloc.assignment(key)), (
                f"{key} shows {s.status} but the allocator holds {self.alloc.assignment(key)}"
            )
            for ip in s.status:
                by_ip.setdefault(ip, []).append(s)
        for ip, holders in by_ip.items():
            for x, y in itertools.combinations(holders, 2):
                tx = read_inputs(x.svc(), self.reassign_default).terms
                ty = read_inputs(y.svc(), self.reassign_default).terms
                assert compatible(tx, ty), f"{ip} held by {x.key} and {y.key}, which may not share it"

    @invariant()
    def liveness(self) -> None:
        for s in self.services.values():
            if s.inputs.ours and not s.status and s.last is not None and s.last[1]:
                assert not self.model.could_satisfy(s.svc()), f"{s.key} is pending though there is room"

    @invariant()
    def restart_equivalence(self) -> None:
        fresh, _ = self._restarted()
        for _, s in sorted(self.services.items()):
            if not s.inputs.ours or s.last is None:
                continue
            ips, pending, reason = self._decide(s, fresh)
            live_ips, live_pending, live_reason = s.last
            assert (ips, pending) == (live_ips, live_pending), (
                f"restart: {s.key} gets {sorted(ips)} pending={pending} {reason}, "
                f"live {sorted(live_ips)} pending={live_pending} {live_reason}"
            )
            if live_reason != DUPLICATE:  # the one decision that names the past
                assert reason == live_reason or (pending and live_pending), (
                    f"restart: {s.key} reason {reason}, live {live_reason}"
                )
            assert live_reason != ALLOCATED or not pending


TestModelBased = ModelMachine.TestCase
TestModelBased.settings = settings(
    settings.get_profile(IPAM_PROFILE),
    max_examples=int(os.environ.get("STABLELB_IPAM_EXAMPLES", "300")),
    stateful_step_count=30,
)
