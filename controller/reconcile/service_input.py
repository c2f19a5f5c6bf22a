"""Reading a Service object (a slim dict from the cache) into the allocator's request.

Everything the user can get wrong in a Service is caught here and turned into a `Problem`, so the
reconciler can answer with a condition and a Warning instead of guessing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.ipam import Port, ServiceKey, ServiceRequest
from controller.ipam.addresses import ipv4_int

ANN_IPS = ("stablelb.io/ips", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs")
ANN_POOL = ("stablelb.io/pool", "metallb.io/address-pool", "metallb.universe.tf/address-pool")
ANN_SHARING = ("stablelb.io/sharing-key", "metallb.io/allow-shared-ip", "metallb.universe.tf/allow-shared-ip")
ANN_ORPHAN_POLICY = "stablelb.io/orphan-policy"

CONDITION_TYPE = "stablelb.io/IPAllocated"

# Set in the cached (slim) Service: whether its spec or metadata was written after our last status write,
# read from managedFields before the cache drops them. Services carry no metadata.generation.
EDITED_AFTER_STATUS = "stablelb.io/editedAfterStatus"


@dataclass(frozen=True)
class Problem:
    """A Service input that cannot be honoured; reason is a condition reason (CamelCase)."""

    reason: str
    message: str


@dataclass(frozen=True)
class ServiceInput:
    request: ServiceRequest
    problem: Problem | None
    deprecations: tuple[str, ...]


def service_key(obj: Mapping[str, Any]) -> ServiceKey:
    meta = obj["metadata"]
    return ServiceKey(meta.get("namespace", ""), meta["name"])


def is_ours(obj: Mapping[str, Any], lb_class: str, handle_unclassed: bool) -> bool:
    spec = obj.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    if obj["metadata"].get("deletionTimestamp"):
        return False
    cls = spec.get("loadBalancerClass")
    return cls == lb_class if cls else handle_unclassed


def status_ips(obj: Mapping[str, Any]) -> tuple[str, ...]:
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    out: list[str] = []
    for entry in ingress:
        ip = entry.get("ip")
        if isinstance(ip, str):
            if ipv4_int(ip) is not None:  # already in canonical form
                out.append(ip)
                continue
            try:
                out.append(str(ipaddress.ip_address(ip)))
            except ValueError:
                continue
    return tuple(out)


@functools.lru_cache(maxsize=8192)
def parse_timestamp(value: str | None) -> float:
    """Seconds since the epoch. Cached: Services created in the same second share the string, and every
    read of a Service (adoption of thousands at start, each reconcile) parses it again."""
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _family(ip: str) -> str:
    return "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"


def _parse_ip_list(source: str, text: str) -> tuple[str, ...] | Problem:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        return Problem("InvalidRequest", f"{source} is empty; remove it or list at most one IP per family")
    ips: list[str] = []
    for item in items:
        if "%" in item:
            # Python would accept fd00::9%eth0 and drop the zone; a load-balancer IP has none.
            return Problem("InvalidRequest", f"{source}: {item!r} has a zone id (%...); remove it")
        try:
            ips.append(str(ipaddress.ip_address(item)))
        except ValueError:
            return Problem("InvalidRequest", f"{source}: {item!r} is not an IP address")
    families = [_family(ip) for ip in ips]
    if len(set(families)) != len(families):
        return Problem(
            "InvalidRequest", f"{source} lists two {families[0]} addresses; give at most one per family"
        )
    return tuple(ips)


def edited_after_status(managed_fields: Any, manager: str) -> bool:
    """Whether any write to the object itself (spec, labels, annotations) came after `manager`'s last write
    of the status. managedFields times have one-second resolution: the same second reads as not after."""
    ours: list[float] = []
    others: list[float] = []
    for entry in managed_fields if isinstance(managed_fields, list) else ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("time"), str):
            continue
        when = parse_timestamp(entry["time"])
        if entry.get("subresource") == "status":
            if entry.get("manager") == manager:
                ours.append(when)
        elif not entry.get("subresource"):
            others.append(when)
    return bool(ours and others) and max(others) > max(ours)


def changed_since_grant(obj: Mapping[str, Any]) -> bool:
    """Whether the Service changed after the status showing its IPs was written (design §3.4).

    metadata.generation newer than our condition's observedGeneration, where the API server keeps a
    generation; Services have none (kube-apiserver 1.36), so there the cache's EDITED_AFTER_STATUS mark,
    taken from managedFields, says it. False when neither says anything.
    """
    generation = obj["metadata"].get("generation")
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == CONDITION_TYPE:
            observed = cond.get("observedGeneration")
            if isinstance(generation, int) and isinstance(observed, int):
                return generation > observed
    return bool(obj.get(EDITED_AFTER_STATUS))


def _first_annotation(
    annotations: Mapping[str, str], names: tuple[str, ...]
) -> tuple[str | None, str | None, Problem | None]:
    """The value given by the annotations in `names`; they may repeat each other but must agree."""
    found = [(name, annotations[name].strip()) for name in names if name in annotations]
    if not found:
        return None, None, None
    values = {value for _, value in found}
    if len(values) > 1:
        listed = ", ".join(f"{name}={value!r}" for name, value in found)
        return None, None, Problem("ConflictingRequests", f"annotations disagree: {listed}; keep one")
    name, value = found[0]
    return name, value, None


def read_service(
    obj: Mapping[str, Any],
    *,
    reassign_orphans: bool,
    namespace_labels: Mapping[str, str] | None = None,
    current_ips: tuple[str, ...] | None = None,
) -> ServiceInput:
    """The request, plus the first problem found in the user's input.

    A request is built even when there is a problem (with the faulty part left out, the problem in
    `request.problem`), so that adoption at start registers the IPs such a Service holds and `ensure` keeps
    what the current inputs may keep without adding anything.
    """
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    deprecations: list[str] = []
    problems: list[Problem] = []

    requested: tuple[str, ...] = ()
    sources: list[tuple[str, tuple[str, ...]]] = []
    for group in (ANN_IPS, ANN_POOL, ANN_SHARING):
        current, legacy = group[1], group[2]
        if legacy in annotations:
            deprecations.append(f"annotation {legacy} is deprecated; use {group[0]} (or {current})")
    candidates = [(f"annotation {name}", annotations[name]) for name in ANN_IPS if name in annotations]
    spec_ip = spec.get("loadBalancerIP")
    if spec_ip:
        candidates.append(("spec.loadBalancerIP", spec_ip))
        deprecations.append(
            "spec.loadBalancerIP is deprecated by Kubernetes; use the stablelb.io/ips annotation instead"
        )
    for source, text in candidates:
        parsed = _parse_ip_list(source, text)
        if isinstance(parsed, Problem):
            problems.append(parsed)
        else:
            sources.append((source, parsed))
    if len({frozenset(ips) for _, ips in sources}) > 1:
        listed = "; ".join(f"{src}={','.join(ips)}" for src, ips in sources)
        problems.append(Problem("ConflictingRequests", f"requested IPs disagree: {listed}; keep one source"))
    elif sources and not problems:
        requested = sources[0][1]

    _, pool, problem = _first_annotation(annotations, ANN_POOL)
    if problem is not None:
        problems.append(problem)
    _, sharing_key, problem = _first_annotation(annotations, ANN_SHARING)
    if problem is not None:
        problems.append(problem)

    orphan_policy = annotations.get(ANN_ORPHAN_POLICY)
    if orphan_policy not in (None, "reassign", "retain"):
        problems.append(
            Problem(
                "InvalidRequest",
                f"annotation {ANN_ORPHAN_POLICY}={orphan_policy!r}: use 'reassign' or 'retain'",
            )
        )
        orphan_policy = None

    families = tuple(spec.get("ipFamilies") or ())
    if not families:
        # Before the API server defaults ipFamilies the requested IPs decide.
        families = tuple(dict.fromkeys(_family(ip) for ip in requested)) or ("IPv4",)
    policy = spec.get("ipFamilyPolicy") or "SingleStack"
    wanted = families if policy != "SingleStack" else families[:1]
    for ip in requested:
        if _family(ip) not in wanted:
            problems.append(
                Problem(
                    "ConflictingRequests",
                    f"requested IP {ip} is {_family(ip)} but the Service's families are {', '.join(wanted)}",
                )
            )
            requested = ()
            break

    ports = frozenset(
        Port(str(p.get("protocol") or "TCP"), int(p["port"])) for p in spec.get("ports") or () if "port" in p
    )
    backend_key: str | None = None
    if spec.get("externalTrafficPolicy") == "Local":
        selector = spec.get("selector") or {}
        backend_key = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))

    request = ServiceRequest(
        key=service_key(obj),
        uid=meta.get("uid", ""),
        created=parse_timestamp(meta.get("creationTimestamp")),
        families=families,
        family_policy=policy,
        requested_ips=requested,
        requested_pool=pool or None,
        sharing_key=sharing_key or None,
        ports=ports,
        backend_key=backend_key,
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        namespace_labels=tuple(sorted((namespace_labels or {}).items())),
        reassign_orphans=reassign_orphans if orphan_policy is None else orphan_policy == "reassign",
        current_ips=status_ips(obj) if current_ips is None else current_ips,
        changed_since_grant=changed_since_grant(obj),
        problem=problems[0].message if problems else None,
    )
    return ServiceInput(request, problems[0] if problems else None, tuple(deprecations))
