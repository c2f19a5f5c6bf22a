"""Reflector + informer: LIST then WATCH one resource into a Store, and call handlers.

The semantics follow client-go's reflector: the first LIST reads from the watch cache
(resourceVersion "0") in pages; the WATCH resumes from the last seen resourceVersion, which
bookmarks advance; a 410 (Expired/Gone) means our resourceVersion is compacted away, so we relist
(consistently, resourceVersion "") and reconcile the cache against the fresh list; a normally
closed watch resumes without relisting; transport errors and 429s back off 0.8 s -> 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .backoff import Backoff
from .client import ApiError, KubeClient, QueryValue
from .clock import Clock, RealClock
from .resources import Resource
from .store import Obj, Store, object_key

log = logging.getLogger(__name__)

Transform = Callable[[Obj], Obj]
AddHandler = Callable[[Obj], None]
UpdateHandler = Callable[[Obj, Obj], None]
DeleteHandler = Callable[[Obj], None]

WATCH_TIMEOUT_MIN = 300
WATCH_TIMEOUT_MAX = 600
# The API server's watch cache sends a bookmark about once a minute to a watcher that asked for
# them, so two minutes of silence means the connection is dead, not idle. Restarting a watch from
# the last resourceVersion is cheap, so erring on the short side costs little.
DEFAULT_READ_TIMEOUT = 120.0

# A server-closed watch that delivered nothing within this long is treated like a failure (backoff).
QUICK_CLOSE = 1.0

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def default_transform(obj: Obj) -> Obj:
    """Drop what no controller reads and what dominates the size of cached objects."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            del annotations[LAST_APPLIED]
    return obj


def _hint(resource: Resource, exc: ApiError) -> str:
    """What an operator can do about an error that retrying alone will not fix."""
    if exc.status == 404:
        return (
            f" — the API server does not serve {resource.api_version} {resource.plural}; "
            "install its CustomResourceDefinition (for stablelb: kubectl apply -k manifests/)"
        )
    if exc.status in (401, 403):
        return f" — check the credentials and RBAC of this identity for list/watch on {resource.plural}"
    return ""


class WatchExpired(Exception):
    """The watch's resourceVersion is older than what the server still has (HTTP 410)."""


class WatchFailed(Exception):
    """The server ended the watch with an ERROR event other than 410; relist to be safe."""


@dataclass(frozen=True)
class Handlers:
    on_add: AddHandler | None
    on_update: UpdateHandler | None
    on_delete: DeleteHandler | None


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        transform: Transform | None = None,
        clock: Clock | None = None,
        page_size: int = 500,
        label_selector: str | None = None,
        on_restart: Callable[[str], None] | None = None,
        namespace: str | None = None,
        field_selector: str | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.store = Store()
        self._transform = transform or default_transform
        self._clock = clock or RealClock()
        self._page_size = page_size
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._namespace = namespace
        self._on_restart = on_restart
        self._read_timeout = read_timeout
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff(clock=self._clock, rng=self._rng)
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self._last_rv = ""
        # After a 410 the watch cache may be behind what we already saw: list from etcd instead.
        self._last_rv_unavailable = False

    # -- public -------------------------------------------------------------------------------

    def add_handlers(
        self,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """Register callbacks, called synchronously after the store changed.

        A handler registered late first sees every cached object as an add.
        """
        handlers = Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if on_add is not None:
            for obj in self.store.list():
                self._call(on_add, obj)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    @property
    def last_resource_version(self) -> str:
        return self._last_rv

    async def run(self) -> None:
        """List and watch until cancelled."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                quick = await self._watch_once()
                self._restarted("closed")
                if not quick:
                    continue
                # A watch that ends at once and empty, again and again, would spin: slow it down.
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                self._last_rv_unavailable = True
                need_list = True
                self._restarted("expired")
            except WatchFailed as exc:
                log.warning("%s watch failed: %s; relisting", self.resource.plural, exc)
                need_list = True
                self._restarted("error")
            except ApiError as exc:
                if exc.status == 410:
                    self._last_rv_unavailable = True
                    need_list = True
                    self._restarted("expired")
                elif exc.status == 429:
                    self._restarted("throttled")
                elif exc.status >= 500:
                    self._restarted("server_error")
                else:
                    log.warning("%s list/watch: %s%s", self.resource.plural, exc, _hint(self.resource, exc))
                    need_list = True
                    self._restarted("error")
            except (TimeoutError, aiohttp.ServerTimeoutError):
                # Read timeout: the connection went silent. Resume from the last resourceVersion.
                log.info(
                    "%s watch went silent for %.0fs; restarting", self.resource.plural, self._read_timeout
                )
                self._restarted("timeout")
                continue
            except (aiohttp.ClientError, ConnectionError, orjson.JSONDecodeError) as exc:
                # ClientPayloadError (cut stream) lands here too: an ordinary disconnect.
                log.info("%s watch disconnected: %r", self.resource.plural, exc)
                self._restarted("disconnect")
            await self._backoff.sleep()

    # -- internals ----------------------------------------------------------------------------

    def _restarted(self, reason: str) -> None:
        if self._on_restart is not None:
            try:
                self._on_restart(reason)
            except Exception:
                log.exception("on_restart hook failed")

    def _path(self) -> str:
        return self.resource.path(namespace=self._namespace)

    def _selectors(self) -> dict[str, QueryValue]:
        return {"labelSelector": self._label_selector, "fieldSelector": self._field_selector}

    def _relist_rv(self) -> str:
        if self._last_rv_unavailable:
            return ""
        return self._last_rv or "0"

    async def _list(self) -> tuple[dict[str, Obj], str]:
        items: dict[str, Obj] = {}
        rv = self._relist_rv()
        cont: str | None = None
        while True:
            query: dict[str, QueryValue] = {"limit": self._page_size, **self._selectors()}
            if cont:
                query["continue"] = cont
            else:
                query["resourceVersion"] = rv or None
                if rv and rv != "0":
                    query["resourceVersionMatch"] = "NotOlderThan"
            try:
                page = await self.client.request("GET", self._path(), query=query)
            except ApiError as exc:
                if exc.status == 410 and cont:
                    # The continue token expired mid-list: start over with a consistent list.
                    items.clear()
                    cont, rv = None, ""
                    continue
                raise
            for raw in page.get("items") or []:
                raw.setdefault("kind", self.resource.kind)
                raw.setdefault("apiVersion", self.resource.api_version)
                obj = self._transform(raw)
                items[object_key(obj)] = obj
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    async def _list_and_replace(self) -> None:
        items, rv = await self._list()
        self._replace(items)
        self._last_rv = rv
        self._last_rv_unavailable = False
        self._synced.set()
        log.debug("%s listed %d objects at rv %s", self.resource.plural, len(items), rv)

    def _replace(self, items: dict[str, Obj]) -> None:
        for key in self.store:
            if key not in items:
                gone = self.store.delete(key)
                if gone is not None:
                    self._emit_delete(gone)
        for key, obj in items.items():
            old = self.store.get(key)
            if old is not None and _rv(old) == _rv(obj):
                continue
            self.store.put(obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)

    async def _watch_once(self) -> bool:
        """Watch until the server ends the stream; True when it ended suspiciously fast."""
        timeout = self._rng.randrange(WATCH_TIMEOUT_MIN, WATCH_TIMEOUT_MAX)
        query: dict[str, QueryValue] = {
            "watch": True,
            "allowWatchBookmarks": True,
            "resourceVersion": self._last_rv,
            "timeoutSeconds": timeout,
            **self._selectors(),
        }
        lines = self.client.stream_lines(self._path(), query=query, read_timeout=self._read_timeout)
        events = 0
        started = self._clock.monotonic()
        async with contextlib.aclosing(lines):
            async for line in lines:
                self._handle_event(orjson.loads(line))
                events += 1
        return events == 0 and self._clock.monotonic() - started < QUICK_CLOSE

    def _handle_event(self, event: Any) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise WatchExpired(obj.get("message", ""))
            raise WatchFailed(f"{code} {obj.get('reason')}: {obj.get('message')}")
        rv = _rv(obj)
        if kind == "BOOKMARK":
            if rv:
                self._last_rv = rv
            return
        obj = self._transform(obj)
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            old = self.store.put(obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        elif kind == "DELETED":
            if self.store.delete(key) is not None:
                self._emit_delete(obj)
        else:
            log.warning("%s watch: unknown event type %r", self.resource.plural, kind)
        if rv:
            self._last_rv = rv

    def _emit_add(self, obj: Obj) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _emit_update(self, old: Obj, new: Obj) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _emit_delete(self, obj: Obj) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    def _call(self, fn: Callable[..., None], *args: Obj) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s event handler failed", self.resource.plural)
