"""Why a Service has, would get or lacks an address: a read-only look at the allocator's pools.

Pure and side-effect free: it reads the pools through ``Allocator.pools()`` and the same predicates the
allocator decides with (``Pool.allocatable``, ``Pool.allows``, ``choose_pools``), and takes the
allocator's own ``Decision`` for the outcome. It never decides anything itself, so an explanation cannot
disagree with what the controller does; it only says which of the allocator's conditions held for each pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .addresses import AddressError, parse_ip
from .allocator import Allocator
from .allocator import _wanted_families as wanted_families  # the allocator's own reading
from .model import REQUIRE_DUAL_STACK, Decision, ServiceKey, ServiceRequest
from .pools import Pool, choose_pools


class Verdict(StrEnum):
    USED = "used"  # the pool the Service's address is (or would be) in
    CANDIDATE = "candidate"  # could serve it, but another pool comes first or its address is elsewhere
    SKIPPED = "skipped"  # cannot serve it; the reason says which rule


@dataclass(frozen=True)
class PoolVerdict:
    pool: str
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class Explanation:
    key: ServiceKey
    current_ips: tuple[str, ...]  # what the Service's status shows
    ips: tuple[str, ...]  # what the allocator holds for it after deciding
    pool: str | None
    reason: str
    message: str
    pending: bool
    problem: str | None  # an input problem (then nothing new is added)
    pools: tuple[PoolVerdict, ...]  # in the order the allocator tries them, then the rest by name
    holders: tuple[tuple[str, tuple[ServiceKey, ...]], ...]  # requested IP -> other Services holding it


def allocation_mismatch(pool: Pool, request: ServiceRequest) -> str | None:
    """Which part of the pool's serviceAllocation the Service fails, when ``pool.allows`` says it does."""
    if pool.allows(request):
        return None
    alloc = pool.spec.service_allocation
    assert alloc is not None  # a pool without serviceAllocation allows every Service
    ns = request.key.namespace
    ns_labels = dict(request.namespace_labels)
    if (alloc.namespaces or alloc.namespace_selectors) and not (
        ns in alloc.namespaces or any(s.matches(ns_labels) for s in alloc.namespace_selectors)
    ):
        parts = []
        if alloc.namespaces:
            parts.append(f"not in serviceAllocation.namespaces ({', '.join(sorted(alloc.namespaces))})")
        if alloc.namespace_selectors:
            parts.append("its labels match no serviceAllocation.namespaceSelectors")
        return f"namespace {ns!r} " + " and ".join(parts)
    return "the Service's labels match no serviceAllocation.serviceSelectors"


def _requested_addrs(request: ServiceRequest) -> list[tuple[str, int, str]]:
    out = []
    for text in request.requested_ips:
        try:
            family, value = parse_ip(text)
        except AddressError:
            continue
        out.append((family, value, text))
    return out


def _holds_in(pool: Pool, ips: Iterable[str]) -> list[str]:
    inside = []
    for text in ips:
        try:
            family, value = parse_ip(text)
        except AddressError:
            continue
        if pool.contains(family, value):
            inside.append(text)
    return inside


def _skip_reason(pool: Pool, request: ServiceRequest, wanted: list[str]) -> str | None:
    """Why the pool cannot hand this Service a new address; None when it could."""
    if pool.invalid is not None:
        return f"invalid: {pool.invalid}"
    if pool.conflict_with is not None:
        return f"overlaps older pool {pool.conflict_with!r}: no new allocations"
    requested = _requested_addrs(request)
    if requested and not any(pool.contains(f, v) for f, v, _ in requested):
        return f"does not contain the requested IP {', '.join(t for _, _, t in requested)}"
    if request.requested_pool is not None and request.requested_pool != pool.name:
        return f"the Service asks for pool {request.requested_pool!r} (annotation)"
    if pool.spec.disabled:
        return "disabled: no new allocations"
    mismatch = allocation_mismatch(pool, request)
    if mismatch is not None:
        return mismatch
    if not requested and request.requested_pool is None and not pool.spec.auto_assign:
        return "autoAssign is false: only for Services that ask for this pool or its IPs"
    if not any(pool.has_family(f) for f in wanted):
        return f"has no {' or '.join(wanted)} addresses"
    if request.family_policy == REQUIRE_DUAL_STACK and not all(pool.has_family(f) for f in wanted):
        return f"RequireDualStack needs {' and '.join(wanted)}; the pool lacks one"
    offered = [f for f in wanted if pool.has_family(f)]
    empty = [f for f in offered if not pool.free[f].free_count]
    # RequireDualStack takes both families or none; the other policies take what a pool has.
    if not requested and empty and (request.family_policy == REQUIRE_DUAL_STACK or empty == offered):
        return f"exhausted: no free {' or '.join(empty)} address"
    return None


def explain(allocator: Allocator, request: ServiceRequest, decision: Decision) -> Explanation:
    """The allocator's decision for ``request``, and every pool's verdict with its reason."""
    pools = allocator.pools()
    wanted = wanted_families(request)
    order = [p.name for p in choose_pools(pools, request)]
    rank = {name: i for i, name in enumerate(order)}
    verdicts: list[PoolVerdict] = []
    for name in sorted(pools, key=lambda n: (rank.get(n, len(rank)), n)):
        pool = pools[name]
        held = _holds_in(pool, decision.ips)
        if decision.pool == name or (held and decision.pool is None):
            state = " (disabled: kept, no new allocations)" if pool.spec.disabled else ""
            what = f"holds {', '.join(held)}" if held else "its pool"
            verdicts.append(PoolVerdict(name, Verdict.USED, what + state))
            continue
        skip = _skip_reason(pool, request, wanted)
        if skip is not None:
            verdicts.append(PoolVerdict(name, Verdict.SKIPPED, skip))
        elif decision.ips:
            where = f"pool {decision.pool!r}" if decision.pool else "no pool (kept as IPOutsidePool)"
            verdicts.append(
                PoolVerdict(name, Verdict.CANDIDATE, f"could serve it, but its address is in {where}")
            )
        elif request.requested_ips:
            inside = _holds_in(pool, request.requested_ips)
            verdicts.append(
                PoolVerdict(name, Verdict.CANDIDATE, f"contains the requested IP {', '.join(inside)}")
            )
        elif name in rank:
            verdicts.append(PoolVerdict(name, Verdict.CANDIDATE, f"tried in order (#{rank[name] + 1})"))
        else:
            verdicts.append(PoolVerdict(name, Verdict.CANDIDATE, "could serve it"))
    holders = tuple(
        (text, tuple(k for k in allocator.holders(text) if k != request.key))
        for _, _, text in _requested_addrs(request)
    )
    return Explanation(
        key=request.key,
        current_ips=request.current_ips,
        ips=decision.ips,
        pool=decision.pool,
        reason=decision.reason.value,
        message=decision.message,
        pending=decision.pending,
        problem=request.problem,
        pools=tuple(verdicts),
        holders=holders,
    )


__all__ = ["Explanation", "PoolVerdict", "Verdict", "allocation_mismatch", "explain"]
