"""The allocator rebuilt from the cluster's state, as a new leader builds it (controller/app.py).

Pools and IPReservations first, then every claim in Service status adopted, the reuse order restored from
each pool's release ledger (an advisory hint in IPPool status), then every Service ensured once in the
leader's order (those needing an address first, oldest first), following the retries the allocator names
until nothing is left — what the controller converges to from the same objects. Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from controller.ipam import Allocator, Decision, ServiceKey
from controller.ipam.ledger import Ledger, pool_ledger
from controller.reconcile.pool_input import read_pool
from controller.reconcile.reservation_input import read_reservation
from controller.reconcile.service_input import (
    ServiceInput,
    is_ours,
    parse_timestamp,
    read_service,
    service_key,
    status_ips,
)
from controller.reconcile.spec_sets import read_specs

from .cluster import ClusterState


@dataclass(frozen=True)
class Policy:
    """The controller flags that change its decisions; defaults are the controller's."""

    lb_class: str = "stablelb.io/lb"
    handle_unclassed: bool = True
    reassign_orphans: bool = False  # --orphaned-ips=reassign
    reclaim_window: float = 600.0


@dataclass
class Replay:
    state: ClusterState
    policy: Policy
    allocator: Allocator
    objects: dict[ServiceKey, dict[str, Any]]  # the Services stablelb handles
    decisions: dict[ServiceKey, Decision] = field(default_factory=dict)
    inputs: dict[ServiceKey, ServiceInput] = field(default_factory=dict)
    duplicates: dict[ServiceKey, ServiceKey] = field(default_factory=dict)
    shape_errors: dict[str, str] = field(default_factory=dict)
    ledgers: dict[str, Ledger] = field(default_factory=dict)  # as read from each IPPool's status
    ledger_problems: dict[str, str] = field(default_factory=dict)  # what a malformed ledger had ignored
    reservation_errors: dict[str, str] = field(default_factory=dict)  # IPReservations whose spec is unusable

    def read(self, key: ServiceKey) -> ServiceInput:
        """The Service's input as the reconciler reads it: what the allocator holds first, then status."""
        obj = self.objects[key]
        held = self.allocator.assignment(key)
        current = held + tuple(ip for ip in status_ips(obj) if ip not in held) if held else None
        return read_service(
            obj,
            reassign_orphans=self.policy.reassign_orphans,
            namespace_labels=self.state.namespace_labels(key.namespace),
            current_ips=current,
        )

    def settle(self, keys: Iterable[ServiceKey]) -> list[ServiceKey]:
        """Ensure each key, then every Service a decision names for retry, until none is left.

        Returns the keys in the order they were ensured. Bounded, as a workqueue would be rate limited:
        a Service is ensured at most a few times per call."""
        queue = deque(dict.fromkeys(keys))
        queued = set(queue)
        seen: dict[ServiceKey, int] = {}
        done: list[ServiceKey] = []
        while queue:
            key = queue.popleft()
            queued.discard(key)
            if key not in self.objects or seen.get(key, 0) >= 3:
                continue
            seen[key] = seen.get(key, 0) + 1
            inp = self.read(key)
            decision = self.allocator.ensure(inp.request)
            self.inputs[key], self.decisions[key] = inp, decision
            done.append(key)
            for again in sorted(decision.retry):
                if again not in queued:
                    queue.append(again)
                    queued.add(again)
        return done


def replay(state: ClusterState, policy: Policy) -> Replay:
    allocator = Allocator(reclaim_window=policy.reclaim_window)
    specs, errors = read_specs(state.pools, read_pool)
    allocator.set_pools(specs)
    ours = [o for o in state.services if is_ours(o, policy.lb_class, policy.handle_unclassed)]
    run = Replay(state, policy, allocator, {service_key(o): o for o in ours}, shape_errors=errors)
    reservations, run.reservation_errors = read_specs(state.reservations, read_reservation)
    allocator.set_reservations(reservations)
    claims = [
        read_service(
            o,
            reassign_orphans=policy.reassign_orphans,
            namespace_labels=state.namespace_labels(service_key(o).namespace),
        ).request
        for o in ours
        if status_ips(o)
    ]
    run.duplicates = dict(allocator.adopt(claims).duplicates)
    for obj in state.pools:
        ledger, problem = pool_ledger(obj)
        run.ledgers[obj["metadata"]["name"]] = ledger
        if problem is not None:
            run.ledger_problems[obj["metadata"]["name"]] = problem
    allocator.restore_ledgers(run.ledgers)
    ours.sort(
        key=lambda o: (
            bool(status_ips(o)) and service_key(o) not in run.duplicates,
            parse_timestamp(o["metadata"].get("creationTimestamp")),
            o["metadata"].get("uid", ""),
        )
    )
    run.settle(service_key(o) for o in ours)
    return run
