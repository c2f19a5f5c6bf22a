"""MetalLB's IP sharing rule: when may two Services hold the same IP."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Port, ServiceRequest


@dataclass(frozen=True)
class SharingTerms:
    """What a holder of an IP agreed to when it got it: the inputs the sharing rule looks at."""

    sharing_key: str | None
    ports: frozenset[Port]
    backend_key: str | None

    @classmethod
    def of(cls, request: ServiceRequest) -> SharingTerms:
        return cls(request.sharing_key, request.ports, request.backend_key)


def incompatibility(a: SharingTerms, b: SharingTerms) -> str | None:
    """Why a and b may not share an IP, or None when they may.

    Equal non-empty sharing keys, disjoint (protocol, port) sets, and when either uses
    externalTrafficPolicy Local (a non-empty backend key), identical backends: traffic for a shared IP
    lands on the nodes of one selector only.
    """
    if not a.sharing_key or not b.sharing_key:
        return "no sharing key"
    if a.sharing_key != b.sharing_key:
        return f"sharing keys differ ({a.sharing_key!r} vs {b.sharing_key!r})"
    overlap = a.ports & b.ports
    if overlap:
        listed = ", ".join(f"{p.protocol}/{p.port}" for p in sorted(overlap))
        return f"ports overlap ({listed})"
    # As MetalLB: Local with an empty selector has the same (empty) backend as Cluster, so they may share.
    if (a.backend_key or None) != (b.backend_key or None):
        return "externalTrafficPolicy Local needs identical selectors"
    return None


def compatible(a: SharingTerms, b: SharingTerms) -> bool:
    return incompatibility(a, b) is None
