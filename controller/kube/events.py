"""core/v1 Events on the objects the controller acts on.

``record`` never blocks a reconcile: it only enqueues, and drops (with a log line) when the
bounded queue is full. A background task writes the events, folding repeats of the same
(object, type, reason, message) into a count bump, and rate-limits each object so a hot loop
cannot flood the API server. Every write first passes ``fence`` (the leadership gate), which also
bounds how long it may take; a refused Event is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .client import ApiError, KubeClient
from .clock import Clock, RealClock
from .leaderelection import Fenced
from .resources import EVENTS

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            api_version=str(obj.get("apiVersion") or ""),
            kind=str(obj.get("kind") or ""),
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    def as_dict(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.uid:
            out["uid"] = self.uid
        if self.resource_version:
            out["resourceVersion"] = self.resource_version
        return out

    @property
    def identity(self) -> str:
        return self.uid or f"{self.kind}/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class _Pending:
    ref: ObjectRef
    type_: str
    reason: str
    message: str
    at: float


@dataclass
class _Seen:
    namespace: str
    name: str
    count: int


_last_stamp: tuple[int, str] = (-1, "")


def rfc3339(epoch: float) -> str:
    """Kubernetes' timestamp format, to the second. The last second's text is kept: every assignment
    stamps an Event and a condition, mostly within the same second, and strftime is not cheap."""
    global _last_stamp
    second = int(epoch)
    if _last_stamp[0] != second:
        _last_stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _last_stamp[1]


class _Bucket:
    def __init__(self, burst: int, refill_every: float, now: float) -> None:
        self.tokens = float(burst)
        self.burst = burst
        self.refill_every = refill_every
        self.last = now

    def take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) / self.refill_every)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


_STOP = object()

# Given the timeout a write would use, returns the time it may take; raises Fenced to refuse it.
WriteFence = Callable[[float], float]


class EventRecorder:
    def __init__(
        self,
        client: KubeClient,
        *,
        component: str = "stablelb-controller",
        clock: Clock | None = None,
        instance: str | None = None,
        queue_size: int = 4000,
        senders: int = 4,
        burst: int = 25,
        refill_every: float = 300.0,
        cache_size: int = 4096,
        timeout: float = 10.0,
        fence: WriteFence | None = None,
    ) -> None:
        self._client = client
        self._fence = fence
        self.component = component
        self.instance = instance or socket.gethostname()
        self._clock = clock or RealClock()
        # Events of one object always go through the same sender, which keeps their order and the
        # count-bump deduplication exact while several objects' Events are written concurrently.
        self._queues: list[asyncio.Queue[_Pending | object]] = [
            asyncio.Queue(maxsize=max(1, queue_size // senders)) for _ in range(max(1, senders))
        ]
        self._burst = burst
        self._refill_every = refill_every
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._cache_size = cache_size
        self._timeout = timeout
        self._names = itertools.count()
        self._closed = False
        self._running = False
        self._finished = asyncio.Event()
        self.dropped = 0
        self.sender_restarts = 0

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self._closed:
            return
        item = _Pending(ObjectRef.of(obj), type_, reason, message[:MAX_MESSAGE], self._clock.wall())
        try:
            self._queue_for(item.ref).put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("event queue full; dropped %s %s on %s/%s", type_, reason,
                        item.ref.namespace, item.ref.name)

    def _queue_for(self, ref: ObjectRef) -> asyncio.Queue[_Pending | object]:
        return self._queues[zlib.crc32(ref.identity.encode()) % len(self._queues)]

    async def run(self) -> None:
        self._running = True
        try:
            await asyncio.gather(*(self._supervise(i, queue) for i, queue in enumerate(self._queues)))
        finally:
            self._running = False
            self._finished.set()

    def alive(self) -> bool:
        """False once ``run`` ended without ``close`` having asked it to (for liveness)."""
        return self._closed or not self._finished.is_set()

    async def _supervise(self, index: int, queue: asyncio.Queue[_Pending | object]) -> None:
        """Restart a sender that died of an unexpected error: otherwise its shard's Events would be
        dropped silently from then on. The item it failed on is lost, not retried (no crash loop)."""
        while True:
            try:
                await self._send_from(queue)
                return
            except Exception:
                self.sender_restarts += 1
                log.exception("event sender %d failed; restarting it", index)

    async def _send_from(self, queue: asyncio.Queue[_Pending | object]) -> None:
        while True:
            item = await queue.get()
            if item is _STOP or not isinstance(item, _Pending):
                return
            try:
                await self._emit(item)
            except Fenced as exc:
                log.debug("event %s on %s/%s not written: %s", item.reason, item.ref.namespace,
                          item.ref.name, exc)
            except (TimeoutError, aiohttp.ClientError, ConnectionError, ApiError) as exc:
                log.warning("writing event %s on %s/%s failed: %r", item.reason,
                            item.ref.namespace, item.ref.name, exc)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Stop accepting events and let ``run`` write what is queued, for at most ``timeout``."""
        if self._closed:
            return
        self._closed = True
        for queue in self._queues:
            while True:
                try:
                    queue.put_nowait(_STOP)
                    break
                except asyncio.QueueFull:
                    queue.get_nowait()
                    self.dropped += 1
        await asyncio.sleep(0)  # a run() task created just before close() gets to start
        if not self._running and not self._finished.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._finished.wait()

    def _allowed(self, ref: ObjectRef) -> bool:
        now = self._clock.monotonic()
        bucket = self._buckets.get(ref.identity)
        if bucket is None:
            bucket = _Bucket(self._burst, self._refill_every, now)
            self._buckets[ref.identity] = bucket
            if len(self._buckets) > self._cache_size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ref.identity)
        return bucket.take(now)

    def _write_timeout(self) -> float:
        return self._timeout if self._fence is None else self._fence(self._timeout)

    async def _emit(self, item: _Pending) -> None:
        if not self._allowed(item.ref):
            log.debug("event rate limit: dropped %s on %s/%s", item.reason, item.ref.namespace,
                      item.ref.name)
            return
        key = (item.ref.identity, item.type_, item.reason, item.message)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            patch = {"count": seen.count + 1, "lastTimestamp": rfc3339(item.at)}
            try:
                await self._client.request(
                    "PATCH", EVENTS.path(namespace=seen.namespace, name=seen.name), body=patch,
                    content_type="application/merge-patch+json", timeout=self._write_timeout(),
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                del self._seen[key]
            else:
                seen.count += 1
                return
        namespace = item.ref.namespace or "default"
        name = f"{item.ref.name}.{int(item.at * 1e9):x}{next(self._names):x}"
        stamp = rfc3339(item.at)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": item.ref.as_dict(),
            "type": item.type_,
            "reason": item.reason,
            "message": item.message,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
        }
        await self._client.request("POST", EVENTS.path(namespace=namespace), body=body,
                                   timeout=self._write_timeout())
        self._seen[key] = _Seen(namespace, name, 1)
        if len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
