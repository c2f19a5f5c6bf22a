"""The release ledger in IPPool status: read back at adoption, written coalesced while leading.

The ledger is a hint (see controller/ipam/ledger.py): reading a bad one costs a Warning Event and the reuse
order of some free addresses, never an assigned IP; a write that fails is simply retried on the next tick.

Writes are a merge patch of ``status.releaseLedger`` alone, so the pool reconciler's counts and conditions
are never overwritten by it, nor it by them. It carries no resourceVersion: only the leader writes it, and
its latest view is the one to keep. The write gate bounds every write by the lease like any other write.
``sync`` runs in the pool worker right after the pool reconciler's own status writes, never beside them: a
ledger write landing between the reconciler's read and its write would make that write a 409 (measured: 42
of 97 pool status writes when the two ran side by side at churn).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Tracer

from controller.ipam import Allocator
from controller.ipam.ledger import LEDGER_FIELD, Ledger, ledger_to_status, parse_ledger
from controller.kube.client import KubeClient
from controller.kube.events import EventRecorder
from controller.kube.resources import IPPOOLS
from controller.kube.store import Store
from controller.reconcile.leadership import WriteGate
from controller.reconcile.writes import patch_status

log = logging.getLogger(__name__)

LEDGER_IGNORED = "LedgerIgnored"


@dataclass(frozen=True)
class LedgerSettings:
    # At most one ledger write per pool per this many seconds, however many addresses are released: at
    # 1,000 deletions/s a pool's ledger is written once a second, not 1,000 times. The first write after
    # taking over waits as long too: the ledger was just read back, so it is as fresh as it gets.
    min_interval: float = 1.0


def restore_ledgers(
    allocator: Allocator,
    pools: Iterable[Mapping[str, Any]],
    recorder: EventRecorder,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> int:
    """Seed the allocator's reuse history from every pool's ledger; call after ``adopt``, before serving.

    A ledger with something wrong in it gets a ``LedgerIgnored`` Warning on its IPPool and a log line; what
    is usable in it is still used. An unknown or invalid pool's ledger is left alone (its addresses are not
    known now; the pool's own condition says why). Returns the number of addresses placed.
    """
    ledgers: dict[str, Ledger] = {}
    now = wall_clock()
    for obj in pools:
        name = str(obj["metadata"]["name"])
        if allocator.release_ledger(name) is None:
            continue
        status = obj.get("status")
        raw = status.get(LEDGER_FIELD) if isinstance(status, Mapping) else None

        def contains(family: str, value: int, pool: str = name) -> bool:
            return allocator.pool_contains(pool, family, value)

        ledger, problem = parse_ledger(raw, contains=contains, now=now)
        if problem is not None:
            log.warning("release ledger partly ignored", extra={"pool": name, "why": problem})
            recorder.record(dict(obj), "Warning", LEDGER_IGNORED, problem)
        ledgers[name] = ledger
    placed = allocator.restore_ledgers(ledgers)
    log.info("release ledgers restored", extra={"pools": len(ledgers), "addresses": placed})
    return placed


class LedgerWriter:
    """Keeps each pool's ``status.releaseLedger`` equal to the allocator's history, coalesced per pool."""

    def __init__(
        self,
        *,
        client: KubeClient,
        tracer: Tracer,
        gate: WriteGate,
        allocator: Allocator,
        pools: Store,
        settings: LedgerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_deferred: Callable[[str, float], None] | None = None,
    ) -> None:
        """``on_deferred(pool, seconds)``: a pool's ledger changed but was written too recently; have ``sync``
        called again after that long (the controller enqueues the pool)."""
        self._client = client
        self._tracer = tracer
        self._gate = gate
        self._allocator = allocator
        self._pools = pools
        self._settings = settings or LedgerSettings()
        self._clock = clock
        self._on_deferred = on_deferred
        self._started = clock()
        self._written: dict[str, dict[str, Any]] = {}  # what our last write per pool said
        self._last_write: dict[str, float] = {}
        self._seen: tuple[int, frozenset[tuple[str, Any]]] | None = None
        self.writes = 0

    async def sync(self, *, force: bool = False) -> int:
        """Write every pool whose ledger changed; with ``force`` also those written less than
        ``min_interval`` ago (the last flush when leadership is given up). Returns the writes made."""
        objs = self._pools.list()
        seen = (
            self._allocator.history_version,
            frozenset((o["metadata"]["name"], o["metadata"].get("generation")) for o in objs),
        )
        if seen == self._seen and not force:
            return 0
        deferred = False
        wrote = 0
        for obj in objs:
            outcome = await self._sync_pool(obj, force)
            deferred |= outcome is None
            wrote += bool(outcome)
        # A pool held back by min_interval is looked at again at its next sync even with no new release.
        self._seen = None if deferred else seen
        return wrote

    async def _sync_pool(self, obj: Mapping[str, Any], force: bool) -> bool | None:
        """True when written, False when nothing to write, None when held back by ``min_interval``."""
        name = str(obj["metadata"]["name"])
        ledger = self._allocator.release_ledger(name)
        if ledger is None:
            return False
        desired = ledger_to_status(ledger)
        status = obj.get("status")
        current = status.get(LEDGER_FIELD) if isinstance(status, Mapping) else None
        # A pool that never had a ledger needs no empty one written at every takeover.
        never_had_one = current is None and not ledger.entries
        if desired == self._written.get(name) or desired == current or never_had_one:
            self._written[name] = desired
            return False
        now = self._clock()
        wait = self._last_write.get(name, self._started) + self._settings.min_interval - now
        if not force and wait > 0:
            if self._on_deferred is not None:
                self._on_deferred(name, wait)
            return None
        path = IPPOOLS.path(name=name, subresource="status")
        body = {"status": {LEDGER_FIELD: desired}}
        self._last_write[name] = now
        what = f"IPPool {name} release ledger"
        if await patch_status(self._client, self._tracer, self._gate, path, body, what) is None:
            return False  # the pool is gone
        # Counted from the answer too: a slow write is not followed at once by the next one.
        self._last_write[name] = self._clock()
        self._written[name] = desired
        self.writes += 1
        return True
