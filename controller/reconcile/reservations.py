"""The IPReservation reconciler: hands the reservations to the allocator, enqueues exactly the Services the
allocator names, and writes each reservation's status (state, per-address holders, Ready) when it differs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.trace import Link, Tracer

from controller.ipam import AddressState, Allocator, ReservationSpec, ReservationState, describe_target
from controller.kube.client import KubeClient
from controller.kube.events import EventRecorder
from controller.kube.resources import IPRESERVATIONS
from controller.kube.store import Store
from controller.metrics import Metrics
from controller.reconcile.leadership import WriteGate
from controller.reconcile.reservation_input import read_reservation
from controller.reconcile.spec_sets import Fingerprint, fingerprint, read_specs
from controller.reconcile.tracing import reconcile_span
from controller.reconcile.writes import now_rfc3339, patch_status
from controller.telemetry import ATTR_RESULT

log = logging.getLogger(__name__)

READY = frozenset({AddressState.BOUND, AddressState.WAITING})

# Event per state a reservation enters: (type, reason). Bound and Waiting are the normal course of things.
_EVENTS: dict[AddressState, tuple[str, str]] = {
    AddressState.BOUND: ("Normal", "ReservationBound"),
    AddressState.HELD_BY_OTHER: ("Warning", "ReservedIPHeld"),
    AddressState.NOT_IN_POOL: ("Warning", "ReservedIPNotInPool"),
    AddressState.CONFLICT: ("Warning", "ReservationConflict"),
    AddressState.INVALID: ("Warning", "InvalidReservation"),
}


def reservation_status_body(
    obj: Mapping[str, Any], spec: ReservationSpec | None, state: ReservationState, now: str
) -> dict[str, Any]:
    """The status the reservation should show; lastTransitionTime is kept while Ready does not change."""
    ready = "True" if state.state in READY else "False"
    previous = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
    )
    transition = previous["lastTransitionTime"] if previous and previous.get("status") == ready else now
    condition: dict[str, Any] = {
        "type": "Ready",
        "status": ready,
        "reason": state.state.value,
        "message": state.message[:32768],
        "lastTransitionTime": transition,
    }
    generation = obj["metadata"].get("generation")
    if generation is not None:
        condition["observedGeneration"] = generation
    addresses = []
    for address in state.addresses:
        entry: dict[str, Any] = {"ip": address.ip, "state": address.state.value}
        if address.pool is not None:
            entry["pool"] = address.pool
        if address.holders:
            entry["holders"] = [str(h) for h in address.holders]
        if address.conflict_with is not None:
            entry["conflictWith"] = address.conflict_with
        addresses.append(entry)
    body: dict[str, Any] = {
        "state": state.state.value,
        "addresses": addresses,
        "conditions": [condition],
    }
    if spec is not None:
        body["target"] = describe_target(spec)
    if generation is not None:
        body["observedGeneration"] = generation
    return body


class ReservationReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        reservations: Store,
        allocator: Allocator,
        recorder: EventRecorder,
        metrics: Metrics,
        tracer: Tracer,
        gate: WriteGate,
        enqueue_service: Callable[[str], None],
        enqueue_reservation: Callable[[str], None],
        refresh_pools: Callable[[], None],
    ) -> None:
        self._client = client
        self._reservations = reservations
        self.allocator = allocator
        self._recorder = recorder
        self._metrics = metrics
        self._tracer = tracer
        self._gate = gate
        self._enqueue_service = enqueue_service
        self._enqueue_reservation = enqueue_reservation
        self._refresh_pools = refresh_pools
        self._applied: Fingerprint | None = None
        self._shape_errors: dict[str, str] = {}

    def apply_reservations(self) -> None:
        """Give the allocator the current reservations (only when some spec changed); enqueue the pending
        Services it names, every reservation's status (one change can move an address between two of them)
        and the pools' counts."""
        objs = self._reservations.list()
        current = fingerprint(objs)
        if current == self._applied:
            return
        specs, shape_errors = read_specs(objs, read_reservation)
        change = self.allocator.set_reservations(specs)
        self._applied, self._shape_errors = current, shape_errors
        for key in sorted(change.retry):
            self._enqueue_service(str(key))
        for obj in objs:
            self._enqueue_reservation(obj["metadata"]["name"])
        if change.changed_ips:
            self._refresh_pools()

    def refresh_for(self, ips: Iterable[str]) -> None:
        """A Service took or let go of these addresses: the reservations owning them show it."""
        for ip in ips:
            owner = self.allocator.reserved_for(ip)
            if owner is not None:
                self._enqueue_reservation(owner.name)

    async def reconcile(
        self, name: str, *, links: Iterable[Link] = (), queue_wait_ms: float = 0.0, requeues: int = 0
    ) -> None:
        with reconcile_span(
            self._tracer,
            self._metrics,
            "IPReservation",
            links=links,
            queue_wait_ms=queue_wait_ms,
            requeues=requeues,
            attributes={"stablelb.reservation": name},
        ) as span:
            self.apply_reservations()
            obj = self._reservations.get(name)
            wrote = obj is not None and await self._write_status(obj)
            span.set_attribute(ATTR_RESULT, "wrote" if wrote else "unchanged")

    async def _write_status(self, obj: dict[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        shape_error = self._shape_errors.get(name)
        state = self.allocator.reservation_state(name)
        if shape_error is not None or state is None:
            state = ReservationState(name, AddressState.INVALID, shape_error or "not applied yet")
        parsed = read_reservation(obj)
        spec = parsed if not isinstance(parsed, str) else None
        current = obj.get("status") or {}
        desired = reservation_status_body(obj, spec, state, now_rfc3339())
        if all(current.get(k) == v for k, v in desired.items()):
            return False
        body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": desired}
        path = IPRESERVATIONS.path(name=name, subresource="status")
        what = f"IPReservation {name}"
        if await patch_status(self._client, self._tracer, self._gate, path, body, what) is None:
            return False
        if current.get("state") != state.state.value and state.state in _EVENTS:
            kind, reason = _EVENTS[state.state]
            self._recorder.record(obj, kind, reason, state.message)
        return True
