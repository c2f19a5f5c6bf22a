"""`kubectl stablelb plan -f pool.yaml` / `--delete NAME`: what a pool edit would do, before it is applied.

The allocator rebuilt from the cluster (replay.py) gets the new pool set through ``set_pools``, exactly as
the controller's IPPool reconciler gives it, and then ensures the Services that call names (orphaned and
retry, and whoever their decisions name in turn), as the controller's queue would. The plan is the difference.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from controller.ipam import Decision, PoolStatus, ServiceKey
from controller.kube.resources import IPPOOLS
from controller.reconcile.pool_input import read_pool
from controller.reconcile.spec_sets import read_specs

from .cluster import CliError
from .render import Style, ips_text, table
from .replay import Replay
from .reservations import reservations_data


@dataclass(frozen=True)
class Before:
    ips: tuple[str, ...]
    reason: str
    pending: bool
    pool: str | None


def read_pool_file(path: str) -> list[dict[str, Any]]:
    """IPPool objects from a YAML or JSON file (several documents or a List too); '-' reads stdin."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path!r}: {exc}") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{path!r} is not valid YAML or JSON: {exc}") from exc
    objs: list[dict[str, Any]] = []
    for doc in docs:
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or ():
            if not isinstance(item, dict) or item.get("kind") != IPPOOLS.kind:
                raise CliError(f"{path!r}: plan takes IPPool objects (kind: IPPool), found {_kind(item)}")
            if not str(item.get("apiVersion", "")).startswith(f"{IPPOOLS.group}/"):
                raise CliError(
                    f"{path!r}: apiVersion must be {IPPOOLS.api_version}, not {item.get('apiVersion')!r}"
                )
            if not (item.get("metadata") or {}).get("name"):
                raise CliError(f"{path!r}: an IPPool without metadata.name")
            objs.append(item)
    if not objs:
        raise CliError(f"{path!r} holds no IPPool")
    return objs


def _kind(item: Any) -> str:
    return repr(item.get("kind")) if isinstance(item, dict) else type(item).__name__


def edited_pools(
    current: Iterable[dict[str, Any]],
    applied: Iterable[dict[str, Any]],
    deleted: Iterable[str],
    now: datetime,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The pool objects after the change, and the names that change. An edited pool keeps its creation time
    (its age decides overlaps); a new one is the youngest."""
    pools = {o["metadata"]["name"]: o for o in current}
    changed: list[str] = []
    for name in deleted:
        if name not in pools:
            raise CliError(f"IPPool {name!r} does not exist (kubectl get ippools)")
        del pools[name]
        changed.append(name)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for obj in applied:
        name = obj["metadata"]["name"]
        created = (pools.get(name) or {}).get("metadata", {}).get("creationTimestamp") or stamp
        pools[name] = {**obj, "metadata": {**obj["metadata"], "name": name, "creationTimestamp": created}}
        changed.append(name)
    return list(pools.values()), changed


def outcome(before: Before, after: Decision) -> tuple[str, str]:
    """(code for scripts, words for people)."""
    if before.ips and not after.ips:
        return "loses", f"loses its IP: {after.reason.value}: {after.message}"
    if not before.ips and after.ips:
        return "served", f"newly served from pool {after.pool}" if after.pool else "newly served"
    if not after.ips:
        if before.reason != after.reason.value:
            return "pending", f"still pending, now {after.reason.value}: {after.message}"
        return "pending", f"still pending ({after.reason.value})"
    if set(before.ips) != set(after.ips):
        return "moves", f"moves ({after.reason.value}: {after.message})"
    if after.reason.value == "IPOutsidePool" and before.reason != "IPOutsidePool":
        return "IPOutsidePool", f"keeps its IP as IPOutsidePool ({after.message})"
    return "keeps", "keeps its IP" + (f" ({after.reason.value})" if after.reason.value != "Allocated" else "")


def _pool_row(status: PoolStatus | None, error: str | None) -> dict[str, Any]:
    if status is None:
        return {"state": "Invalid" if error else "absent", "message": error or ""}
    if status.invalid:
        state, message = "Invalid", status.invalid
    elif status.conflict_with:
        state, message = "Conflict", f"overlaps older pool {status.conflict_with}"
    elif status.disabled:
        state, message = "Disabled", ""
    else:
        state, message = "Ready", ""
    return {
        "state": state,
        "message": message,
        "available": {"IPv4": status.ipv4.available, "IPv6": status.ipv6.available},
    }


def plan(
    run: Replay, applied: list[dict[str, Any]], deleted: list[str], now: datetime | None = None
) -> dict[str, Any]:
    """Apply the change to the replayed allocator (it is the plan's own copy) and report the difference."""
    before = {k: Before(d.ips, d.reason.value, d.pending, d.pool) for k, d in run.decisions.items()}
    pools_before = {s.name: s for s in run.allocator.pool_statuses()}
    reservations_before = {
        r["reservation"]: r for r in reservations_data(run.allocator, run.reservation_errors)
    }
    errors_before = dict(run.shape_errors)
    objs, changed = edited_pools(run.state.pools, applied, deleted, now or datetime.now(UTC))
    specs, errors = read_specs(objs, read_pool)
    change = run.allocator.set_pools(specs)
    run.shape_errors = errors
    run.settle(sorted(change.orphaned | change.retry))
    pools_after = {s.name: s for s in run.allocator.pool_statuses()}
    names = sorted(set(pools_before) | set(pools_after) | set(errors_before) | set(errors))
    pool_rows = []
    for name in names:
        was = _pool_row(pools_before.get(name), errors_before.get(name))
        now_ = _pool_row(pools_after.get(name), errors.get(name))
        if name in changed or was != now_:
            pool_rows.append({"pool": name, "before": was, "after": now_, "edited": name in changed})
    services = []
    for key in sorted(run.decisions):
        was_ = before.get(key)
        after = run.decisions[key]
        if was_ is None:
            continue
        code, words = outcome(was_, after)
        related = was_.pool in changed or after.pool in changed
        quiet = code == "keeps" or (code == "pending" and was_.reason == after.reason.value)
        if quiet and not related:
            continue
        services.append(
            {
                "service": str(key),
                "before": {"ips": list(was_.ips), "reason": was_.reason},
                "after": {"ips": list(after.ips), "reason": after.reason.value, "pool": after.pool},
                "outcome": code,
                "message": words,
            }
        )
    listed = {s["service"] for s in services}
    reservations = []
    for after_r in reservations_data(run.allocator, run.reservation_errors):
        was_r = reservations_before.get(after_r["reservation"])
        if was_r is not None and was_r["addresses"] != after_r["addresses"]:
            reservations.append(
                {
                    "reservation": after_r["reservation"],
                    "before": was_r["state"],
                    "after": after_r["state"],
                    "message": after_r["message"],
                    # a reservation this edit makes worse: its address leaves every pool, or is taken
                    "conflict": after_r["state"] not in ("Bound", "Waiting"),
                }
            )
    return {
        "change": {"applied": [o["metadata"]["name"] for o in applied], "deleted": list(deleted)},
        "pools": pool_rows,
        "services": services,
        "reservations": reservations,
        "unaffected": sum(1 for k in run.decisions if str(k) not in listed),
        "summary": {
            code: sum(1 for s in services if s["outcome"] == code)
            for code in ("keeps", "IPOutsidePool", "served", "moves", "loses", "pending")
        },
    }


def affected_keys(data: dict[str, Any], code: str) -> set[ServiceKey]:
    out = set()
    for entry in data["services"]:
        if entry["outcome"] == code:
            ns, _, name = entry["service"].partition("/")
            out.add(ServiceKey(ns, name))
    return out


def render(data: dict[str, Any], style: Style) -> str:
    what = [f"apply {', '.join(data['change']['applied'])}"] if data["change"]["applied"] else []
    what += [f"delete {', '.join(data['change']['deleted'])}"] if data["change"]["deleted"] else []
    lines = [f"Plan: {' and '.join(what)} (nothing is written)"]
    if data["pools"]:
        rows = []
        for p in data["pools"]:
            rows.append([p["pool"], _pool_text(p["before"]), _pool_text(p["after"])])
        lines += ["", table(["pool", "now", "after"], rows, style)]
    colours = {
        "served": "green",
        "IPOutsidePool": "yellow",
        "moves": "yellow",
        "loses": "red",
        "pending": "yellow",
    }
    if data["services"]:
        rows = [
            [
                s["service"],
                ips_text(s["before"]["ips"]),
                ips_text(s["after"]["ips"]),
                style.paint(s["message"], colours.get(s["outcome"], "green")),
            ]
            for s in data["services"]
        ]
        lines += ["", table(["service", "now", "after", "outcome"], rows, style)]
    if data["reservations"]:
        rows = [
            [
                r["reservation"],
                r["before"],
                style.paint(r["after"], "red" if r["conflict"] else "green"),
                r["message"],
            ]
            for r in data["reservations"]
        ]
        lines += ["", table(["reservation", "now", "after", "why"], rows, style)]
    counts = ", ".join(f"{n} {code}" for code, n in data["summary"].items() if n)
    lines += ["", f"{counts or 'no Service changes'}; {data['unaffected']} other Services unaffected"]
    return "\n".join(lines)


def _pool_text(row: dict[str, Any]) -> str:
    if row["state"] == "absent":
        return "(none)"
    free = row.get("available") or {}
    counts = ", ".join(f"{n} {f} free" for f, n in free.items() if n) or "0 free"
    message = f" ({row['message']})" if row["message"] else ""
    return f"{row['state']}{message}, {counts}" if row["state"] != "Invalid" else f"Invalid{message}"
