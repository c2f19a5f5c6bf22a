"""Plain, frozen value types that cross the IPAM API (no Kubernetes objects, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

IPV4 = "IPv4"
IPV6 = "IPv6"
FAMILIES = (IPV4, IPV6)

SINGLE_STACK = "SingleStack"
PREFER_DUAL_STACK = "PreferDualStack"
REQUIRE_DUAL_STACK = "RequireDualStack"


class AllocationOrder(StrEnum):
    LOWEST = "Lowest"
    LEAST_RECENTLY_RELEASED = "LeastRecentlyReleased"


SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        # An unknown operator never matches; pool validation reports it as Invalid.
        return False


@dataclass(frozen=True)
class Selector:
    """A Kubernetes LabelSelector. An empty selector matches everything, as in Kubernetes."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)


@dataclass(frozen=True)
class ServiceAllocation:
    priority: int | None = None
    namespaces: frozenset[str] = frozenset()
    namespace_selectors: tuple[Selector, ...] = ()
    service_selectors: tuple[Selector, ...] = ()


@dataclass(frozen=True)
class PoolSpec:
    name: str
    addresses: tuple[str, ...]
    created: float = 0.0
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    allocation_order: AllocationOrder = AllocationOrder.LEAST_RECENTLY_RELEASED
    service_allocation: ServiceAllocation | None = None
    disabled: bool = False


@dataclass(frozen=True, order=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class Port:
    protocol: str
    port: int


@dataclass(frozen=True)
class ServiceRequest:
    key: ServiceKey
    uid: str
    created: float
    families: tuple[str, ...]
    family_policy: str = SINGLE_STACK
    requested_ips: tuple[str, ...] = ()
    requested_pool: str | None = None
    sharing_key: str | None = None
    ports: frozenset[Port] = frozenset()
    backend_key: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    namespace_labels: tuple[tuple[str, str], ...] = ()
    reassign_orphans: bool = False
    current_ips: tuple[str, ...] = ()
    # The Service's spec changed since its status was last decided (metadata.generation newer than the
    # observedGeneration of its IPAllocated condition). At adoption such a claim loses a clash to one that
    # did not change, as it would have live: the one whose edit made the clash moves.
    changed_since_grant: bool = False
    # An input problem the caller found (conflicting annotations, a bad value). ensure then adds nothing and
    # answers ConflictingRequests with this message, but still lets go of what the current inputs may not keep
    # (an IP whose co-holders may no longer share it, a family no longer wanted).
    problem: str | None = None


class Reason(StrEnum):
    ALLOCATED = "Allocated"
    NO_POOL = "NoPool"
    POOL_EXHAUSTED = "PoolExhausted"
    REQUESTED_IP_IN_USE = "RequestedIPInUse"
    REQUESTED_IP_OUTSIDE_POOL = "RequestedIPOutsidePool"
    CONFLICTING_REQUESTS = "ConflictingRequests"
    FAMILY_UNAVAILABLE = "FamilyUnavailable"
    IP_OUTSIDE_POOL = "IPOutsidePool"
    DUPLICATE_IP = "DuplicateIP"
    # a requested (or shared) address an IPReservation keeps for another Service
    IP_RESERVED = "IPReserved"


@dataclass(frozen=True)
class Decision:
    ips: tuple[str, ...]
    pool: str | None
    reason: Reason
    message: str
    pending: bool
    changed: bool
    released: tuple[str, ...]
    # pending Services that may fit now because of this decision (it freed an IP or changed sharing terms)
    retry: frozenset[ServiceKey] = frozenset()
    # why an IP the Service held or showed went to another Service it may not share with (a duplicate claim,
    # or its own new terms); set whatever the reason, so a caller can warn even when ensure is pending
    lost: str | None = None


@dataclass(frozen=True)
class FamilyCounts:
    total: int
    assigned: int
    available: int
    # reserved by an IPReservation and held by nobody: total = assigned + available + reserved
    reserved: int = 0


@dataclass(frozen=True)
class PoolStatus:
    name: str
    ipv4: FamilyCounts
    ipv6: FamilyCounts
    invalid: str | None
    conflict_with: str | None
    disabled: bool
    exhausted: bool


@dataclass(frozen=True)
class PoolsChange:
    orphaned: frozenset[ServiceKey]
    retry: frozenset[ServiceKey]
    invalid: Mapping[str, str] = field(default_factory=dict)
    conflicts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReservationsChange:
    # pending Services that may be answered differently now: they wait for, or were refused, a changed
    # address, or wait for a pool that contains one
    retry: frozenset[ServiceKey]
    # addresses whose reservation was added, removed or changed its target
    changed_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdoptResult:
    adopted: frozenset[ServiceKey]
    duplicates: Mapping[ServiceKey, ServiceKey] = field(default_factory=dict)
    invalid: Mapping[ServiceKey, str] = field(default_factory=dict)
