"""The Service reconciler: one key in, at most one status write out, and only when something differs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, Tracer

from controller.ipam import Allocator, Decision, Reason, ServiceKey
from controller.kube.client import ApiError, KubeClient
from controller.kube.events import EventRecorder
from controller.kube.resources import NAMESPACES, SERVICES
from controller.kube.store import Store
from controller.metrics import Metrics
from controller.reconcile.leadership import WriteGate
from controller.reconcile.service_input import (
    CONDITION_TYPE,
    ServiceInput,
    is_ours,
    read_service,
    status_ips,
)
from controller.reconcile.status import ConditionSpec, current_ingress, desired_ingress, status_patch
from controller.reconcile.tracing import reconcile_span
from controller.reconcile.writes import Requeue, now_rfc3339, patch_status
from controller.telemetry import ATTR_IPS, ATTR_K8S_NAMESPACE, ATTR_K8S_SERVICE, ATTR_POOL, ATTR_RESULT

log = logging.getLogger(__name__)

STICKY_REASONS = frozenset({Reason.DUPLICATE_IP.value})


def _pending_event_reason(reason: Reason) -> str:
    if reason in (Reason.REQUESTED_IP_IN_USE, Reason.REQUESTED_IP_OUTSIDE_POOL, Reason.IP_RESERVED):
        return "RequestedIPUnavailable"
    return "AllocationFailed"


@dataclass(frozen=True)
class ServicePolicy:
    lb_class: str
    handle_unclassed: bool
    reassign_orphans: bool


@dataclass(frozen=True)
class Outcome:
    result: str
    wrote: bool


class ServiceReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        services: Store,
        namespaces: Store,
        allocator: Allocator,
        recorder: EventRecorder,
        metrics: Metrics,
        tracer: Tracer,
        gate: WriteGate,
        policy: ServicePolicy,
        enqueue_service: Callable[[str], None],
        refresh_pool: Callable[[str], None],
        refresh_reservations: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self._client = client
        self._services = services
        self._namespaces = namespaces
        self.allocator = allocator
        self._recorder = recorder
        self._metrics = metrics
        self._tracer = tracer
        self._gate = gate
        self._policy = policy
        self._enqueue_service = enqueue_service
        self._refresh_pool = refresh_pool
        # An IPReservation's status shows who holds its addresses: told when a Service takes or frees one.
        self._refresh_reservations = refresh_reservations or (lambda ips: None)
        self._uids: dict[ServiceKey, str] = {}
        # (uid, generation) whose deprecations were already reported: an Event per spec change, not per pass.
        self._warned: dict[ServiceKey, tuple[str, int]] = {}
        # IPs of our last successful status write per Service: an assignment a write confirmed.
        self._confirmed: dict[ServiceKey, tuple[str, ...]] = {}
        # The resourceVersion each of our status writes produced, until the watch brings it back; and the
        # updates the watch brought while a write was in flight (the echo can come before the answer).
        self._echoes: dict[str, str] = {}
        self._in_flight: dict[str, list[str]] = {}

    # -- entry point ------------------------------------------------------------------------------
    async def reconcile(
        self, key: str, *, links: Iterable[Link] = (), queue_wait_ms: float = 0.0, requeues: int = 0
    ) -> Outcome:
        namespace, _, name = key.partition("/")
        with reconcile_span(
            self._tracer,
            self._metrics,
            "Service",
            links=links,
            queue_wait_ms=queue_wait_ms,
            requeues=requeues,
            attributes={ATTR_K8S_NAMESPACE: namespace, ATTR_K8S_SERVICE: name},
        ) as span:
            outcome = await self._reconcile(ServiceKey(namespace, name), span)
            span.set_attribute(ATTR_RESULT, outcome.result)
        return outcome

    def is_echo(self, key: str, resource_version: str | None) -> bool:
        """True when this update of ``key`` needs no reconcile: it is our own last status write coming
        back, or it came while that write was in flight (the write decides once it is answered).

        The write carried the resourceVersion it was decided on (409 otherwise), so the object at the
        version it produced differs from the one decided on only by that write: reconciling it again
        would decide the same and write nothing. Any other version (someone else's change) is not.
        """
        if resource_version is None:
            return False
        early = self._in_flight.get(key)
        if early is not None:
            early.append(resource_version)
            return True
        return self._echoes.pop(key, None) == resource_version

    def _settle_echo(self, key: str, written: dict[str, Any] | None) -> None:
        """After a status write: expect its echo, and queue the Service again for any other update that
        came while it was in flight (or for every one, when the write did not land)."""
        early = self._in_flight.pop(key, [])
        rv = str((written or {}).get("metadata", {}).get("resourceVersion") or "")
        if rv and rv not in early:
            self._echoes[key] = rv
        if any(v != rv for v in early):
            self._enqueue_service(key)

    def adopt_all(self) -> dict[ServiceKey, ServiceKey]:
        """Register every claim found in Service status, oldest first; returns duplicate losers."""
        requests = []
        for obj in self._services.list():
            if not is_ours(obj, self._policy.lb_class, self._policy.handle_unclassed) or not status_ips(obj):
                continue
            request = self._read(obj, use_allocator=False).request
            requests.append(request)
            self._uids[request.key] = request.uid
        result = self.allocator.adopt(requests)
        for key, reason in result.invalid.items():
            log.warning("claim in status not adopted", extra={"service": str(key), "why": reason})
        return dict(result.duplicates)

    # -- the work ---------------------------------------------------------------------------------
    async def _reconcile(self, key: ServiceKey, span: Span) -> Outcome:
        obj = self._services.get(str(key))
        if obj is None and key in self._uids:
            # The cache only holds LoadBalancer Services (field selector): a Service whose type changed
            # away left it exactly as a deleted one would. Only the API server can tell them apart.
            obj = await self._read_uncached(key)
            if obj is not None and is_ours(obj, self._policy.lb_class, self._policy.handle_unclassed):
                # Already back in the selection: its event is on the way and is reconciled then.
                return Outcome("not-cached", wrote=False)
        if obj is None:
            self._release(key)
            return Outcome("deleted", wrote=False)

        uid = obj["metadata"].get("uid", "")
        if self._uids.get(key, uid) != uid:
            # Deleted and re-created under the same name while we were not looking: the old claim goes.
            self._release(key)
        if not is_ours(obj, self._policy.lb_class, self._policy.handle_unclassed):
            return await self._disown(key, obj)
        self._uids[key] = uid

        namespace = self._namespaces.get(key.namespace)
        if namespace is None:
            # A Service cannot exist without its Namespace: the namespace cache lags (its watch may be
            # stalled). The labels decide the pool, so ask the API server instead of assuming none.
            namespace = await self._read_namespace(key.namespace)
        inp = self._read(obj, use_allocator=True, namespace=namespace)
        seen = (uid, int(obj["metadata"].get("generation") or 0))
        if inp.deprecations and self._warned.get(key) != seen:
            self._warned[key] = seen
            for message in inp.deprecations:
                self._recorder.record(obj, "Warning", "DeprecatedField", message)
        # With an input problem too: the allocator then adds nothing but still lets go of what the current
        # inputs may not keep, and the status shows only what it holds (never an IP another Service won).
        with self._tracer.start_as_current_span("allocate") as alloc_span:
            decision = self.allocator.ensure(inp.request)
            alloc_span.set_attribute("stablelb.reason", decision.reason.value)
            alloc_span.set_attribute(ATTR_IPS, ",".join(decision.ips))
        span.set_attribute(ATTR_POOL, decision.pool or "")
        span.set_attribute(ATTR_IPS, ",".join(decision.ips))
        self._after_decision(decision)

        before = status_ips(obj)
        ingress = desired_ingress(current_ingress(obj), decision.ips)
        if inp.problem is not None:
            problem = inp.problem
            cond = ConditionSpec("True" if decision.ips else "False", problem.reason, problem.message)
            wrote = await self._write(obj, ingress, cond, span)
            if wrote:
                self._record_lost(obj, decision, before)
                self._recorder.record(obj, "Warning", "AllocationFailed", problem.message)
            self._metrics.allocation("invalid")
            return Outcome("invalid", wrote)
        wrote = await self._write(obj, ingress, self._condition(decision, obj), span)
        if wrote:
            self._record_decision_events(obj, decision, before)
        self._metrics.allocation(decision.reason.value)
        self._metrics.set_orphaned(len(self.allocator.orphaned()))
        return Outcome("pending" if decision.pending else decision.reason.value, wrote)

    async def _read_uncached(self, key: ServiceKey) -> dict[str, Any] | None:
        try:
            return await self._client.request("GET", SERVICES.path(key.namespace, key.name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _read_namespace(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._client.request("GET", NAMESPACES.path(name=name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _read(
        self, obj: dict[str, Any], *, use_allocator: bool, namespace: dict[str, Any] | None = None
    ) -> ServiceInput:
        ns_name = str(obj["metadata"].get("namespace", ""))
        ns_obj = namespace if namespace is not None else self._namespaces.get(ns_name)
        ns_labels = (ns_obj or {}).get("metadata", {}).get("labels") or {}
        current: tuple[str, ...] | None = None
        if use_allocator:
            # While we lead, our own record comes first, before a status write that has not landed yet (409,
            # crash of the request): re-deciding from the stale status could hand out a different IP. The
            # status IPs follow, so a family lost to an older claim is still seen as lost (DuplicateIP).
            held = self.allocator.assignment(ServiceKey(ns_name, obj["metadata"]["name"]))
            if held:
                current = held + tuple(ip for ip in status_ips(obj) if ip not in held)
        return read_service(
            obj,
            reassign_orphans=self._policy.reassign_orphans,
            namespace_labels=ns_labels,
            current_ips=current,
        )

    def _after_decision(self, decision: Decision) -> None:
        if decision.pool:
            self._refresh_pool(decision.pool)
        # Also when nothing moved: a holder's labels may have made it a reservation's target (Bound).
        self._refresh_reservations((*decision.ips, *decision.released))
        # Only the pending Services the allocator names (those the freed addresses may serve).
        self._retry(decision.retry)

    def _release(self, key: ServiceKey) -> None:
        pool = self.allocator.pool_of(key)
        held = self.allocator.assignment(key)
        retry = self.allocator.release(key)
        self._refresh_reservations(held)
        self._uids.pop(key, None)
        self._warned.pop(key, None)
        self._confirmed.pop(key, None)
        self._echoes.pop(str(key), None)
        if held or retry:
            log.info("released", extra={"service": str(key), "ips": ",".join(held)})
        self._retry(retry)
        if pool:
            self._refresh_pool(pool)

    def _retry(self, keys: Iterable[ServiceKey]) -> None:
        for key in keys:
            self._enqueue_service(str(key))

    async def _disown(self, key: ServiceKey, obj: dict[str, Any]) -> Outcome:
        """A Service that stopped being ours: release, and remove only what we wrote."""
        held = set(self.allocator.assignment(key))
        self._release(key)
        conditions = (obj.get("status") or {}).get("conditions") or []
        if not held and not any(c.get("type") == CONDITION_TYPE for c in conditions):
            return Outcome("ignored", wrote=False)
        ingress = [e for e in current_ingress(obj) if e.get("ip") not in held]
        span = trace.get_current_span()
        wrote = await self._write(obj, ingress, None, span)
        if wrote and held:
            self._recorder.record(
                obj,
                "Normal",
                "IPReleased",
                f"released {', '.join(sorted(held))}: the Service is no longer handled by stablelb",
            )
        return Outcome("released", wrote)

    @staticmethod
    def _condition(decision: Decision, obj: dict[str, Any]) -> ConditionSpec:
        # PreferDualStack holding one family while waiting for the other still counts as allocated.
        cond = ConditionSpec("True" if decision.ips else "False", decision.reason.value, decision.message)
        previous = next(
            (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == CONDITION_TYPE),
            None,
        )
        if (
            previous is not None
            and decision.reason is Reason.ALLOCATED
            and previous.get("reason") in STICKY_REASONS
            and previous.get("status") == "True"
            and set(status_ips(obj)) == set(decision.ips)
        ):
            # The reason an IP was moved stays visible until something else happens to the Service;
            # replacing it with "Allocated" on the next pass would also be a write for nothing.
            return ConditionSpec("True", str(previous["reason"]), str(previous.get("message", "")))
        return cond

    def _record_decision_events(
        self, obj: dict[str, Any], decision: Decision, before: tuple[str, ...]
    ) -> None:
        new = [ip for ip in decision.ips if ip not in before]
        if decision.released:
            self._recorder.record(obj, "Normal", "IPReleased", f"released {', '.join(decision.released)}")
        if decision.reason is Reason.DUPLICATE_IP:
            self._recorder.record(obj, "Warning", "DuplicateIPResolved", decision.message)
        else:
            self._record_lost(obj, decision, before)
        if decision.reason is Reason.IP_OUTSIDE_POOL:
            self._recorder.record(obj, "Warning", "IPOutsidePool", decision.message)
        if new:
            pool = f" from pool {decision.pool}" if decision.pool else ""
            self._recorder.record(obj, "Normal", "IPAllocated", f"assigned {', '.join(new)}{pool}")
        if decision.pending:
            self._recorder.record(obj, "Warning", _pending_event_reason(decision.reason), decision.message)

    def _drop_unconfirmed(self, key: ServiceKey, obj: dict[str, Any]) -> None:
        """A 409: the Service changed after the version we decided on. An assignment that neither the
        status we read nor a write of ours ever showed is only a guess from a stale cache (a new leader
        whose watch lagged); drop it, so the next pass decides from the fresh status, which may hold
        what the old leader assigned. A confirmed one stays: our record wins over a lagging cache."""
        held = set(self.allocator.assignment(key))
        if not held or held == set(status_ips(obj)) or held == set(self._confirmed.get(key, ())):
            return
        log.info("dropping an unconfirmed assignment after a conflict",
                 extra={"service": str(key), "ips": ",".join(sorted(held))})
        self._release(key)

    def _record_lost(self, obj: dict[str, Any], decision: Decision, before: tuple[str, ...]) -> None:
        """A Warning when an IP the status showed went to another Service and no new one came instead."""
        dropped = [ip for ip in before if ip not in decision.ips]
        if decision.lost is not None and dropped:
            why = f"{decision.lost}; removed {', '.join(dropped)} from status"
            self._recorder.record(obj, "Warning", "DuplicateIPResolved", why)

    async def _write(
        self, obj: dict[str, Any], ingress: list[dict[str, Any]], cond: ConditionSpec | None, span: Span
    ) -> bool:
        patch = status_patch(obj, ingress, cond, now_rfc3339())
        if patch is None:
            return False
        meta = obj["metadata"]
        path = SERVICES.path(meta["namespace"], meta["name"], "status")
        what = f"Service {meta['namespace']}/{meta['name']}"
        key = ServiceKey(meta["namespace"], meta["name"])
        written: dict[str, Any] | None = None
        self._in_flight[str(key)] = []
        try:
            written = await patch_status(self._client, self._tracer, self._gate, path, patch, what)
        except Requeue:
            self._drop_unconfirmed(key, obj)
            raise
        finally:
            self._settle_echo(str(key), written)
        if written is None:
            return False
        if cond is not None:
            self._confirmed[key] = tuple(e["ip"] for e in ingress if "ip" in e)
        span.set_attribute("stablelb.wrote", True)
        log.info(
            "status written",
            extra={
                "service": f"{meta['namespace']}/{meta['name']}",
                "ips": ",".join(e["ip"] for e in ingress if "ip" in e),
                "reason": cond.reason if cond else None,
            },
        )
        return True
