"""The controller's lifecycle: caches on every replica, work only while leading.

Order on becoming leader (design §4): wait for every cache → pools to the allocator → adopt every
claim in Service status, oldest first → only then allocate for pending Services → start workers.
Losing the lease closes the write gate before anything else, and the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from opentelemetry.trace import Link, Tracer

from controller.config import Settings
from controller.http import HealthState
from controller.ipam import Allocator, ServiceKey
from controller.kube.backoff import Backoff
from controller.kube.client import ApiError, KubeClient
from controller.kube.events import EventRecorder
from controller.kube.informer import Informer, default_transform
from controller.kube.leaderelection import LeaderElectionConfig, LeaderElector
from controller.kube.resources import IPPOOLS, IPRESERVATIONS, NAMESPACES, SERVICES
from controller.kube.store import object_key
from controller.kube.workqueue import ShutDown, WorkQueue
from controller.metrics import Metrics
from controller.reconcile.leadership import NotLeader, WriteGate
from controller.reconcile.pool_input import read_pool
from controller.reconcile.pools import PoolReconciler
from controller.reconcile.release_ledger import LedgerSettings, LedgerWriter, restore_ledgers
from controller.reconcile.reservations import ReservationReconciler
from controller.reconcile.service_input import (
    EDITED_AFTER_STATUS,
    edited_after_status,
    is_ours,
    parse_timestamp,
    service_key,
    status_ips,
)
from controller.reconcile.services import ServicePolicy, ServiceReconciler
from controller.reconcile.tracing import EventLinks
from controller.reconcile.writes import FIELD_MANAGER, Requeue

log = logging.getLogger(__name__)

# At takeover a standby's caches may be arbitrarily old: a silently dead watch is noticed only at its read
# timeout. Each cache gets this long to show it has caught up with a quorum read (an event or bookmark at
# or past it) before it is relisted. A quiet resource's RV only moves with bookmarks (about once a
# minute), so a quiet cache is in effect relisted at every takeover; a busy one usually catches up.
CATCH_UP_TIMEOUT = 1.0

# The last ledger write when leadership is given up cleanly may take this long before the lease is released.
LEDGER_FLUSH_TIMEOUT = 2.0

# Pool status (counts) follows allocations; batching the refresh keeps a burst of allocations from
# becoming a burst of IPPool status writes.
POOL_STATUS_DELAY = 1.0

_SERVICE_SPEC_FIELDS = (
    "type",
    "loadBalancerClass",
    "loadBalancerIP",
    "ports",
    "selector",
    "externalTrafficPolicy",
    "ipFamilies",
    "ipFamilyPolicy",
)
_META_FIELDS = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "labels",
    "annotations",
    "deletionTimestamp",
)


LB_FIELD_SELECTOR = "spec.type=LoadBalancer"


def is_load_balancer(obj: dict[str, Any]) -> bool:
    """The client-side twin of LB_FIELD_SELECTOR."""
    return (obj.get("spec") or {}).get("type") == "LoadBalancer"


def slim_service(obj: dict[str, Any]) -> dict[str, Any]:
    """Keep only what the reconciler reads: a cached Service costs a fraction of the full object.

    kind and apiVersion stay: Events name their object by them (`kubectl describe svc` matches on kind).
    """
    # Read before managedFields are dropped: a new leader's duplicate resolution needs it (issue 9).
    edited = edited_after_status((obj.get("metadata") or {}).get("managedFields"), FIELD_MANAGER)
    obj = default_transform(obj)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return {
        "kind": SERVICES.kind,
        "apiVersion": SERVICES.api_version,
        "metadata": {k: meta[k] for k in _META_FIELDS if k in meta},
        "spec": {k: spec[k] for k in _SERVICE_SPEC_FIELDS if k in spec},
        "status": obj.get("status") or {},
        EDITED_AFTER_STATUS: edited,
    }


def slim_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "uid", "resourceVersion", "labels") if k in meta}}


class Controller:
    def __init__(
        self,
        settings: Settings,
        client: KubeClient,
        *,
        metrics: Metrics,
        tracer: Tracer,
        health: HealthState,
        catch_up_timeout: float = CATCH_UP_TIMEOUT,
        ledger: LedgerSettings | None = None,
    ) -> None:
        self.settings = settings
        self.catch_up_timeout = catch_up_timeout
        self.ledger_settings = ledger or LedgerSettings()
        self.client = client
        self.metrics = metrics
        self.tracer = tracer
        self.health = health
        self.gate = WriteGate()
        self.links = EventLinks(tracer)
        # Events pass the same gate as status writes: none leaves a replica that may have lost the lease.
        self.recorder = EventRecorder(client, fence=self.gate.write_timeout)
        restarts = self._watch_restart_counter
        # Only LoadBalancer Services can be ours: the API server filters (the informer filters itself
        # where the server does not support this field selector).
        self.services = Informer(
            client,
            SERVICES,
            transform=slim_service,
            on_restart=restarts("services"),
            field_selector=LB_FIELD_SELECTOR,
            keep=is_load_balancer,
        )
        self.pools = Informer(client, IPPOOLS, on_restart=restarts("ippools"))
        self.namespaces = Informer(
            client, NAMESPACES, transform=slim_namespace, on_restart=restarts("namespaces")
        )
        self.reservations = Informer(
            client, IPRESERVATIONS, on_restart=restarts("ipreservations"), optional=True
        )
        self.services.store.add_index("namespace", lambda o: [o["metadata"].get("namespace", "")])
        self.service_queue: WorkQueue[str] = WorkQueue(metrics=metrics, name="services")
        self.pool_queue: WorkQueue[str] = WorkQueue(metrics=metrics, name="ippools")
        self.reservation_queue: WorkQueue[str] = WorkQueue(metrics=metrics, name="ipreservations")
        self.service_reconciler: ServiceReconciler | None = None
        self.pool_reconciler: PoolReconciler | None = None
        self.ledger_writer: LedgerWriter | None = None
        self.reservation_reconciler: ReservationReconciler | None = None
        self.exit_code = 0
        self.stopping = asyncio.Event()
        self._lead_tasks: list[asyncio.Task[None]] = []
        self._informer_tasks: list[asyncio.Task[None]] = []
        self._recorder_task: asyncio.Task[None] | None = None
        self._election_task: asyncio.Task[None] | None = None
        self._wire_handlers()
        health.add_readiness("caches", self._caches_ready)
        health.add_liveness("tasks", self._tasks_alive)

    # -- health -----------------------------------------------------------------------------------
    def _caches_ready(self) -> tuple[bool, str]:
        pending = [inf.resource.plural for inf in self._informers() if not inf.has_synced()]
        return (not pending, "synced" if not pending else f"waiting for {', '.join(pending)}")

    def _tasks_alive(self) -> tuple[bool, str]:
        """Every long-running task: informers, the Event senders, leader election, and the workers
        while leading. One that ended on its own leaves the controller half working: restart us."""
        if self.stopping.is_set():
            return True, "stopping"
        tasks = [*self._informer_tasks, *self._lead_tasks]
        if self._election_task is not None:
            tasks.append(self._election_task)
        dead = [t.get_name() for t in tasks if t.done()]
        if self._recorder_task is not None and (self._recorder_task.done() or not self.recorder.alive()):
            dead.append(self._recorder_task.get_name())
        return (not dead, "running" if not dead else f"stopped: {', '.join(dead)}")

    def _informers(self) -> list[Informer]:
        return [self.services, self.pools, self.namespaces, self.reservations]

    def _watch_restart_counter(self, resource: str) -> Callable[[str], None]:
        return lambda reason: self.metrics.watch_restart(resource, reason)

    # -- event handlers: keys only, and only while leading ------------------------------------------
    def _wire_handlers(self) -> None:
        def svc_event(event: str) -> Callable[[dict[str, Any]], None]:
            def handler(obj: dict[str, Any]) -> None:
                self._enqueue_service(object_key(obj), event, obj)

            return handler

        def svc_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            rv = new["metadata"].get("resourceVersion")
            if old["metadata"].get("resourceVersion") == rv:
                return
            key = object_key(new)
            reconciler = self.service_reconciler
            if reconciler is not None and reconciler.is_echo(key, rv):
                return  # our own status write coming back: nothing to decide again
            self._enqueue_service(key, "MODIFIED", new)

        self.services.add_handlers(svc_event("ADDED"), svc_update, svc_event("DELETED"))

        def on_spec_change(changed: Callable[[dict[str, Any]], None]) -> Callable[[Any, Any], None]:
            def update(old: dict[str, Any], new: dict[str, Any]) -> None:
                # Our own status writes come back as updates; only the spec (generation) matters.
                if old["metadata"].get("generation") != new["metadata"].get("generation"):
                    changed(new)

            return update

        self.pools.add_handlers(self._pools_changed, on_spec_change(self._pools_changed), self._pools_changed)

        def ns_add(obj: dict[str, Any]) -> None:
            self._namespace_added(obj["metadata"]["name"])

        def ns_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            if old["metadata"].get("labels") != new["metadata"].get("labels"):
                self._namespace_labels_changed(new["metadata"]["name"])

        self.namespaces.add_handlers(ns_add, ns_update, None)

        changed = self._reservations_changed
        self.reservations.add_handlers(changed, on_spec_change(changed), changed)

    def _reservations_changed(self, obj: dict[str, Any]) -> None:
        """As for pools: the allocator gets the reservations at once, so no worker hands out an address that
        was just reserved; the allocator names the pending Services to look at again."""
        if self.reservation_reconciler is not None and self.gate.is_open:
            self.reservation_reconciler.apply_reservations()
        self._enqueue_reservation(obj["metadata"]["name"])

    def _enqueue_reservation(self, name: str) -> None:
        # No span links: the worker takes links by queue key, which a pool of the same name also uses.
        if self.gate.is_open:
            self.reservation_queue.add(name)

    def _refresh_reservations(self, ips: Iterable[str]) -> None:
        if self.reservation_reconciler is not None:
            self.reservation_reconciler.refresh_for(ips)

    def _refresh_all_pools(self) -> None:
        # The pool reconciler writes every pool's status in one pass: one key is enough.
        for obj in self.pools.store.list()[:1]:
            self._refresh_pool(obj["metadata"]["name"])

    def _pools_changed(self, obj: dict[str, Any]) -> None:
        """The allocator gets the new pool set at once (in memory; a no-op unless some spec changed), so no
        Service worker allocates from a range that is gone; the pool's status write follows in its worker."""
        if self.pool_reconciler is not None and self.gate.is_open:
            self.pool_reconciler.apply_pools()
        self._enqueue_pool(obj["metadata"]["name"], obj)
        # A reserved address may have entered or left a pool (NotInPool); reservations are few.
        for reservation in self.reservations.store.list():
            self._enqueue_reservation(reservation["metadata"]["name"])

    def _enqueue_service(self, key: str, event: str, obj: dict[str, Any] | None) -> None:
        if not self.gate.is_open:
            return
        rv = obj["metadata"].get("resourceVersion") if obj else None
        self.links.note(key, event, "Service", rv)
        self.service_queue.add(key)

    def _enqueue_pool(self, name: str, obj: dict[str, Any]) -> None:
        if not self.gate.is_open:
            return
        self.links.note(name, "EVENT", "IPPool", obj["metadata"].get("resourceVersion"))
        self.pool_queue.add(name)

    def _retry_service(self, key: str) -> None:
        self.service_queue.add(key)

    def _refresh_pool(self, name: str) -> None:
        self.pool_queue.add_after(name, POOL_STATUS_DELAY)

    def _refresh_pool_after(self, name: str, delay: float) -> None:
        self.pool_queue.add_after(name, delay)

    def _namespace_added(self, namespace: str) -> None:
        """A Service reconciled before its namespace reached the cache was read without the namespace's
        labels: look at each of that namespace's Services again (usually few: the namespace is new)."""
        if self.service_reconciler is None or not self.gate.is_open:
            return
        for obj in self.services.store.by_index("namespace", namespace):
            if is_ours(obj, self.settings.lb_class, self.settings.handle_unclassed):
                self._enqueue_service(object_key(obj), "NAMESPACE", obj)

    def _namespace_labels_changed(self, namespace: str) -> None:
        """Only Services in that namespace whose outcome can depend on namespace labels."""
        reconciler = self.service_reconciler
        if reconciler is None or not self.gate.is_open:
            return
        pending = reconciler.allocator.pending()
        selective = set()
        for obj in self.pools.store.list():
            spec = read_pool(obj)
            if (
                not isinstance(spec, str)
                and spec.service_allocation
                and spec.service_allocation.namespace_selectors
            ):
                selective.add(spec.name)
        for obj in self.services.store.by_index("namespace", namespace):
            key = ServiceKey(namespace, obj["metadata"]["name"])
            if key in pending or reconciler.allocator.pool_of(key) in selective:
                self._enqueue_service(str(key), "NAMESPACE", obj)

    # -- leadership -------------------------------------------------------------------------------
    async def _on_started_leading(self) -> None:
        # Our lease write has been answered: a consistent read requested from here on includes it and
        # everything the previous leader wrote before it.
        term_began = time.monotonic_ns()
        log.info("became leader", extra={"identity": self.settings.identity})
        self.metrics.set_leader(self.settings.identity, True)
        await asyncio.gather(*(inf.wait_synced() for inf in self._informers()))
        await self._fresh_view(term_began)
        allocator = Allocator(reclaim_window=self.settings.reclaim_window)
        self.ledger_writer = LedgerWriter(
            client=self.client, tracer=self.tracer, gate=self.gate, allocator=allocator,
            pools=self.pools.store, settings=self.ledger_settings, on_deferred=self._refresh_pool_after,
        )
        self.pool_reconciler = PoolReconciler(
            client=self.client,
            pools=self.pools.store,
            allocator=allocator,
            recorder=self.recorder,
            metrics=self.metrics,
            tracer=self.tracer,
            gate=self.gate,
            enqueue_service=self._retry_service,
            after_write=self.ledger_writer.sync,
        )
        self.service_reconciler = ServiceReconciler(
            client=self.client,
            services=self.services.store,
            namespaces=self.namespaces.store,
            allocator=allocator,
            recorder=self.recorder,
            metrics=self.metrics,
            tracer=self.tracer,
            gate=self.gate,
            policy=ServicePolicy(
                self.settings.lb_class,
                self.settings.handle_unclassed,
                self.settings.orphaned_ips == "reassign",
            ),
            enqueue_service=self._retry_service,
            refresh_pool=self._refresh_pool,
            refresh_reservations=self._refresh_reservations,
        )
        self.reservation_reconciler = ReservationReconciler(
            client=self.client,
            reservations=self.reservations.store,
            allocator=allocator,
            recorder=self.recorder,
            metrics=self.metrics,
            tracer=self.tracer,
            gate=self.gate,
            enqueue_service=self._retry_service,
            enqueue_reservation=self._enqueue_reservation,
            refresh_pools=self._refresh_all_pools,
        )
        with self.tracer.start_as_current_span("adopt") as span:
            self.pool_reconciler.apply_pools()
            self.reservation_reconciler.apply_reservations()
            duplicates = self.service_reconciler.adopt_all()
            span.set_attribute("stablelb.duplicates", len(duplicates))
        log.info(
            "adopted assignments from Service status",
            extra={"services": len(self.services.store), "duplicates": len(duplicates)},
        )
        # The reuse history comes back after the claims (a held address is never taken from a ledger) and
        # before anything is allocated; no await until the gate opens, so its Warnings go out as leader.
        restore_ledgers(allocator, self.pools.store.list(), self.recorder)
        self.gate.open()
        # Level-based: every Service is looked at once; those already right write nothing. Oldest first,
        # so when capacity is short the earlier Services are the ones served. Those that need an address
        # come before those whose claim was just adopted (a check that writes nothing): a new Service is
        # served in the first seconds after a restart, not after every adopted one was checked again.
        ours = [
            o
            for o in self.services.store.list()
            if is_ours(o, self.settings.lb_class, self.settings.handle_unclassed)
        ]
        ours.sort(
            key=lambda o: (
                bool(status_ips(o)) and service_key(o) not in duplicates,
                parse_timestamp(o["metadata"].get("creationTimestamp")),
                o["metadata"].get("uid", ""),
            )
        )
        for obj in ours:
            self.service_queue.add(object_key(obj))
        for obj in self.pools.store.list():
            self.pool_queue.add(obj["metadata"]["name"])
        for obj in self.reservations.store.list():
            self.reservation_queue.add(obj["metadata"]["name"])
        workers = [
            self._worker(self.service_queue, self.service_reconciler.reconcile)
            for _ in range(self.settings.workers)
        ]
        workers.append(self._worker(self.pool_queue, self.pool_reconciler.reconcile))
        workers.append(self._worker(self.reservation_queue, self.reservation_reconciler.reconcile))
        kinds = ["services"] * self.settings.workers + ["ippools", "ipreservations"]
        self._lead_tasks = [
            asyncio.create_task(w, name=f"worker-{kind}-{i}")
            for i, (w, kind) in enumerate(zip(workers, kinds, strict=True))
        ]
        await asyncio.gather(*self._lead_tasks, return_exceptions=True)

    async def _fresh_view(self, term_began: int) -> None:
        """Every cache at least as new as a quorum read made after we won the lease, so what we adopt
        includes the old leader's last writes: otherwise our own decisions would win over them.

        A cache whose last consistent read was requested after ``term_began`` already is (a process that
        won the lease before it listed: every restart and rollout); the others are checked against a
        quorum read, waited for, and relisted when they lag.
        """
        with self.tracer.start_as_current_span("fresh view") as span:
            informers = [
                inf for inf in self._informers() if (inf.consistent_as_of() or term_began) <= term_began
            ]
            span.set_attribute("stablelb.fresh_at_start", len(self._informers()) - len(informers))
            targets = await asyncio.gather(*(self._quorum_resource_version(inf) for inf in informers))
            # An optional resource the server does not serve has nothing to catch up with.
            pairs = [(inf, rv) for inf, rv in zip(informers, targets, strict=True) if rv is not None]
            wait = self.catch_up_timeout
            caught_up = await asyncio.gather(*(inf.wait_caught_up(rv, wait) for inf, rv in pairs))
            behind = [pair for pair, ok in zip(pairs, caught_up, strict=True) if not ok]
            for inf, rv in behind:
                log.info(
                    "cache not caught up with the API server at takeover; relisting",
                    extra={"resource": inf.resource.plural, "cache_rv": inf.last_resource_version, "rv": rv},
                )
                inf.request_consistent_relist()
                self._restart_informer(inf)
            await asyncio.gather(*(inf.wait_caught_up(rv, None) for inf, rv in behind))
            span.set_attribute("stablelb.relisted", ",".join(inf.resource.plural for inf, _ in behind))

    async def _quorum_resource_version(self, informer: Informer) -> str | None:
        """The API server's current resourceVersion: a LIST without resourceVersion is a quorum read.
        None when an optional resource is not served."""
        backoff = Backoff()
        while True:
            try:
                page = await self.client.request("GET", informer.resource.path(), query={"limit": 1})
                return str((page.get("metadata") or {}).get("resourceVersion") or "")
            except ApiError as exc:
                if exc.status == 404 and informer.absent:
                    return None
                log.warning("quorum read of %s failed: %r; retrying", informer.resource.plural, exc)
                await backoff.sleep()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("quorum read of %s failed: %r; retrying", informer.resource.plural, exc)
                await backoff.sleep()

    def _restart_informer(self, informer: Informer) -> None:
        index = self._informers().index(informer)
        if index < len(self._informer_tasks):
            self._informer_tasks[index].cancel()
            self._informer_tasks[index] = asyncio.create_task(
                informer.run(), name=f"informer-{informer.resource.plural}"
            )
        else:  # informers not run by run() (a test driving _on_started_leading): nothing to restart
            log.warning("no running informer for %s to restart", informer.resource.plural)

    def _on_stopped_leading(self) -> None:
        # Nothing may be written from here on: close the gate before anything else.
        self.gate.close()
        for task in self._lead_tasks:
            task.cancel()
        self.metrics.set_leader(self.settings.identity, False)
        if not self.stopping.is_set():
            log.error("lost leadership; exiting so a fresh process rebuilds its state")
            self.exit_code = 1
            self.stopping.set()

    async def _flush_ledger(self) -> None:
        """Leaving cleanly while leading: the latest release history goes out before the lease does, so the
        next leader's reuse order misses nothing. Bounded, and a failure only costs that hint."""
        writer = self.ledger_writer
        if writer is None or not self.gate.is_open:
            return
        try:
            await asyncio.wait_for(writer.sync(force=True), LEDGER_FLUSH_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the hint is lost, nothing else
            log.warning("release ledger not flushed at shutdown: %r", exc)

    def _on_new_leader(self, identity: str) -> None:
        if identity != self.settings.identity:
            log.info("current leader", extra={"leader": identity})

    async def _worker(self, queue: WorkQueue[str], reconcile: Callable[..., Awaitable[Any]]) -> None:
        while True:
            # One item per turn of the event loop. A reconcile that writes nothing never suspends, and the
            # start-up pass queues every Service: without this a worker would hold the loop until the
            # queue is empty, and the answer to the first new Service's write, watch events and lease
            # renewals would all wait for thousands of checks.
            await asyncio.sleep(0)
            try:
                key = await queue.get()
            except ShutDown:
                return
            links: list[Link]
            links, waited = self.links.take(key)
            try:
                await reconcile(key, links=links, queue_wait_ms=waited, requeues=queue.num_requeues(key))
                queue.forget(key)
            except NotLeader:
                return
            except Requeue as exc:
                log.info("requeue", extra={"key": key, "why": str(exc)})
                queue.add_rate_limited(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile failed; retrying with backoff", extra={"key": key})
                queue.add_rate_limited(key)
            finally:
                queue.done(key)

    # -- run --------------------------------------------------------------------------------------
    async def run(self) -> int:
        recorder_task = asyncio.create_task(self.recorder.run(), name="event-recorder")
        self._recorder_task = recorder_task
        if self.settings.leader_elect:
            elector = LeaderElector(
                self.client,
                LeaderElectionConfig(
                    namespace=self.settings.lease_namespace,
                    name=self.settings.lease_name,
                    identity=self.settings.identity,
                    lease_duration=self.settings.lease_duration,
                    renew_deadline=self.settings.renew_deadline,
                    retry_period=self.settings.retry_period,
                ),
                on_started_leading=self._on_started_leading,
                on_stopped_leading=self._on_stopped_leading,
                on_new_leader=self._on_new_leader,
            )
            self.gate.guard(elector.is_leader, elector.lease_remaining)
            lead_task = asyncio.create_task(elector.run(), name="leader-election")
            self._election_task = lead_task
            # Campaign once before listing: a process that takes a free lease at once (a restart, a
            # rollout) then lists after its own lease write, so its caches are fresh by construction and
            # the takeover starts without waiting for them (see _fresh_view). A standby lists ~1 RTT later.
            campaigned = asyncio.create_task(elector.campaigned.wait())
            await asyncio.wait({campaigned, lead_task}, return_when=asyncio.FIRST_COMPLETED)
            campaigned.cancel()
        else:
            lead_task = asyncio.create_task(self._on_started_leading(), name="lead")
        self._informer_tasks = [
            asyncio.create_task(inf.run(), name=f"informer-{inf.resource.plural}")
            for inf in self._informers()
        ]
        stop_task: asyncio.Task[Any] = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({lead_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if lead_task in done and not self.stopping.is_set() and lead_task.exception() is not None:
            log.error("leader election failed", exc_info=lead_task.exception())
            self.exit_code = 1
        self.stopping.set()
        await self._flush_ledger()
        # Stop guarded work first, then give up the lease (cancelling the elector releases it).
        self.gate.close()
        for task in self._lead_tasks:
            task.cancel()
        self.service_queue.shutdown()
        self.pool_queue.shutdown()
        self.reservation_queue.shutdown()
        lead_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await lead_task
        for task in [*self._informer_tasks, stop_task]:
            task.cancel()
        await self.recorder.close()
        recorder_task.cancel()
        await asyncio.gather(*self._informer_tasks, recorder_task, stop_task, return_exceptions=True)
        return self.exit_code
