"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules.

Safety rests on three rules:
- Another holder's lease is judged expired by *our* monotonic clock, counted from when we saw the
  record change, never from timestamps in the record (clocks on different machines disagree).
- Every write carries the resourceVersion we read, so a candidate acting on a stale view gets a
  409 instead of overwriting the real holder.
- A leader that cannot renew within ``renew_deadline`` of its last successful renew stops its
  guarded work first (``on_stopped_leading``) and then ``run`` raises ``LeadershipLost``; since
  ``renew_deadline < lease_duration``, it stops before anyone else may take over. Every lease request
  is bounded on the injected clock by the time left, so a hung API server cannot make it late, and
  ``lease_remaining`` gives the same bound to the controller's own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from .client import ApiError, KubeClient
from .clock import Clock, RealClock
from .resources import LEASES

log = logging.getLogger(__name__)

# client-go's JitterFactor: a candidate that does not hold the lease retries after
# retry_period * (1 + U[0, 1.2)) so candidates spread out.
JITTER_FACTOR = 1.2

_T = TypeVar("_T")


class LeadershipLost(Exception):
    """The lease could not be renewed in time; guarded work has already been stopped."""


class Fenced(Exception):
    """A write refused because this replica cannot be sure it leads for the write's whole duration."""


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.namespace or not self.name:
            raise ValueError("lease namespace and name are required")
        if not self.identity:
            raise ValueError("identity is required")
        if self.retry_period <= 0:
            raise ValueError("retry_period must be positive")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew_deadline must be greater than retry_period*{JITTER_FACTOR}")


def _micro_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        config: LeaderElectionConfig,
        *,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], None],
        on_new_leader: Callable[[str], None] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.config = config
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._clock = clock or RealClock()
        self._rng = rng or random.Random()
        self._path = LEASES.path(namespace=config.namespace, name=config.name)
        self._collection = LEASES.path(namespace=config.namespace)
        self._observed_spec: dict[str, Any] | None = None
        self._observed_rv = ""
        self._observed_time = float("-inf")
        self._reported_leader: str | None = None
        self._leading = False
        # Set once the first attempt at the lease has ended, won or not.
        self.campaigned = asyncio.Event()

    # -- public -------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True while we hold the lease and our last renew is recent enough to trust."""
        return (
            self._leading
            and self._observed_holder() == self.config.identity
            and self._clock.monotonic() < self._observed_time + self.config.renew_deadline
        )

    def lease_remaining(self) -> float:
        """Seconds until the renew deadline of our last successful renew; 0 when not leading.

        A write that must not land after a takeover is bounded by this: a standby may take over only
        ``lease_duration`` after it saw our last renew, and we stop at ``renew_deadline``, earlier.
        """
        if not self._leading or self._observed_holder() != self.config.identity:
            return 0.0
        return max(0.0, self._observed_time + self.config.renew_deadline - self._clock.monotonic())

    @property
    def leader(self) -> str:
        """The holder we last observed ("" when none)."""
        return self._observed_holder()

    async def run(self) -> None:
        """Campaign, then run ``on_started_leading`` while renewing the lease.

        - Renewal fails: ``on_stopped_leading`` is called first, the guarded work is cancelled,
          then ``LeadershipLost`` is raised (no release: we may no longer own the lease).
        - Cancelled (clean shutdown): the same stop sequence, then the lease is released when
          ``release_on_cancel`` so a standby takes over within about one retry period.
        - ``on_started_leading`` returns or raises by itself: stop sequence, release, then
          return or re-raise its exception.
        """
        await self._acquire()
        self._leading = True
        log.info("%s became leader of lease %s/%s", self.config.identity, self.config.namespace,
                 self.config.name)
        lead = asyncio.get_running_loop().create_task(self._lead(), name="leader-work")
        renew = asyncio.get_running_loop().create_task(self._renew_until_lost(), name="lease-renew")
        try:
            await asyncio.wait({lead, renew}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            renew.cancel()
            self._step_down(lead)
            await self._settle(lead, renew)
            if self.config.release_on_cancel:
                await self._release()
            raise
        if renew.done():
            # Renew gave up: nothing may happen before guarded work is told to stop.
            self._step_down(lead)
            await self._settle(lead, renew)
            raise LeadershipLost(f"{self.config.identity} failed to renew lease in time")
        renew.cancel()
        self._step_down(lead)
        await self._settle(lead, renew)
        await self._release()
        exc = None if lead.cancelled() else lead.exception()
        if exc is not None:
            raise exc

    # -- campaign and renewal -----------------------------------------------------------------

    async def _lead(self) -> None:
        await self._on_started()

    def _step_down(self, lead: asyncio.Task[None]) -> None:
        was_leading = self._leading
        self._leading = False
        if was_leading:
            try:
                self._on_stopped()
            except Exception:
                log.exception("on_stopped_leading failed")
        lead.cancel()

    async def _settle(self, lead: asyncio.Task[None], renew: asyncio.Task[None]) -> None:
        """Let cancelled guarded work unwind (bounded) so nothing of ours runs after a release."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.renew_deadline):
                await asyncio.gather(lead, renew, return_exceptions=True)
        if not lead.done():
            log.error("%s: guarded work did not stop within %.1fs", self.config.identity,
                      self.config.renew_deadline)

    async def _acquire(self) -> None:
        while True:
            try:
                won = await self._try_bounded(self.config.renew_deadline)
            finally:
                self.campaigned.set()
            if won:
                return
            delay = self.config.retry_period * (1 + self._rng.random() * JITTER_FACTOR)
            await self._clock.sleep(delay)

    def _until_deadline(self) -> float:
        return self._observed_time + self.config.renew_deadline - self._clock.monotonic()

    async def _renew_until_lost(self) -> None:
        cfg = self.config
        while True:
            await self._clock.sleep(min(cfg.retry_period, self._until_deadline()))
            while True:
                # Recomputed after every attempt and every sleep: each one used up part of the time left.
                remaining = self._until_deadline()
                if remaining <= 0:
                    log.error("%s: lease not renewed within %.1fs", cfg.identity, cfg.renew_deadline)
                    return
                deadline = self._clock.monotonic() + remaining
                if await self._try_bounded(remaining):
                    if self._clock.monotonic() >= deadline:
                        # is_leader() was already False (writers saw the gate close): a term never
                        # resumes once it lapsed, so stop even though this renew made it in.
                        log.error("%s: lease renewed only at the renew deadline", cfg.identity)
                        return
                    break
                if self._observed_holder() != cfg.identity:
                    log.error("%s: lease taken over by %r", cfg.identity, self._observed_holder())
                    return
                remaining = self._until_deadline()
                if remaining <= 0:
                    log.error("%s: lease not renewed within %.1fs", cfg.identity, cfg.renew_deadline)
                    return
                await self._clock.sleep(min(cfg.retry_period, remaining))

    async def _try_bounded(self, bound: float) -> bool:
        try:
            return await self._on_clock(self._try_acquire_or_renew(bound), bound)
        except (TimeoutError, aiohttp.ClientError, ConnectionError, ApiError) as exc:
            log.info("%s: lease attempt failed: %r", self.config.identity, exc)
            return False

    async def _on_clock(self, work: Coroutine[Any, Any, _T], bound: float) -> _T:
        """``work`` cut off after ``bound`` seconds of the injected clock (TimeoutError).

        The client's own timeout counts real seconds; the deadline that matters is the one the
        elector reasons with, so the race is run on the same clock.
        """
        task = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self._clock.sleep(bound))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise TimeoutError(f"no answer within {bound:.2f}s")
        return task.result()

    def _observed_holder(self) -> str:
        return str((self._observed_spec or {}).get("holderIdentity") or "")

    def _observed_duration(self) -> float:
        value = (self._observed_spec or {}).get("leaseDurationSeconds")
        return float(value) if value is not None else self.config.lease_duration

    def _lease_valid(self, now: float) -> bool:
        return self._observed_time + self._observed_duration() > now

    def _new_spec(self, transitions: int, acquire_time: str | None) -> dict[str, Any]:
        now = _micro_time(self._clock.wall())
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": round(self.config.lease_duration),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _lease_body(self, spec: dict[str, Any], rv: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.config.name, "namespace": self.config.namespace}
        if rv:
            meta["resourceVersion"] = rv
        return {"apiVersion": LEASES.api_version, "kind": LEASES.kind, "metadata": meta, "spec": spec}

    def _observe(self, lease: dict[str, Any], when: float) -> None:
        self._observed_spec = dict(lease.get("spec") or {})
        self._observed_rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        self._observed_time = when
        holder = self._observed_holder()
        if holder != self._reported_leader:
            self._reported_leader = holder
            if holder and self._on_new_leader is not None:
                try:
                    self._on_new_leader(holder)
                except Exception:
                    log.exception("on_new_leader failed")

    async def _try_acquire_or_renew(self, bound: float) -> bool:
        me = self.config.identity
        spec = self._observed_spec or {}
        transitions = int(spec.get("leaseTransitions") or 0)

        # Fast path: we hold a lease that is still valid by our clock; renew without a GET.
        start = self._clock.monotonic()
        if self._observed_holder() == me and self._lease_valid(start):
            body = self._lease_body(self._new_spec(transitions, spec.get("acquireTime")), self._observed_rv)
            try:
                updated = await self._client.request("PUT", self._path, body=body, timeout=bound)
            except ApiError as exc:
                log.info("%s: fast-path renew failed (%s); re-reading the lease", me, exc.status)
            else:
                self._observe(updated, start)
                return True

        try:
            current = await self._client.request("GET", self._path, timeout=bound)
        except ApiError as exc:
            if exc.status != 404:
                raise
            start = self._clock.monotonic()
            try:
                created = await self._client.request(
                    "POST", self._collection, body=self._lease_body(self._new_spec(0, None), None),
                    timeout=bound,
                )
            except ApiError as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            self._observe(created, start)
            return True

        now = self._clock.monotonic()
        current_spec = current.get("spec") or {}
        current_rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
        if current_spec != self._observed_spec or current_rv != self._observed_rv:
            self._observe(current, now)
        holder = self._observed_holder()
        if holder and holder != me and self._lease_valid(now):
            return False

        transitions = int(current_spec.get("leaseTransitions") or 0)
        if holder == me:
            new_spec = self._new_spec(transitions, current_spec.get("acquireTime"))
        else:
            new_spec = self._new_spec(transitions + 1, None)
        start = self._clock.monotonic()
        try:
            updated = await self._client.request(
                "PUT", self._path, body=self._lease_body(new_spec, current_rv), timeout=bound
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        self._observe(updated, start)
        return True

    async def _release(self) -> None:
        """Hand the lease back so a standby need not wait for it to expire.

        Read first: our resourceVersion may be stale (a renew whose answer we never got, someone
        labelling the Lease), and a 409 here would cost the standby a whole lease duration. Written
        only while the record still names us.
        """
        if self._observed_holder() != self.config.identity:
            return
        bound = self.config.renew_deadline
        try:
            async with asyncio.timeout(bound):
                current = await self._client.request("GET", self._path, timeout=bound)
                spec = current.get("spec") or {}
                if spec.get("holderIdentity") != self.config.identity:
                    log.info("%s: lease now held by %r; nothing to release", self.config.identity,
                             spec.get("holderIdentity"))
                    return
                rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
                now = _micro_time(self._clock.wall())
                released = {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0),
                }
                updated = await self._client.request(
                    "PUT", self._path, body=self._lease_body(released, rv), timeout=bound
                )
        except (TimeoutError, aiohttp.ClientError, ConnectionError, ApiError) as exc:
            log.warning("%s: releasing the lease failed: %r", self.config.identity, exc)
            return
        self._observe(updated, self._clock.monotonic())
        log.info("%s released lease %s/%s", self.config.identity, self.config.namespace, self.config.name)
