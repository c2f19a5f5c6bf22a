"""The allocator: which Service holds which IPs, with stability first.

Everything here is re-derivable from the Services' status plus the pools (``adopt``), so the allocator keeps
no state of its own that matters across restarts except the reuse history, which only affects order. That
history is kept per address, apart from the pools, so a pool that is briefly invalid or deleted and re-created
still hands out the addresses released moments before last.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from .addresses import AddressError, int_to_ip, parse_ip
from .ledger import LEDGER_MAX_ENTRIES, Ledger, LedgerEntry
from .model import (
    FAMILIES,
    PREFER_DUAL_STACK,
    REQUIRE_DUAL_STACK,
    AdoptResult,
    Decision,
    FamilyCounts,
    PoolsChange,
    PoolSpec,
    PoolStatus,
    Reason,
    ReservationsChange,
    ServiceKey,
    ServiceRequest,
)
from .pools import Pool, choose_pools, find_conflicts
from .reservations import (
    STATE_ORDER,
    AddressState,
    ReservationIndex,
    ReservationSpec,
    ReservationState,
    ReservedAddress,
    describe_target,
)
from .sharing import SharingTerms, compatible, incompatibility

log = logging.getLogger(__name__)

Addr = tuple[str, int]  # (family, address as int)

_ANY_POOL = "*"


@dataclass
class _Assignment:
    uid: str
    created: float
    ips: dict[str, int]
    terms: SharingTerms
    requested_pool: str | None
    # the Service's labels: whether a holder is an IPReservation's target (selector) is read from them
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Recent:
    uid: str
    released_at: float
    ips: tuple[Addr, ...]
    wall: float = 0.0  # released_at on the wall clock, for the ledger
    seq: int = 0  # release sequence number: the ledger's order


@dataclass(frozen=True)
class _Release:
    """The latest release of an address that is free now (the ledger's source)."""

    seq: int
    at: float  # wall clock
    key: ServiceKey
    uid: str
    gone: bool  # the Service went away (deleted, re-created, no longer ours), not merely moved off it


@dataclass
class _Outcome:
    """What one ensure call found, before it is committed."""

    reason: Reason | None = None
    message: str = ""
    pending: bool = False


class Allocator:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        reclaim_window: float = 600.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        # Only for the release ledger, which outlives this process: monotonic time means nothing elsewhere.
        self._wall = wall_clock
        self._reclaim_window = reclaim_window
        self._pools: dict[str, Pool] = {}
        self._owners: dict[ServiceKey, _Assignment] = {}
        self._holders: dict[Addr, list[ServiceKey]] = {}
        self._by_sharing_key: dict[str, set[ServiceKey]] = {}
        self._pending: dict[ServiceKey, ServiceRequest] = {}
        self._pending_tags: dict[ServiceKey, frozenset[str]] = {}
        self._pending_index: dict[str, set[ServiceKey]] = {}
        self._orphans: set[ServiceKey] = set()
        self._recent: OrderedDict[ServiceKey, _Recent] = OrderedDict()
        # family -> addresses in the order they were last freed (oldest first), whatever pool they were in
        self._freed_order: dict[str, OrderedDict[int, None]] = {f: OrderedDict() for f in FAMILIES}
        # free addresses that were released, latest release last; an address leaves it when held again
        self._release_log: OrderedDict[Addr, _Release] = OrderedDict()
        self._release_seq = 0
        self.history_version = 0  # bumped whenever the release history changes (the ledger writer polls it)
        # Reserved addresses held by nobody are kept out of every pool's free space (see set_reservations).
        self._reservations = ReservationIndex(())

    # ------------------------------------------------------------------------------------------- pools
    def set_pools(self, pools: Iterable[PoolSpec]) -> PoolsChange:
        old = self._pools
        old_conflicts = {name: pool.conflict_with for name, pool in old.items()}
        new: dict[str, Pool] = {}
        for spec in pools:
            previous = old.get(spec.name)
            if previous is not None and previous.spec == spec:
                new[spec.name] = previous  # unchanged: nothing to rebuild, free space and all
            else:
                new[spec.name] = self._build(spec)
        conflicts = find_conflicts(new.values())
        for pool in new.values():
            pool.conflict_with = conflicts.get(pool.name)
        changed = [
            p
            for p in new.values()
            if p.name not in old
            or old[p.name].spec != p.spec
            or old_conflicts[p.name] != p.conflict_with
            or old[p.name].invalid != p.invalid
        ]
        # The old form of every changed or deleted pool: a pending request may be answered differently
        # because its requested IP left a pool, not only because a pool can now serve it.
        before = [old[p.name] for p in changed if p.name in old] + [p for n, p in old.items() if n not in new]
        orphans_before = {k: self._orphan_families(a) for k in self._orphans if (a := self._owners.get(k))}
        self._pools = new

        orphans_now = {key: fams for key, a in self._owners.items() if (fams := self._orphan_families(a))}
        self._orphans = set(orphans_now)
        retry = {key for key in orphans_before if key not in orphans_now and key in self._owners}
        for key, families in orphans_now.items():
            # An orphan is retained only while its address is in no pool: one that now is, moves.
            held = self._owners[key].ips
            if any(p.contains(f, held[f]) for p in changed for f in families):
                retry.add(key)
        for key, request in self._pending.items():
            # Not only pools that can serve it now: a pool turning invalid or disabled changes the
            # reason a pending Service shows, and that is written to its status too.
            if any(self._may_serve(p, request) for p in (*changed, *before)):
                retry.add(key)
        invalid = {p.name: p.invalid for p in new.values() if p.invalid is not None}
        return PoolsChange(
            # Newly orphaned owners, and owners with another address orphaned (the condition names them).
            orphaned=frozenset(k for k, fams in orphans_now.items() if orphans_before.get(k) != fams),
            retry=frozenset(retry),
            invalid=invalid,
            conflicts=conflicts,
        )

    def _build(self, spec: PoolSpec) -> Pool:
        """A new or changed pool: free space minus what is held; freed ones last, in the order freed."""
        pool = Pool(spec)
        if pool.invalid is not None:
            return pool
        for (family, value), holders in self._holders.items():
            if holders and pool.contains(family, value):
                pool.free[family].allocate(value)
        for family, value in self._reservations.owners:
            if not self._holders.get((family, value)) and pool.contains(family, value):
                pool.free[family].allocate(value)  # reserved: handed out only by _claim_reserved
        for family in FAMILIES:
            if pool.has_family(family):
                pool.free[family].restore_release_order(self._freed_order[family])
        return pool

    def _may_serve(self, pool: Pool, request: ServiceRequest) -> bool:
        if any(pool.contains(f, v) for f, v in self._reserved_for_request(request)):
            return True  # an IPReservation stands for a requested IP
        if request.requested_ips:
            for text in request.requested_ips:
                try:
                    family, value = parse_ip(text)
                except AddressError:
                    continue
                if pool.contains(family, value):
                    return True
            return False
        if request.requested_pool is not None:
            return request.requested_pool == pool.name
        held = self._owners.get(request.key)
        if held is not None and any(pool.contains(f, v) for f, v in held.ips.items()):
            return True
        return pool.spec.auto_assign and pool.allows(request)

    def pool_status(self, name: str) -> PoolStatus | None:
        pool = self._pools.get(name)
        return self._counted_reserved(pool) if pool is not None else None

    def pool_statuses(self) -> list[PoolStatus]:
        return [self._counted_reserved(self._pools[name]) for name in sorted(self._pools)]

    def pools(self) -> Mapping[str, Pool]:
        """The current pools by name, read-only: for explanations (controller/ipam/explain.py), which read a
        pool's spec, state and free counts but must never allocate from it."""
        return MappingProxyType(self._pools)

    # ------------------------------------------------------------------------------------------- queries
    def assignment(self, key: ServiceKey) -> tuple[str, ...]:
        """The IPs held, IPv4 first."""
        held = self._owners.get(key)
        if held is None:
            return ()
        return tuple(int_to_ip(f, v) for f, v in sorted(held.ips.items()))

    def pool_of(self, key: ServiceKey) -> str | None:
        held = self._owners.get(key)
        if held is None:
            return None
        requested = self._pools.get(held.requested_pool) if held.requested_pool is not None else None
        for family, value in sorted(held.ips.items()):
            if requested is not None and requested.contains(family, value):
                return requested.name
            pool = self._home_pool(family, value)
            if pool is not None:
                return pool.name
        return None

    def holders(self, ip: str) -> tuple[ServiceKey, ...]:
        try:
            addr = parse_ip(ip)
        except AddressError:
            return ()
        return tuple(self._holders.get(addr, ()))

    def pending(self) -> frozenset[ServiceKey]:
        return frozenset(self._pending)

    def orphaned(self) -> frozenset[ServiceKey]:
        return frozenset(self._orphans)

    def pending_for(self, ips: Iterable[str]) -> frozenset[ServiceKey]:
        """Pending requests that may fit now that these IPs were freed (e.g. ``Decision.released``)."""
        keys: set[ServiceKey] = set()
        for ip in ips:
            try:
                family, value = parse_ip(ip)
            except AddressError:
                continue
            keys |= self._pending_index.get(_ip_tag(family, value), set())
            for pool in self._pools.values():
                if pool.contains(family, value):
                    keys |= self._pending_index.get(pool.name, set())
        return frozenset(keys)

    # ------------------------------------------------------------------------------------------- adopt
    def adopt(self, requests: Iterable[ServiceRequest]) -> AdoptResult:
        """Register the IPs Services already hold, oldest claim first; never allocates.

        An IP claimed by two Services that may not share it stays with the older claim (created, uid);
        the newer one is reported as a duplicate and gets a new IP at its next ensure.
        """
        adopted: set[ServiceKey] = set()
        duplicates: dict[ServiceKey, ServiceKey] = {}
        invalid: dict[ServiceKey, str] = {}
        # A claim whose Service changed since it was granted loses to one that did not, as it would have live
        # (the one whose edit made the clash moves); then the oldest claim wins.
        for request in sorted(requests, key=lambda r: (r.changed_since_grant, r.created, r.uid)):
            if not request.current_ips:
                continue
            if request.key in self._owners:
                self._drop(request.key, remember=False)
            terms = SharingTerms.of(request)
            ips: dict[str, int] = {}
            for text in request.current_ips:
                try:
                    family, value = parse_ip(text)
                except AddressError as exc:
                    invalid[request.key] = f"status IP {text!r}: {exc}"
                    continue
                if family in ips:
                    kept_ip = int_to_ip(family, ips[family])
                    invalid[request.key] = f"status holds two {family} addresses; kept {kept_ip}"
                    continue
                holders = self._holders.get((family, value), [])
                blocker = next((h for h in holders if not compatible(self._owners[h].terms, terms)), None)
                if blocker is not None:
                    log.debug("adopt: %s also claims %s, held by older %s", request.key, text, blocker)
                    duplicates[request.key] = blocker
                    continue
                ips[family] = value
            if not ips:
                continue
            assignment = _Assignment(request.uid, request.created, {}, terms, request.requested_pool)
            assignment.labels = request.labels
            self._owners[request.key] = assignment
            self._index_sharing(request.key, terms)
            for family, value in ips.items():
                self._hold(request.key, family, value)
                assignment.ips[family] = value
            if self._orphan_families(assignment):
                self._orphans.add(request.key)
            adopted.add(request.key)
        return AdoptResult(adopted=frozenset(adopted), duplicates=duplicates, invalid=invalid)

    # ------------------------------------------------------------------------------------------- release
    def release(self, key: ServiceKey) -> frozenset[ServiceKey]:
        """Forget a deleted Service; returns the pending Services that may fit in what it freed."""
        self._clear_pending(key)
        freed = self._drop(key, remember=True)
        woken = self.pending_for(int_to_ip(f, v) for f, v in freed)
        return woken - {key}

    def _drop(self, key: ServiceKey, *, remember: bool) -> list[Addr]:
        assignment = self._owners.pop(key, None)
        self._orphans.discard(key)
        if assignment is None:
            return []
        self._unindex_sharing(key, assignment.terms)
        released = list(assignment.ips.items())
        for family, value in released:
            self._unhold(key, family, value)
        if remember and released:
            now = self._clock()
            self._prune_recent(now)
            seq, wall = self._next_release()
            self._recent[key] = _Recent(assignment.uid, now, tuple(released), wall, seq)
            self._recent.move_to_end(key)
            for addr in released:
                if addr in self._release_log:  # freed now, not still held by a sharer
                    self._release_log[addr] = _Release(seq, wall, key, assignment.uid, gone=True)
        return released

    def _prune_recent(self, now: float) -> None:
        # entries are kept in release order, so the expired ones are at the front
        while self._recent:
            key, oldest = next(iter(self._recent.items()))
            if now - oldest.released_at <= self._reclaim_window:
                break
            del self._recent[key]

    def _next_release(self) -> tuple[int, float]:
        self._release_seq += 1
        self.history_version += 1
        return self._release_seq, self._wall()

    # ------------------------------------------------------------------------------------------- ledger
    def release_ledger(self, pool_name: str) -> Ledger | None:
        """The pool's release history as the ledger keeps it; None for an unknown or invalid pool (whose
        addresses are not known, so an empty ledger would wrongly erase the one in its status).

        Entries, oldest first: the latest release of each free address of the pool (its position is the
        reuse order) and, within the reclaim window, the free addresses of each name's latest deletion
        (for same-name reclaim, even when another Service held and released one of them since).
        """
        pool = self._pools.get(pool_name)
        if pool is None or pool.invalid is not None:
            return None
        # Both histories are kept in release (sequence) order, so each is read newest first and only as far
        # as can still make the newest LEDGER_MAX_ENTRIES: a ledger write costs the same at any churn.
        found: dict[tuple[Addr, int], LedgerEntry] = {}
        for addr, rec in reversed(self._release_log.items()):
            if pool.contains(*addr):
                found[(addr, rec.seq)] = LedgerEntry(int_to_ip(*addr), rec.at, rec.key, rec.uid, rec.gone)
                if len(found) > LEDGER_MAX_ENTRIES:
                    break
        cutoff = min(seq for _, seq in found) if len(found) > LEDGER_MAX_ENTRIES else -math.inf
        now = self._clock()
        for key, recent in reversed(self._recent.items()):
            if recent.seq < cutoff or now - recent.released_at > self._reclaim_window:
                break
            for addr in recent.ips:
                if (addr, recent.seq) not in found and addr not in self._holders and pool.contains(*addr):
                    found[(addr, recent.seq)] = LedgerEntry(
                        int_to_ip(*addr), recent.wall, key, recent.uid, service_gone=True
                    )
        ordered = [found[k] for k in sorted(found, key=lambda k: k[1])]
        return Ledger(tuple(ordered[-LEDGER_MAX_ENTRIES:]), truncated=len(ordered) > LEDGER_MAX_ENTRIES)

    def pool_contains(self, pool_name: str, family: str, value: int) -> bool:
        """Whether the (valid) pool has this address: what a ledger entry must satisfy to be used."""
        pool = self._pools.get(pool_name)
        return pool is not None and pool.invalid is None and pool.contains(family, value)

    def restore_ledgers(self, ledgers: Mapping[str, Ledger]) -> int:
        """Seed the reuse order and same-name reclaim from the pools' ledgers; returns the addresses placed.

        Called at adoption, after ``adopt``: an entry for a held address, outside its (valid) pool or of an
        unknown pool is ignored, so no assignment can change; history this allocator recorded itself wins
        over the ledger's. Entries of several pools are merged by release time, each pool's order kept.
        """
        streams: list[list[tuple[LedgerEntry, Addr]]] = []
        for name in sorted(ledgers):
            pool = self._pools.get(name)
            if pool is None or pool.invalid is not None:
                continue
            stream = []
            for entry in ledgers[name].entries:
                try:
                    addr = parse_ip(entry.ip)
                except AddressError:
                    continue
                if pool.contains(*addr) and addr not in self._holders:
                    stream.append((entry, addr))
            streams.append(stream)
        merged = list(heapq.merge(*streams, key=lambda item: item[0].released_at))
        # Restored history is older than any this allocator recorded, so it gets negative sequence numbers;
        # the entries of one deletion (name, uid, time) share one, as they did when they were recorded.
        seqs: list[int] = []
        group_seq: dict[tuple[ServiceKey, str, float], int] = {}
        for index, (entry, _) in enumerate(merged):
            seq = index - len(merged)
            if entry.service_gone:
                seq = group_seq.setdefault((entry.service, entry.uid, entry.released_at), seq)
            seqs.append(seq)
        order: OrderedDict[Addr, tuple[LedgerEntry, int]] = OrderedDict()
        for (entry, addr), seq in zip(merged, seqs, strict=True):
            order.pop(addr, None)
            order[addr] = (entry, seq)
        self._restore_order(order)
        self._restore_recent(merged, seqs)
        self.history_version += 1
        return len(order)

    def _restore_order(self, order: OrderedDict[Addr, tuple[LedgerEntry, int]]) -> None:
        # An address this allocator released itself keeps its own (newer) place.
        log: OrderedDict[Addr, _Release] = OrderedDict()
        for addr, (e, seq) in order.items():
            if addr not in self._release_log:
                log[addr] = _Release(seq, e.released_at, e.service, e.uid, e.service_gone)
        log.update(self._release_log)
        self._release_log = log
        for family in FAMILIES:
            restored = [v for (f, v) in order if f == family and v not in self._freed_order[family]]
            freed: OrderedDict[int, None] = OrderedDict((v, None) for v in restored)
            freed.update(self._freed_order[family])
            self._freed_order[family] = freed
        for name, pool in list(self._pools.items()):
            if pool.invalid is not None:
                continue
            if any(pool.free[f].released_order() for f in FAMILIES):
                rebuilt = self._build(pool.spec)  # live releases must stay behind the restored ones
                rebuilt.conflict_with = pool.conflict_with
                self._pools[name] = rebuilt
                continue
            for family in FAMILIES:
                pool.free[family].restore_release_order(v for (f, v) in order if f == family)

    def _restore_recent(self, merged: list[tuple[LedgerEntry, Addr]], seqs: list[int]) -> None:
        # Each name's latest deletion: the entries sharing its uid and release time.
        groups: dict[ServiceKey, tuple[str, float, int, list[Addr]]] = {}
        for (entry, addr), seq in zip(merged, seqs, strict=True):
            if not entry.service_gone:
                continue
            group = groups.get(entry.service)
            if group is not None and (group[0], group[1]) == (entry.uid, entry.released_at):
                group[3].append(addr)
            elif group is None or entry.released_at >= group[1]:
                groups[entry.service] = (entry.uid, entry.released_at, seq, [addr])
        now, now_wall = self._clock(), self._wall()
        restored: OrderedDict[ServiceKey, _Recent] = OrderedDict()
        for key, (uid, at, seq, addrs) in sorted(groups.items(), key=lambda item: item[1][2]):
            age = max(0.0, now_wall - at)
            if key in self._recent or age > self._reclaim_window:
                continue
            restored[key] = _Recent(uid, now - age, tuple(sorted(set(addrs))), at, seq)
        restored.update(self._recent)
        self._recent = restored

    # ------------------------------------------------------------------------------------------- ensure
    def ensure(self, request: ServiceRequest) -> Decision:
        key = request.key
        existing = self._owners.get(key)
        if existing is not None and existing.uid != request.uid:
            # Deleted and re-created without a release in between: the old object's IPs are free to reclaim.
            self._drop(key, remember=True)
            existing = None
        held_before = dict(existing.ips) if existing is not None else {}
        terms = SharingTerms.of(request)
        wanted = _wanted_families(request)
        requested, problem = _parse_requested(request, wanted)
        if request.problem is not None:
            requested, problem = {}, request.problem
        outcome = _Outcome()
        tags: set[str] = set()

        kept, orphan_families, lost = self._keep(request, terms, wanted, requested, existing)
        missing = [f for f in wanted if f not in kept]
        added: dict[str, int] = {}
        # An IPReservation acts as a standing request on its target's behalf, for the families it lacks only
        # (a held IP is never moved for it); the Service's own requested IPs come first.
        reserved: tuple[dict[str, int], _Outcome] | None = None
        if missing and problem is None and not requested and not orphan_families:
            reserved = self._via_reservation(request, terms, missing, kept, tags)
        if problem is not None:
            outcome = _Outcome(Reason.CONFLICTING_REQUESTS, problem, True)
        elif missing and requested:
            added, outcome = self._claim_requested(request, terms, missing, requested, kept, tags)
        elif missing and orphan_families:
            pass  # a retained orphan blocks additions; the orphan policy decides
        elif reserved is not None:
            added, outcome = reserved
        elif missing and kept:
            added, outcome = self._complete(request, terms, missing, kept, tags)
        elif missing:
            added, outcome = self._allocate_fresh(request, terms, wanted, tags)

        final = {**kept, **added}
        if (
            request.family_policy == REQUIRE_DUAL_STACK
            and problem is None
            and any(f not in final for f in wanted)
        ):
            # Both families or none. No address was taken yet for a pair that is not complete (_complete has
            # one family to add, _claim_requested claims at commit), so dropping the plan leaks nothing.
            assert not added or requested or reserved is not None
            orphan_families = set()
            if requested:
                # The refusal is decided as for a Service holding nothing: what it held (a retained orphan,
                # say) must not change which address the message names, or the next pass rewrites it.
                kept = {}
                _, outcome = self._claim_requested(request, terms, wanted, requested, {}, tags)
                added = {}
            elif reserved is not None:
                kept, added = {}, {}
            else:
                # decided as for a Service holding nothing, reserved addresses first
                kept = {}
                reserved = self._via_reservation(request, terms, wanted, {}, tags)
                if reserved is None:
                    added, outcome = self._allocate_fresh(request, terms, wanted, tags)
                elif all(f in reserved[0] for f in wanted):
                    added, outcome = reserved
                else:
                    added, outcome = {}, reserved[1]
            final = {**added}
            if not final and outcome.reason is None:
                outcome = _Outcome(Reason.FAMILY_UNAVAILABLE, "RequireDualStack: no pair of addresses", True)
        if outcome.reason is None:
            target = [f for f in wanted if not requested or f in requested]
            if all(f in final for f in target) or orphan_families:
                if orphan_families:
                    notes = sorted({self._describe_orphan(request, f, final[f]) for f in orphan_families})
                    outcome = _Outcome(Reason.IP_OUTSIDE_POOL, ", ".join(notes), False)
                elif lost is not None:
                    outcome = _Outcome(Reason.DUPLICATE_IP, f"{lost}; moved to a new IP", False)
                else:
                    outcome = _Outcome(Reason.ALLOCATED, "", False)
            else:
                outcome = _Outcome(Reason.FAMILY_UNAVAILABLE, "no family could be allocated", True)

        terms_changed = existing is not None and existing.terms != terms
        released = self._commit(request, terms, held_before, final)
        retry = set(self.pending_for(int_to_ip(f, v) for f, v in released))
        # Services waiting for an address this one just took: their condition names the holder.
        for family, value in added.items():
            retry |= self._pending_index.get(_ip_tag(family, value), set())
        if terms_changed:
            # new ports or key may make a shared IP acceptable to a Service waiting for it
            for family, value in final.items():
                retry |= self._pending_index.get(_ip_tag(family, value), set())
        if request.sharing_key and final and (terms_changed or added):
            retry |= {k for k, r in self._pending.items() if r.sharing_key == request.sharing_key}
        ips = tuple(int_to_ip(f, final[f]) for f in wanted if f in final)
        if outcome.reason == Reason.ALLOCATED and not outcome.message:
            outcome.message = f"assigned {', '.join(ips)}" if ips else "nothing to assign"
        if outcome.pending:
            self._set_pending(request, tags or {_ANY_POOL})
        else:
            self._clear_pending(key)
        current = {_canonical_or_raw(t) for t in request.current_ips}
        assert outcome.reason is not None
        return Decision(
            ips=ips,
            pool=self.pool_of(key),
            reason=outcome.reason,
            message=outcome.message,
            pending=outcome.pending,
            changed=set(ips) != current,
            released=tuple(int_to_ip(f, v) for f, v in released),
            retry=frozenset(retry - {key}),
            lost=lost,
        )

    def _keep(
        self,
        request: ServiceRequest,
        terms: SharingTerms,
        wanted: list[str],
        requested: dict[str, int],
        existing: _Assignment | None,
    ) -> tuple[dict[str, int], set[str], str | None]:
        """The IPs the Service keeps (per family: what we hold, else its status IP), when still valid.

        Also says why, when it lost an IP to a holder it may not share with: a duplicate claim found at
        adoption, or its own new terms clashing with another holder (then it moves, the other stays).
        """
        # What we hold wins over the status: they differ only when our last status write did not land.
        offered: dict[str, list[int]] = {}
        if existing is not None:
            for family, value in existing.ips.items():
                offered.setdefault(family, []).append(value)
        for text in request.current_ips:
            try:
                family, value = parse_ip(text)
            except AddressError:
                continue
            offered.setdefault(family, []).append(value)
        kept: dict[str, int] = {}
        orphans: set[str] = set()
        lost: str | None = None
        for family in wanted:
            for value in dict.fromkeys(offered.get(family, [])):
                if requested and requested.get(family) != value:
                    continue  # its own requested IPs changed
                mine = request.key in self._holders.get((family, value), ())
                clash = self._clash(request.key, terms, family, value)
                if clash is not None:
                    if lost is None:
                        blocker, why = clash
                        ip = int_to_ip(family, value)
                        lost = f"{ip} is also claimed by {blocker} and they may not share it ({why})"
                    continue
                if self._orphan_ip(request.requested_pool, family, value):
                    # Outside the pool it asks for. Retained only when it is in no pool at all: from status
                    # alone a shrunk pool cannot be told from a pool annotation edited while no leader ran,
                    # and an address inside another pool was granted there (so the request changed).
                    if request.reassign_orphans or not mine or self._home_pool(family, value) is not None:
                        continue
                    orphans.add(family)
                kept[family] = value
                break
        return kept, orphans, lost

    def _clash(
        self, key: ServiceKey, terms: SharingTerms, family: str, value: int
    ) -> tuple[ServiceKey, str] | None:
        """The first other holder of the address that may not share it with these terms, and why."""
        for holder in self._holders.get((family, value), ()):
            if holder == key:
                continue
            why = incompatibility(self._owners[holder].terms, terms)
            if why is not None:
                return holder, why
        return None

    def _claim_requested(
        self,
        request: ServiceRequest,
        terms: SharingTerms,
        missing: list[str],
        requested: dict[str, int],
        kept: dict[str, int],
        tags: set[str],
    ) -> tuple[dict[str, int], _Outcome]:
        claims: dict[str, int] = {}
        failure = _Outcome()
        for family in missing:
            if family not in requested:
                continue
            value = requested[family]
            ip = int_to_ip(family, value)
            tags.add(_ip_tag(family, value))
            pools = [p for p in self._pools.values() if p.contains(family, value)]
            if request.requested_pool is not None:
                pools = [p for p in pools if p.name == request.requested_pool]
            usable = [p for p in pools if p.allocatable and p.allows(request)]
            if not usable:
                tags.update(p.name for p in pools)
                if request.requested_pool is not None:
                    why = f"requested IP {ip} is not in usable pool {request.requested_pool!r}"
                elif pools:
                    unusable = _unusable_why(pools[0], request)
                    why = f"requested IP {ip} is in pool {pools[0].name!r}, which {unusable}"
                else:
                    why = f"requested IP {ip} is not in any pool"
                failure = _Outcome(Reason.REQUESTED_IP_OUTSIDE_POOL, why, True)
                tags.add(_ANY_POOL)
                continue
            owner = self._reservations.owner_of(family, value)
            if owner is not None and not self._may_take_reserved(request, family, value):
                target = describe_target(owner)
                why = f"requested IP {ip} is reserved for {target} (IPReservation {owner.name})"
                failure = _Outcome(Reason.IP_RESERVED, why, True)
                continue
            clash = self._clash(request.key, terms, family, value)
            if clash is not None:
                blocker, why_not = clash
                why = f"requested IP {ip} is in use by {blocker} ({why_not})"
                failure = _Outcome(Reason.REQUESTED_IP_IN_USE, why, True)
                continue
            claims[family] = value
        if failure.reason is not None and request.family_policy == REQUIRE_DUAL_STACK:
            claims = {}  # both or nothing
        return claims, failure

    def _complete(
        self,
        request: ServiceRequest,
        terms: SharingTerms,
        missing: list[str],
        kept: dict[str, int],
        tags: set[str],
    ) -> tuple[dict[str, int], _Outcome]:
        """Add the families a Service lacks from the pool of the IP it keeps, never touching that IP."""
        if request.requested_pool is not None:
            # _keep only kept IPs inside the requested pool (or retained orphans, which never get here)
            home = self._pools.get(request.requested_pool)
        else:
            home = next((self._home_pool(f, v) for f, v in kept.items() if self._home_pool(f, v)), None)
        if home is None:
            return {}, _Outcome(Reason.FAMILY_UNAVAILABLE, "the kept IP is in no pool", True)
        tags.add(home.name)
        added: dict[str, int] = {}
        for family in missing:
            if not _offers(home, request) or not home.has_family(family):
                continue
            value = self._shared_ip(request, terms, home, family)
            if value is None:
                value = home.allocate(family)
            if value is not None:
                added[family] = value
        lacking = [f for f in missing if f not in added]
        return added, (_lack_why(home, lacking, request) if lacking else _Outcome())

    def _allocate_fresh(
        self, request: ServiceRequest, terms: SharingTerms, wanted: list[str], tags: set[str]
    ) -> tuple[dict[str, int], _Outcome]:
        candidates = choose_pools(self._pools, request)
        if not candidates:
            tags.add(request.requested_pool or _ANY_POOL)
            return {}, _Outcome(Reason.NO_POOL, self._no_pool_why(request), True)
        tags.update(p.name for p in candidates)
        reclaim = self._reclaimable(request)

        def plan(pool: Pool) -> dict[str, int | None]:
            # family -> preferred address (a shared or reclaimed one) or None for "next free"
            out: dict[str, int | None] = {}
            for family in wanted:
                shared = self._shared_ip(request, terms, pool, family)
                if shared is not None:
                    out[family] = shared
                elif family in reclaim and pool.contains(family, reclaim[family]) and (
                    reclaim[family] in pool.free[family]
                ):
                    out[family] = reclaim[family]
                elif pool.free[family]:
                    out[family] = None
            return out

        # Two tiers, as MetalLB's Allocate: the pools whose serviceAllocation selects the Service (or the
        # requested pool), and only when they give nothing the plain autoAssign pools. Within a tier, a pool
        # holding the sharing group's IP or the old IP of a re-created Service comes first.
        plans = [(pool, plan(pool)) for pool in candidates]
        plans.sort(
            key=lambda item: (
                item[0].spec.service_allocation is None and request.requested_pool is None,
                not any(v is not None for v in item[1].values()),
            )
        )
        chosen: tuple[Pool, dict[str, int | None]] | None = None
        for plain in (False, True):
            tier = [
                item
                for item in plans
                if (item[0].spec.service_allocation is None and request.requested_pool is None) == plain
            ]
            # MetalLB's findBestPoolForService: a pool giving every family; for PreferDualStack else one
            # giving the first-listed family, else one giving any.
            chosen = next((item for item in tier if all(f in item[1] for f in wanted)), None)
            if chosen is None and request.family_policy == PREFER_DUAL_STACK:
                chosen = next((item for item in tier if wanted[0] in item[1]), None)
                chosen = chosen or next((item for item in tier if item[1]), None)
            if chosen is not None:
                break
        if chosen is None:
            return {}, self._exhausted_why(candidates, wanted, request)
        pool, picks = chosen
        added: dict[str, int] = {}
        for family, preferred in picks.items():
            if preferred is not None and self._holders.get((family, preferred)):
                added[family] = preferred  # joining a sharing group
                continue
            value = pool.allocate(family, preferred)
            if value is not None:
                added[family] = value
        lacking = [f for f in wanted if f not in added]
        # worded as _complete words it, so the next reconcile reports the very same condition
        return added, (_lack_why(pool, lacking, request) if lacking else _Outcome())

    def _exhausted_why(
        self, candidates: list[Pool], families: list[str], request: ServiceRequest
    ) -> _Outcome:
        names = ", ".join(repr(p.name) for p in candidates)
        want = " and ".join(families)
        if request.family_policy == REQUIRE_DUAL_STACK and len(families) > 1:
            if not any(all(p.has_family(f) for f in families) for p in candidates):
                why = f"no pool among {names} has both {want} addresses"
                return _Outcome(Reason.FAMILY_UNAVAILABLE, why, True)
        elif not any(p.has_family(f) for p in candidates for f in families):
            return _Outcome(Reason.FAMILY_UNAVAILABLE, f"no pool among {names} has {want} addresses", True)
        return _Outcome(Reason.POOL_EXHAUSTED, f"no free {want} address in pools {names}", True)

    def _no_pool_why(self, request: ServiceRequest) -> str:
        if request.requested_pool is not None:
            pool = self._pools.get(request.requested_pool)
            if pool is None:
                return f"requested pool {request.requested_pool!r} does not exist"
            return f"requested pool {pool.name!r} {_unusable_why(pool, request)}"
        return "no pool with autoAssign serves this Service"

    def _shared_ip(self, request: ServiceRequest, terms: SharingTerms, pool: Pool, family: str) -> int | None:
        """The lowest IP of this family in pool held by Services this one may share with."""
        if not request.sharing_key:
            return None
        best: int | None = None
        for other in self._by_sharing_key.get(request.sharing_key, ()):
            if other == request.key:
                continue
            value = self._owners[other].ips.get(family)
            if value is None or not pool.contains(family, value) or (best is not None and value >= best):
                continue
            if not self._may_take_reserved(request, family, value):
                continue  # a reserved address is shared only among the reservation's targets
            holders = self._holders.get((family, value), [])
            if all(h == request.key or compatible(self._owners[h].terms, terms) for h in holders):
                best = value
        return best

    def _reclaimable(self, request: ServiceRequest) -> dict[str, int]:
        recent = self._recent.get(request.key)
        if recent is None or recent.uid == request.uid:
            return {}
        if self._clock() - recent.released_at > self._reclaim_window:
            return {}
        return dict(recent.ips)

    # ------------------------------------------------------------------------------------------- commit
    def _commit(
        self,
        request: ServiceRequest,
        terms: SharingTerms,
        held_before: dict[str, int],
        final: dict[str, int],
    ) -> list[Addr]:
        key = request.key
        released: list[Addr] = []
        for family, value in held_before.items():
            if final.get(family) != value:
                self._unhold(key, family, value)
                released.append((family, value))
        assignment = self._owners.get(key)
        if assignment is not None:
            self._unindex_sharing(key, assignment.terms)
        if not final:
            self._owners.pop(key, None)
            self._orphans.discard(key)
            return released
        if assignment is None:
            assignment = _Assignment(request.uid, request.created, {}, terms, request.requested_pool)
            self._owners[key] = assignment
        assignment.terms = terms
        assignment.requested_pool = request.requested_pool
        assignment.labels = request.labels
        assignment.created = request.created
        for family, value in final.items():
            if held_before.get(family) != value:
                self._hold(key, family, value)
        assignment.ips = {f: final[f] for f in sorted(final)}
        self._index_sharing(key, terms)
        if self._orphan_families(assignment):
            self._orphans.add(key)
        else:
            self._orphans.discard(key)
        return released

    def _hold(self, key: ServiceKey, family: str, value: int) -> None:
        holders = self._holders.setdefault((family, value), [])
        if key in holders:
            return
        if not holders:
            for pool in self._pools.values():
                if pool.contains(family, value):
                    pool.free[family].allocate(value)
            if self._release_log.pop((family, value), None) is not None:
                self.history_version += 1
        holders.append(key)

    def _unhold(self, key: ServiceKey, family: str, value: int) -> None:
        holders = self._holders.get((family, value))
        if holders is None or key not in holders:
            return
        holders.remove(key)
        if not holders:
            del self._holders[(family, value)]
            freed = self._freed_order[family]
            freed.pop(value, None)
            freed[value] = None
            seq, wall = self._next_release()
            owner = self._owners.get(key)
            self._release_log.pop((family, value), None)
            self._release_log[(family, value)] = _Release(seq, wall, key, owner.uid if owner else "", False)
            if (family, value) in self._reservations.owners:
                return  # stays out of free space: kept for the reservation's target
            for pool in self._pools.values():
                if pool.contains(family, value):
                    pool.free[family].release(value)

    def _index_sharing(self, key: ServiceKey, terms: SharingTerms) -> None:
        if terms.sharing_key:
            self._by_sharing_key.setdefault(terms.sharing_key, set()).add(key)

    def _unindex_sharing(self, key: ServiceKey, terms: SharingTerms) -> None:
        if terms.sharing_key:
            group = self._by_sharing_key.get(terms.sharing_key)
            if group is not None:
                group.discard(key)
                if not group:
                    del self._by_sharing_key[terms.sharing_key]

    # ------------------------------------------------------------------------------------------- pending
    def _set_pending(self, request: ServiceRequest, tags: Iterable[str]) -> None:
        self._clear_pending(request.key)
        frozen = frozenset(tags)
        self._pending[request.key] = request
        self._pending_tags[request.key] = frozen
        for tag in frozen:
            self._pending_index.setdefault(tag, set()).add(request.key)

    def _clear_pending(self, key: ServiceKey) -> None:
        self._pending.pop(key, None)
        for tag in self._pending_tags.pop(key, frozenset()):
            keys = self._pending_index.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._pending_index[tag]

    # ------------------------------------------------------------------------------------------- reservations
    def set_reservations(self, specs: Iterable[ReservationSpec]) -> ReservationsChange:
        """Apply the IPReservations. A reserved address held by nobody leaves every pool's free space, so
        nothing but the reservation's target can get it; one already held stays with its holder (never
        moved) and is kept back when released. A reservation removed gives its free addresses back."""
        old = self._reservations
        new = ReservationIndex(specs)
        changed = sorted(
            addr
            for addr in old.owners.keys() | new.owners.keys()
            if old.owners.get(addr) != new.owners.get(addr)
        )
        self._reservations = new
        for family, value in changed:
            if self._holders.get((family, value)):
                continue
            was, now = (family, value) in old.owners, (family, value) in new.owners
            for pool in self._pools.values():
                if pool.contains(family, value):
                    if now and not was:
                        pool.free[family].allocate(value)
                    elif was and not now:
                        pool.free[family].release(value)
        ips = tuple(int_to_ip(f, v) for f, v in changed)
        # Pending targets of a reservation that changed, or that gained or lost an address (an older one
        # naming it came or went): they may now wait for it, or stop waiting.
        edited = [
            spec
            for name in old.specs.keys() | new.specs.keys()
            if old.specs.get(name) != new.specs.get(name)
            for spec in (old.specs.get(name), new.specs.get(name))
            if spec is not None
        ]
        edited += [spec for addr in changed for spec in (old.owners.get(addr), new.owners.get(addr)) if spec]
        targets = {
            key
            for key, request in self._pending.items()
            if any(s.selects(key.namespace, key.name, dict(request.labels)) for s in edited)
        }
        return ReservationsChange(retry=self.pending_for(ips) | targets, changed_ips=ips)

    def reserved_for(self, ip: str) -> ReservationSpec | None:
        """The IPReservation that owns this address, or None."""
        return self._reservations.owner(ip)

    def reservation_states(self) -> list[ReservationState]:
        """What each reservation's addresses are doing now, by reservation name."""
        return [state for name in sorted(self._reservations.specs) if (state := self.reservation_state(name))]

    def reservation_state(self, name: str) -> ReservationState | None:
        index = self._reservations
        spec = index.specs.get(name)
        if spec is None:
            return None
        problem = index.invalid.get(name)
        if problem is not None:
            return ReservationState(name, AddressState.INVALID, problem)
        addresses = tuple(self._reserved_address(spec, text) for text in spec.addresses)
        worst = max(addresses, key=lambda a: STATE_ORDER.index(a.state))
        return ReservationState(name, worst.state, _reservation_message(spec, worst), addresses)

    def _reserved_address(self, spec: ReservationSpec, text: str) -> ReservedAddress:
        family, value = parse_ip(text)
        ip = int_to_ip(family, value)
        home = self._home_pool(family, value)
        pool = home.name if home is not None else None
        conflict = self._reservations.conflicts.get((spec.name, (family, value)))
        if conflict is not None:
            return ReservedAddress(ip, AddressState.CONFLICT, pool=pool, conflict_with=conflict)
        holders = tuple(self._holders.get((family, value), ()))
        if home is None:
            return ReservedAddress(ip, AddressState.NOT_IN_POOL, holders)
        if not holders:
            return ReservedAddress(ip, AddressState.WAITING, pool=pool)
        if all(self._is_target(spec, h) for h in holders):
            return ReservedAddress(ip, AddressState.BOUND, holders, pool)
        return ReservedAddress(ip, AddressState.HELD_BY_OTHER, holders, pool)

    def _is_target(self, spec: ReservationSpec, key: ServiceKey) -> bool:
        held = self._owners.get(key)
        return spec.selects(key.namespace, key.name, dict(held.labels if held is not None else ()))

    def _reserved_for_request(self, request: ServiceRequest) -> list[Addr]:
        index = self._reservations
        specs = index.for_service(request.key.namespace, request.key.name, dict(request.labels))
        return [addr for spec in specs for addr in index.owned_addresses(spec)]

    def _may_take_reserved(self, request: ServiceRequest, family: str, value: int) -> bool:
        """Whether the Service may newly take this address: it is not reserved, or reserved for it."""
        owner = self._reservations.owner_of(family, value)
        return owner is None or owner.selects(request.key.namespace, request.key.name, dict(request.labels))

    def _counted_reserved(self, pool: Pool) -> PoolStatus:
        status = pool.status()
        reserved = {f: 0 for f in FAMILIES}
        for family, value in self._reservations.owners:
            if not self._holders.get((family, value)) and pool.contains(family, value):
                reserved[family] += 1
        if not any(reserved.values()):
            return status

        def counts(family: str, c: FamilyCounts) -> FamilyCounts:
            return replace(c, assigned=c.assigned - reserved[family], reserved=reserved[family])

        return replace(status, ipv4=counts("IPv4", status.ipv4), ipv6=counts("IPv6", status.ipv6))

    def _via_reservation(
        self,
        request: ServiceRequest,
        terms: SharingTerms,
        missing: list[str],
        kept: dict[str, int],
        tags: set[str],
    ) -> tuple[dict[str, int], _Outcome] | None:
        """What the Service gets through its reservations for the families it lacks, the rest completed from
        the reserved address's pool; None when no reservation applies to it (it is allocated as usual)."""
        claimed, waiting = self._claim_reserved(request, terms, missing, tags)
        if waiting is not None:
            return claimed, waiting
        if not claimed:
            return None
        added = dict(claimed)
        outcome = _Outcome()
        rest = [f for f in missing if f not in claimed]
        if rest:
            more, outcome = self._complete(request, terms, rest, {**kept, **claimed}, tags)
            added.update(more)
        return added, outcome

    def _claim_reserved(
        self, request: ServiceRequest, terms: SharingTerms, missing: list[str], tags: set[str]
    ) -> tuple[dict[str, int], _Outcome | None]:
        """The reserved addresses this Service gets for the families it lacks, and why it waits if it must.

        It waits (like a Service requesting an IP) while its reserved address is held by another Service or
        lies in no pool it may use; addresses its fellow targets hold and may not share with it are skipped
        (a selector may match more Services than there are addresses; those are allocated as usual).
        """
        index = self._reservations
        specs = index.for_service(request.key.namespace, request.key.name, dict(request.labels))
        claims: dict[str, int] = {}
        waiting: _Outcome | None = None
        for family in missing:
            candidates = [(s, a[1]) for s in specs for a in index.owned_addresses(s) if a[0] == family]
            blocked: list[_Outcome] = []
            for spec, value in candidates:
                ip = int_to_ip(family, value)
                tags.add(_ip_tag(family, value))
                label = f"reserved IP {ip} (IPReservation {spec.name})"
                pools = [p for p in self._pools.values() if p.contains(family, value)]
                if request.requested_pool is not None:
                    pools = [p for p in pools if p.name == request.requested_pool]
                if not any(_offers(p, request) for p in pools):
                    tags.update(p.name for p in pools)
                    tags.add(_ANY_POOL)
                    if pools:
                        unusable = _unusable_why(pools[0], request)
                        why = f"{label} is in pool {pools[0].name!r}, which {unusable}"
                    elif request.requested_pool is not None:
                        why = f"{label} is not in the requested pool {request.requested_pool!r}"
                    else:
                        why = f"{label} is not in any pool"
                    blocked.append(_Outcome(Reason.REQUESTED_IP_OUTSIDE_POOL, why, True))
                    continue
                holders = [h for h in self._holders.get((family, value), ()) if h != request.key]
                if not holders or all(
                    self._is_target(spec, h) and compatible(self._owners[h].terms, terms) for h in holders
                ):
                    claims[family] = value
                    break
                others = [h for h in holders if not self._is_target(spec, h)]
                if others:
                    why = f"{label} is in use by {others[0]}; it is kept for this Service once released"
                    blocked.append(_Outcome(Reason.REQUESTED_IP_IN_USE, why, True))
            if family not in claims and blocked and waiting is None:
                waiting = blocked[0]
        return claims, waiting

    # ------------------------------------------------------------------------------------------- orphans
    def _home_pool(self, family: str, value: int) -> Pool | None:
        """The pool an address belongs to: the oldest non-conflicting one containing it."""
        containing = [p for p in self._pools.values() if p.contains(family, value)]
        if not containing:
            return None
        return min(containing, key=lambda p: (p.conflict_with is not None, p.order_key))

    def _orphan_ip(self, requested_pool: str | None, family: str, value: int) -> bool:
        if requested_pool is not None:
            pool = self._pools.get(requested_pool)
            return pool is None or not pool.contains(family, value)
        return self._home_pool(family, value) is None

    def _orphan_families(self, assignment: _Assignment) -> set[str]:
        return {f for f, v in assignment.ips.items() if self._orphan_ip(assignment.requested_pool, f, v)}

    def _describe_orphan(self, request: ServiceRequest, family: str, value: int) -> str:
        ip = int_to_ip(family, value)
        if request.requested_pool is not None:
            return f"{ip} is outside pool {request.requested_pool!r}; kept"
        return f"{ip} is outside every pool; kept"


def _wanted_families(request: ServiceRequest) -> list[str]:
    families = list(dict.fromkeys(request.families))
    if request.family_policy in (PREFER_DUAL_STACK, REQUIRE_DUAL_STACK):
        return families
    return families[:1]


def _parse_requested(request: ServiceRequest, wanted: list[str]) -> tuple[dict[str, int], str | None]:
    requested: dict[str, int] = {}
    for text in request.requested_ips:
        try:
            family, value = parse_ip(text)
        except AddressError as exc:
            return {}, f"requested IP: {exc}"
        if family in requested:
            return {}, f"two {family} addresses requested ({int_to_ip(family, requested[family])} and {text})"
        if family not in wanted:
            families = ", ".join(wanted)
            return {}, f"requested IP {text} is {family}, but the Service's IP families are {families}"
        requested[family] = value
    if requested and request.family_policy == REQUIRE_DUAL_STACK and set(requested) != set(wanted):
        return {}, "RequireDualStack needs one requested IP per family"
    return requested, None


def _unusable_why(pool: Pool, request: ServiceRequest) -> str:
    if pool.invalid is not None:
        return f"is invalid ({pool.invalid})"
    if pool.conflict_with is not None:
        return f"overlaps older pool {pool.conflict_with!r}"
    if pool.spec.disabled:
        return "is disabled"
    if not pool.allows(request):
        return "does not serve this Service (serviceAllocation)"
    if not _offers(pool, request):
        return "hands out addresses only to Services that ask for it (autoAssign false)"
    return "cannot allocate"


def _offers(pool: Pool, request: ServiceRequest) -> bool:
    """Whether the pool may hand this Service a new address now (as choose_pools would offer it)."""
    if not pool.allocatable or not pool.allows(request):
        return False
    return pool.spec.auto_assign or request.requested_pool == pool.name


def _lack_why(pool: Pool, families: list[str], request: ServiceRequest) -> _Outcome:
    """Why a Service that holds IPs of pool lacks these families."""
    if not _offers(pool, request):
        return _Outcome(Reason.FAMILY_UNAVAILABLE, f"pool {pool.name!r} {_unusable_why(pool, request)}", True)
    absent = [f for f in families if not pool.has_family(f)]
    if absent:
        why = f"pool {pool.name!r} has no {' and '.join(absent)} addresses"
        return _Outcome(Reason.FAMILY_UNAVAILABLE, why, True)
    why = f"pool {pool.name!r} has no free {' and '.join(families)} address"
    return _Outcome(Reason.POOL_EXHAUSTED, why, True)


def _reservation_message(spec: ReservationSpec, worst: ReservedAddress) -> str:
    target = describe_target(spec)
    holders = ", ".join(str(h) for h in worst.holders)
    if worst.state is AddressState.BOUND:
        return f"every address is held by {target}: {holders}"
    if worst.state is AddressState.WAITING:
        return f"{worst.ip} is kept free for {target}"
    if worst.state is AddressState.HELD_BY_OTHER:
        return (
            f"{worst.ip} is held by {holders}, which had it before the reservation and keeps it; "
            f"it goes to {target} once released"
        )
    if worst.state is AddressState.NOT_IN_POOL:
        return f"{worst.ip} is in no IPPool: add it to a pool before it can be handed out"
    return f"{worst.ip} is reserved by the older IPReservation {worst.conflict_with}; this one waits for it"


def _ip_tag(family: str, value: int) -> str:
    return f"ip:{family}:{value}"


def _canonical_or_raw(text: str) -> str:
    try:
        family, value = parse_ip(text)
    except AddressError:
        return text
    return int_to_ip(family, value)
