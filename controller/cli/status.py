"""`kubectl stablelb status`: each pool's usage as the allocator counts it, and who leads."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from controller.ipam import FamilyCounts
from controller.reconcile.service_input import parse_timestamp

from .render import Style, table
from .replay import Replay
from .reservations import reservations_data


def leader_data(lease: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    renew = spec.get("renewTime")
    duration = spec.get("leaseDurationSeconds")
    age = now.timestamp() - parse_timestamp(renew) if renew else None
    expired = age is not None and isinstance(duration, int) and age > duration
    return {
        "holder": spec.get("holderIdentity") or None,
        "renewTime": renew,
        "secondsSinceRenew": round(age, 1) if age is not None else None,
        "leaseDurationSeconds": duration,
        "expired": expired,
        "transitions": spec.get("leaseTransitions"),
    }


def _ledger(run: Replay, pool: str) -> dict[str, Any]:
    """The release ledger as the IPPool's status holds it (the reuse order a new leader restores)."""
    ledger = run.ledgers.get(pool)
    entries = ledger.entries if ledger is not None else ()
    return {
        "entries": len(entries),
        "truncated": bool(ledger and ledger.truncated),
        "next": [e.ip for e in entries[:3]],  # the least recently released: reused first once none is new
        "ignored": run.ledger_problems.get(pool),
    }


def _counts(c: FamilyCounts) -> dict[str, int]:
    return {"total": c.total, "assigned": c.assigned, "available": c.available, "reserved": c.reserved}


def status_data(run: Replay, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    per_pool = Counter(d.pool for d in run.decisions.values() if d.ips and d.pool)
    pools = []
    for s in run.allocator.pool_statuses():
        state = (
            "Invalid"
            if s.invalid
            else "Conflict"
            if s.conflict_with
            else "Disabled"
            if s.disabled
            else "Exhausted"
            if s.exhausted
            else "Ready"
        )
        pools.append(
            {
                "pool": s.name,
                "state": state,
                "message": s.invalid or (f"overlaps older pool {s.conflict_with}" if s.conflict_with else ""),
                "IPv4": _counts(s.ipv4),
                "IPv6": _counts(s.ipv6),
                "services": per_pool.get(s.name, 0),
                "ledger": _ledger(run, s.name),
            }
        )
    for name, error in sorted(run.shape_errors.items()):
        pools.append({"pool": name, "state": "Invalid", "message": error, "services": 0})
    pending = sorted(str(k) for k, d in run.decisions.items() if d.pending and not d.ips)
    ref = run.state.lease_ref
    return {
        "leader": leader_data(run.state.lease, now),
        "lease": f"{ref.namespace}/{ref.name}",
        "pools": pools,
        "services": {
            "handled": len(run.decisions),
            "withAddress": sum(1 for d in run.decisions.values() if d.ips),
            "pending": pending,
            "outsidePool": sorted(str(k) for k in run.allocator.orphaned()),
        },
        "reservations": reservations_data(run.allocator, run.reservation_errors),
        "reservationsInstalled": run.state.reservations_installed,
    }


def _usage(counts: dict[str, int] | None) -> str:
    if not counts or not counts["total"]:
        return "-"
    return f"{counts['assigned']}/{counts['total']}"


def _ledger_text(ledger: dict[str, Any] | None) -> str:
    if not ledger or not ledger["entries"]:
        return "-"
    return f"{ledger['entries']}{'+' if ledger['truncated'] else ''}"


def render(data: dict[str, Any], style: Style) -> str:
    leader = data["leader"]
    if leader is None:
        head = style.paint(
            f"no Lease {data['lease']}: no controller has led yet (or pass --lease-name)", "red"
        )
    elif not leader["holder"]:
        head = style.paint(f"no leader (Lease {data['lease']} released)", "red")
    else:
        state = style.paint("EXPIRED", "red") if leader["expired"] else "held"
        head = (
            f"leader {style.paint(leader['holder'], 'bold')} ({state}; Lease {data['lease']}, renewed "
            f"{leader['secondsSinceRenew']}s ago, duration {leader['leaseDurationSeconds']}s)"
        )
    colours = {"Ready": "green", "Exhausted": "yellow", "Disabled": "yellow"}
    rows = [
        [
            p["pool"],
            style.paint(p["state"], colours.get(p["state"], "red")),
            _usage(p.get("IPv4")),
            _usage(p.get("IPv6")),
            str(sum((p.get(f) or {}).get("reserved", 0) for f in ("IPv4", "IPv6"))),
            str(p["services"]),
            _ledger_text(p.get("ledger")),
            p["message"] or ((p.get("ledger") or {}).get("ignored") or ""),
        ]
        for p in data["pools"]
    ]
    svc = data["services"]
    lines = [
        head,
        "",
        table(
            ["pool", "state", "ipv4 used", "ipv6 used", "reserved", "services", "ledger", "message"],
            rows,
            style,
        ),
    ]
    lines += [
        "",
        f"{svc['handled']} Services handled, {svc['withAddress']} with an address, "
        f"{len(svc['pending'])} pending"
        + (f", {len(svc['outsidePool'])} outside every pool (IPOutsidePool)" if svc["outsidePool"] else ""),
    ]
    if svc["pending"]:
        shown = ", ".join(svc["pending"][:5]) + (" ..." if len(svc["pending"]) > 5 else "")
        lines.append(f"pending: {shown}  (why: kubectl stablelb explain svc/NAME -n NAMESPACE)")
    if data["reservations"]:
        paint = {"Bound": "green", "Waiting": "blue", "HeldByOther": "yellow"}
        res_rows = [
            [
                r["reservation"],
                style.paint(r["state"], paint.get(r["state"], "red")),
                r["target"] or "-",
                ", ".join(f"{a['ip']} {a['state']}" for a in r["addresses"]) or "-",
                r["message"],
            ]
            for r in data["reservations"]
        ]
        lines += ["", table(["reservation", "state", "for", "addresses", "message"], res_rows, style)]
    elif not data["reservationsInstalled"]:
        lines += ["", "IPReservation CRD not installed: no reservations (upgrade the CRDs to use them)"]
    return "\n".join(lines)
