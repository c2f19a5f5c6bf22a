"""`kubectl stablelb explain svc/NAME -n NS`: the allocator's decision for one Service, pool by pool."""

from __future__ import annotations

from typing import Any

from controller.ipam import ServiceKey
from controller.ipam.explain import Explanation, Verdict, explain
from controller.ipam.reservations import describe_target
from controller.reconcile.service_input import CONDITION_TYPE, status_ips

from .cluster import CliError
from .render import Style, ips_text, table
from .replay import Policy, Replay
from .reservations import reserved_for_service

_TARGET_KINDS = ("svc", "service", "services")


def parse_target(text: str) -> str:
    """svc/NAME, service/NAME, services/NAME or a bare NAME."""
    kind, sep, name = text.partition("/")
    if not sep:
        return text
    if kind.lower() not in _TARGET_KINDS or not name:
        raise CliError(f"{text!r}: explain takes a Service, as svc/NAME (or NAME)")
    return name


def not_handled_why(obj: dict[str, Any] | None, policy: Policy) -> str | None:
    """Why stablelb leaves this Service alone, or None when it handles it."""
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return f"spec.type is {spec.get('type') or 'ClusterIP'}: stablelb only assigns to type LoadBalancer"
    if obj["metadata"].get("deletionTimestamp"):
        return "the Service is being deleted"
    cls = spec.get("loadBalancerClass")
    if cls and cls != policy.lb_class:
        return (
            f"spec.loadBalancerClass is {cls!r}, not {policy.lb_class!r} (--lb-class): another controller's"
        )
    if not cls and not policy.handle_unclassed:
        return "it has no loadBalancerClass and the controller runs with --handle-unclassed=false"
    return None


def explanation_data(run: Replay, key: ServiceKey) -> dict[str, Any]:
    decision = run.decisions[key]
    inp = run.inputs[key]
    exp = explain(run.allocator, inp.request, decision)
    obj = run.objects[key]
    written = next(
        (c for c in (obj.get("status") or {}).get("conditions") or () if c.get("type") == CONDITION_TYPE),
        None,
    )
    return {
        "service": str(key),
        "handled": True,
        "status": {
            "ips": list(status_ips(obj)),
            "condition": (
                {k: written.get(k) for k in ("status", "reason", "message")} if written is not None else None
            ),
        },
        "decision": {
            "ips": list(exp.ips),
            "pool": exp.pool,
            "reason": inp.problem.reason if inp.problem is not None else exp.reason,
            "message": inp.problem.message if inp.problem is not None else exp.message,
            "pending": exp.pending,
            "summary": summary(exp),
        },
        "pools": [{"pool": v.pool, "verdict": v.verdict.value, "reason": v.reason} for v in exp.pools],
        "requestedIPs": [
            {"ip": ip, "heldBy": [str(k) for k in holders], "reservedFor": _reserved_for(run, ip)}
            for ip, holders in exp.holders
        ],
        "reservedForIt": reserved_for_service(run.allocator, key, dict(inp.request.labels)),
        "deprecations": list(inp.deprecations),
    }


def _reserved_for(run: Replay, ip: str) -> str | None:
    spec = run.allocator.reserved_for(ip)
    return None if spec is None else f"{describe_target(spec)} (IPReservation {spec.name})"


def summary(exp: Explanation) -> str:
    current, ips = set(exp.current_ips), set(exp.ips)
    where = f" from pool {exp.pool}" if exp.pool else ""
    if exp.problem is not None:
        held = f"; keeps {ips_text(exp.ips)}" if exp.ips else "; nothing is assigned"
        return f"refused: its input is invalid ({exp.problem}){held}"
    if exp.pending and not ips:
        return f"pending ({exp.reason}): {exp.message}"
    if exp.pending:
        return f"has {ips_text(exp.ips)}{where}; the rest is pending ({exp.reason}): {exp.message}"
    if not current:
        return (
            f"would get {ips_text(exp.ips)}{where}; the controller has not written it yet (is it running "
            "and leading? see kubectl stablelb status)"
        )
    if current != ips:
        return f"shows {ips_text(exp.current_ips)}; the controller would change it to {ips_text(exp.ips)}" + (
            f" ({exp.reason}: {exp.message})"
        )
    if exp.reason == "IPOutsidePool":
        return f"has {ips_text(exp.ips)}, kept although outside the pool it may use ({exp.message})"
    return f"has {ips_text(exp.ips)}{where} ({exp.reason})"


def not_handled_data(key: ServiceKey, why: str) -> dict[str, Any]:
    return {"service": str(key), "handled": False, "why": why}


def render(data: dict[str, Any], style: Style) -> str:
    lines = [f"Service {style.paint(data['service'], 'bold')}"]
    if not data["handled"]:
        lines.append(f"  not handled by stablelb: {data['why']}")
        return "\n".join(lines)
    decision = data["decision"]
    colour = (
        "yellow" if decision["pending"] else "red" if decision["summary"].startswith("refused") else "green"
    )
    lines.append(f"  {style.paint(decision['summary'], colour)}")
    cond = data["status"]["condition"]
    if cond is not None:
        lines.append(f"  condition written: {cond['reason']}: {cond.get('message') or ''}".rstrip(": "))
    for entry in data["requestedIPs"]:
        held = ", ".join(entry["heldBy"]) or "nobody else"
        reserved = f"; reserved for {entry['reservedFor']}" if entry["reservedFor"] else ""
        lines.append(f"  requested {entry['ip']}: held by {held}{reserved}")
    for entry in data["reservedForIt"]:
        lines.append(
            f"  reserved for it: {entry['ip']} (IPReservation {entry['reservation']}, {entry['state']})"
        )
    for note in data["deprecations"]:
        lines.append(f"  deprecated: {note}")
    if data["pools"]:
        paint = {Verdict.USED.value: "green", Verdict.CANDIDATE.value: "blue", Verdict.SKIPPED.value: "dim"}
        rows = [
            [p["pool"], style.paint(p["verdict"], paint[p["verdict"]]), p["reason"]] for p in data["pools"]
        ]
        lines += ["", table(["pool", "verdict", "why"], rows, style)]
    else:
        lines.append(
            "  no IPPool exists: create one (kubectl apply -f manifests/samples/ippool-default.yaml)"
        )
    return "\n".join(lines)
