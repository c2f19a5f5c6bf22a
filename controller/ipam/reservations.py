"""IP reservations: addresses an operator keeps for one named Service, or a labelled set in one namespace.

Pure: which reservation owns an address (the oldest one naming it), whether a Service is its target, and the
words used to name the target. The allocator applies them (see ``Allocator.set_reservations``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from .addresses import AddressError, int_to_ip, parse_ip
from .model import Selector, ServiceKey


@dataclass(frozen=True)
class ReservationSpec:
    name: str
    addresses: tuple[str, ...]
    namespace: str
    service_name: str | None = None
    selector: Selector | None = None
    created: float = 0.0

    @property
    def order_key(self) -> tuple[float, str]:
        return (self.created, self.name)

    def selects(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        """Whether the Service namespace/name with these labels is a target of this reservation."""
        if namespace != self.namespace:
            return False
        if self.service_name is not None:
            return name == self.service_name
        return self.selector is not None and self.selector.matches(labels)


class AddressState(StrEnum):
    """One reserved address, from best to worst; a reservation shows its worst address."""

    BOUND = "Bound"  # held by a target Service
    WAITING = "Waiting"  # free, kept for a target Service
    HELD_BY_OTHER = "HeldByOther"  # held by a Service that had it before the reservation; never moved
    NOT_IN_POOL = "NotInPool"  # in no pool: nothing can be handed out until a pool contains it
    CONFLICT = "Conflict"  # an older reservation names the same address
    INVALID = "Invalid"


STATE_ORDER = tuple(AddressState)


@dataclass(frozen=True)
class ReservedAddress:
    ip: str
    state: AddressState
    holders: tuple[ServiceKey, ...] = ()
    pool: str | None = None
    conflict_with: str | None = None


@dataclass(frozen=True)
class ReservationState:
    name: str
    state: AddressState
    message: str
    addresses: tuple[ReservedAddress, ...] = ()


def describe_target(spec: ReservationSpec) -> str:
    """The target in words: "team-a/web" or "team-a Services matching app=web"."""
    if spec.service_name is not None:
        return f"{spec.namespace}/{spec.service_name}"
    selector = spec.selector or Selector()
    parts = [f"{k}={v}" for k, v in selector.match_labels]
    for req in selector.match_expressions:
        values = ",".join(req.values)
        parts.append(f"{req.key} {req.operator}" + (f" ({values})" if values else ""))
    return f"{spec.namespace} Services matching {', '.join(parts) or 'any labels'}"


def validate_reservation(spec: ReservationSpec) -> str | None:
    """Why the reservation cannot be applied (the CRD's CEL rules catch these first), or None."""
    if not spec.name:
        return "the reservation has no name"
    if not spec.addresses:
        return "spec.addresses is empty"
    if not spec.namespace:
        return "spec.service.namespace is empty"
    if (spec.service_name is None) == (spec.selector is None):
        return "spec.service needs exactly one of name and selector"
    if spec.selector is not None and not spec.selector.match_labels and not spec.selector.match_expressions:
        return "spec.service.selector is empty: it would match every Service of the namespace"
    seen: set[tuple[str, int]] = set()
    for text in spec.addresses:
        try:
            addr = parse_ip(text)
        except AddressError as exc:
            return f"spec.addresses: {exc}"
        if addr in seen:
            return f"spec.addresses lists {text} twice"
        seen.add(addr)
    return None


class ReservationIndex:
    """Address -> the reservation that owns it. When two reservations name one address the older one
    (creationTimestamp, then name) owns it and the newer one is in Conflict for that address."""

    def __init__(self, specs: Iterable[ReservationSpec]) -> None:
        self.specs: dict[str, ReservationSpec] = {}
        self.invalid: dict[str, str] = {}
        self.owners: dict[tuple[str, int], ReservationSpec] = {}
        # (reservation name, address) -> the older reservation that owns the address
        self.conflicts: dict[tuple[str, tuple[str, int]], str] = {}
        for spec in sorted(specs, key=lambda s: s.order_key):
            self.specs[spec.name] = spec
            problem = validate_reservation(spec)
            if problem is not None:
                self.invalid[spec.name] = problem
                continue
            for text in spec.addresses:
                addr = parse_ip(text)
                owner = self.owners.get(addr)
                if owner is None:
                    self.owners[addr] = spec
                else:
                    self.conflicts[(spec.name, addr)] = owner.name

    def owner(self, ip: str) -> ReservationSpec | None:
        """The reservation that owns this address (any textual form), or None."""
        try:
            return self.owners.get(parse_ip(ip))
        except AddressError:
            return None

    def owner_of(self, family: str, value: int) -> ReservationSpec | None:
        return self.owners.get((family, value))

    def for_service(self, namespace: str, name: str, labels: Mapping[str, str]) -> list[ReservationSpec]:
        """The valid reservations targeting this Service, oldest first."""
        return [
            s
            for s in self.specs.values()
            if s.name not in self.invalid and s.selects(namespace, name, labels)
        ]

    def owned_addresses(self, spec: ReservationSpec) -> list[tuple[str, int]]:
        """The addresses this reservation owns (not those an older one owns), lowest first per family."""
        return sorted(
            a for text in spec.addresses if (a := parse_ip(text)) in self.owners and self.owners[a] is spec
        )


def ip_text(addr: tuple[str, int]) -> str:
    return int_to_ip(*addr)
