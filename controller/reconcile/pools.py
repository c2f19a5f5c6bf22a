"""The IPPool reconciler: hands the pool set to the allocator, enqueues exactly the affected Services,
and writes each pool's status (counts and conditions) when it differs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from opentelemetry.trace import Link, Tracer

from controller.ipam import Allocator, PoolStatus
from controller.kube.client import KubeClient
from controller.kube.events import EventRecorder
from controller.kube.resources import IPPOOLS
from controller.kube.store import Store
from controller.metrics import Metrics
from controller.reconcile.leadership import WriteGate
from controller.reconcile.pool_input import read_pool
from controller.reconcile.spec_sets import Fingerprint, fingerprint, read_specs
from controller.reconcile.tracing import reconcile_span
from controller.reconcile.writes import now_rfc3339, patch_status
from controller.telemetry import ATTR_POOL, ATTR_RESULT

log = logging.getLogger(__name__)


def pool_status_body(
    obj: Mapping[str, Any], status: PoolStatus | None, shape_error: str | None, now: str
) -> dict[str, Any]:
    """The status the pool should show. Counts are strings: an IPv6 /64 does not fit an int64."""
    current = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    invalid = shape_error or (status.invalid if status else None)
    conflict = status.conflict_with if status else None
    exhausted = bool(status and status.exhausted)
    disabled = bool(status and status.disabled)

    def cond(type_: str, value: bool, reason: str, message: str) -> dict[str, Any]:
        text = "True" if value else "False"
        prev = current.get(type_)
        transition = prev["lastTransitionTime"] if prev and prev.get("status") == text else now
        out = {
            "type": type_,
            "status": text,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition,
        }
        if obj["metadata"].get("generation") is not None:
            out["observedGeneration"] = obj["metadata"]["generation"]
        return out

    if invalid:
        ready = cond("Ready", False, "Invalid", invalid)
    elif conflict:
        ready = cond(
            "Ready", False, "Conflict", f"overlaps pool {conflict}, which is older; no new allocations"
        )
    elif disabled:
        ready = cond("Ready", False, "Disabled", "spec.disabled is true; existing assignments stay")
    else:
        ready = cond("Ready", True, "Valid", "the pool hands out addresses")
    conditions = [
        ready,
        cond("Invalid", bool(invalid), "Invalid" if invalid else "Valid", invalid or "the spec is valid"),
        cond(
            "Conflict",
            bool(conflict),
            "Overlap" if conflict else "NoOverlap",
            f"overlaps pool {conflict}" if conflict else "no overlap with older pools",
        ),
        cond(
            "Exhausted",
            exhausted,
            "NoAddressesLeft" if exhausted else "AddressesAvailable",
            "every address is assigned" if exhausted else "addresses are available",
        ),
    ]
    body: dict[str, Any] = {"conditions": conditions}
    if obj["metadata"].get("generation") is not None:
        body["observedGeneration"] = obj["metadata"]["generation"]
    if status is not None:
        for family, counts in (("ipv4", status.ipv4), ("ipv6", status.ipv6)):
            body[family] = {
                "total": str(counts.total),
                "assigned": str(counts.assigned),
                "available": str(counts.available),
                "reserved": str(counts.reserved),
            }
        # Both families summed, for the printer columns (a column reads one path).
        body["assigned"] = str(status.ipv4.assigned + status.ipv6.assigned)
        body["available"] = str(status.ipv4.available + status.ipv6.available)
        body["reserved"] = str(status.ipv4.reserved + status.ipv6.reserved)
    return body


def _differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    return any(current.get(k) != v for k, v in desired.items())


class PoolReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        pools: Store,
        allocator: Allocator,
        recorder: EventRecorder,
        metrics: Metrics,
        tracer: Tracer,
        gate: WriteGate,
        enqueue_service: Callable[[str], None],
        after_write: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """``after_write``: more status to write in the same worker after the pass (the release ledger)."""
        self._client = client
        self._pools = pools
        self.allocator = allocator
        self._recorder = recorder
        self._metrics = metrics
        self._tracer = tracer
        self._gate = gate
        self._enqueue_service = enqueue_service
        self._after_write = after_write
        self._known: set[str] = set()
        self._applied: Fingerprint | None = None
        self._shape_errors: dict[str, str] = {}

    def apply_pools(self) -> dict[str, str]:
        """Give the allocator the current pool set; enqueue who it says is affected. Returns shape errors.

        Only when some pool's spec changed: most pool reconciles just refresh the counts after
        allocations, and rebuilding the pool set then would cost a pass over every assignment.
        """
        objs = self._pools.list()
        current = fingerprint(objs)
        if current == self._applied:
            return self._shape_errors
        specs, shape_errors = read_specs(objs, read_pool)
        change = self.allocator.set_pools(specs)
        self._applied, self._shape_errors = current, shape_errors
        for key in sorted(change.orphaned | change.retry):
            self._enqueue_service(str(key))
        return shape_errors

    async def reconcile(
        self, name: str, *, links: Iterable[Link] = (), queue_wait_ms: float = 0.0, requeues: int = 0
    ) -> None:
        with reconcile_span(
            self._tracer,
            self._metrics,
            "IPPool",
            links=links,
            queue_wait_ms=queue_wait_ms,
            requeues=requeues,
            attributes={ATTR_POOL: name},
        ) as span:
            shape_errors = self.apply_pools()
            wrote = 0
            # Conflicts are relative: one pool's change can clear or set another's, so all are checked.
            for obj in self._pools.list():
                if await self._write_status(obj, shape_errors.get(obj["metadata"]["name"])):
                    wrote += 1
            if self._after_write is not None:
                await self._after_write()
            present = {obj["metadata"]["name"] for obj in self._pools.list()}
            for gone in self._known - present:
                self._metrics.remove_pool(gone)
            self._known = present
            span.set_attribute(ATTR_RESULT, f"wrote {wrote}")

    async def _write_status(self, obj: dict[str, Any], shape_error: str | None) -> bool:
        name = obj["metadata"]["name"]
        status = self.allocator.pool_status(name)
        if status is not None:
            for family, counts in (("IPv4", status.ipv4), ("IPv6", status.ipv6)):
                self._metrics.set_pool(name, family, counts.total, counts.assigned, counts.available)
        current = obj.get("status") or {}
        desired = pool_status_body(obj, status, shape_error, now_rfc3339())
        if not _differs(current, desired):
            return False
        body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": desired}
        path = IPPOOLS.path(name=name, subresource="status")
        if await patch_status(self._client, self._tracer, self._gate, path, body, f"IPPool {name}") is None:
            return False
        self._record_events(obj, current, desired)
        return True

    def _record_events(
        self, obj: dict[str, Any], current: Mapping[str, Any], desired: Mapping[str, Any]
    ) -> None:
        before = {c.get("type"): c.get("status") for c in current.get("conditions") or []}
        for cond in desired["conditions"]:
            if cond["status"] == "True" and before.get(cond["type"]) != "True":
                if cond["type"] == "Invalid":
                    self._recorder.record(obj, "Warning", "InvalidPool", cond["message"])
                elif cond["type"] == "Conflict":
                    self._recorder.record(obj, "Warning", "PoolConflict", cond["message"])
                elif cond["type"] == "Exhausted":
                    self._recorder.record(obj, "Warning", "PoolExhausted", cond["message"])
