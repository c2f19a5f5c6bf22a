"""Reflector + informer: list and watch one resource into a Store, and call handlers.

The semantics follow client-go's reflector:

- **Initial state is streamed.** Where the server supports it, the informer uses the watch-list protocol: one
  watch with ``sendInitialEvents=true`` sends every current object as an ADDED event, then a bookmark
  annotated ``k8s.io/initial-events-end``, then carries on as an ordinary watch. Each object goes into the
  store as it arrives, so the whole list is never held as one response. Where the server refuses it, the
  informer falls back to LIST pages (``limit``) applied page by page, then a watch.
- **resourceVersions.** The first LIST is consistent (resourceVersion ""). The watch resumes from the last
  seen resourceVersion, which bookmarks advance. A watch that ends with 410 (Expired) relists *at that last
  resourceVersion* (data at least as fresh as what we saw, served from the watch cache); only when that
  relist is refused too (410, or "too large") does the informer fall back to a consistent read
  (resourceVersion ""). An expired continue token mid-list is answered, as client-go's pager does, with one
  unpaginated consistent LIST.
- **Relists reconcile in place**: objects that changed emit updates as they arrive, objects that are gone
  emit deletes at the end; objects that did not change emit nothing.
- **Failures back off** 0.8 s -> 30 s (jittered): transport errors, 429s, 5xx and list timeouts alike. A
  watch that went silent past the read timeout is restarted at once from the last resourceVersion.
- **Field selectors with a client-side twin.** ``keep`` is the predicate the field selector stands for. It is
  applied to every object (an object failing it leaves the cache exactly as if the server had sent DELETED),
  so when the server does not support the field selector the informer watches everything and filters itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
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
Keep = Callable[[Obj], bool]
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
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True)
class ListSettings:
    """How the initial state is read. The defaults are sized for 100,000 Services on a loaded API server."""

    # Use the watch-list protocol when the server accepts it (falls back to LIST pages for good if not).
    watch_list: bool = True
    # Objects per LIST page: 500 Services are ~0.7 MB of JSON, parsed in a few ms.
    page_size: int = 500
    # Bound on one page. A page costs the server about the same whatever the collection size.
    page_timeout: float = 60.0
    # Bound on an unpaginated LIST (only after an expired continue token): 100,000 Services are ~150 MB of
    # JSON; at a pessimistic 1 MB/s from a loaded API server that is 150 s.
    full_list_timeout: float = 300.0


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


class ListTimeout(Exception):
    """A LIST page (or the initial events of a watch-list) took longer than its bound."""


class InitialEventsIncomplete(Exception):
    """A watch-list stream ended before the bookmark that marks the end of the initial events."""


@dataclass(frozen=True)
class Handlers:
    on_add: AddHandler | None
    on_update: UpdateHandler | None
    on_delete: DeleteHandler | None


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _expired(exc: ApiError) -> bool:
    """410, or the server not having reached the resourceVersion yet (client-go treats both the same)."""
    if exc.status == 410:
        return True
    causes = ((exc.body.get("details") or {}).get("causes")) or []
    return any(isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge" for c in causes)


def _field_selector_refused(exc: ApiError) -> bool:
    return exc.status == 400 and "field label not supported" in exc.message


def _watch_list_refused(exc: ApiError) -> bool:
    # Servers without the WatchList feature answer 422 Invalid ("sendInitialEvents is forbidden ...");
    # older ones 400 for the unknown combination of parameters.
    return exc.status in (400, 422) and not _field_selector_refused(exc)


class Informer:
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        transform: Transform | None = None,
        clock: Clock | None = None,
        settings: ListSettings | None = None,
        label_selector: str | None = None,
        on_restart: Callable[[str], None] | None = None,
        namespace: str | None = None,
        field_selector: str | None = None,
        keep: Keep | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        optional: bool = False,
    ) -> None:
        self.client = client
        # optional: a resource whose CRD may not be installed yet (an upgrade that did not apply the new
        # CRD: `helm upgrade` never installs CRDs). Not served counts as synced and empty, and is retried,
        # instead of a cache that never syncs and a leader that never serves.
        self._optional = optional
        self.absent = False
        self.resource = resource
        self.store = Store()
        self._transform = transform or default_transform
        self._clock = clock or RealClock()
        self._settings = settings or ListSettings()
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._keep = keep
        self._namespace = namespace
        self._on_restart = on_restart
        self._read_timeout = read_timeout
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff(clock=self._clock, rng=self._rng)
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self._last_rv = ""
        # After a relist at our last resourceVersion was refused, the watch cache cannot serve it: read
        # consistently (resourceVersion "") instead.
        self._last_rv_unavailable = False
        self._use_watch_list = self._settings.watch_list
        self._need_list = True
        # Keys seen since the current (re)list started; None while no list is in progress.
        self._listing: set[str] | None = None
        # Set on every resourceVersion advance; wakes wait_caught_up.
        self._rv_advanced = asyncio.Event()
        # time.monotonic_ns() when the consistent read in progress was requested (None: the (re)list in
        # progress is not a consistent read), and the same for the newest one the store has fully taken in.
        self._consistent_requested: int | None = None
        self._consistent_as_of: int | None = None

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

    @property
    def field_selector(self) -> str | None:
        """The field selector sent to the server; None once the server refused it (``keep`` filters then)."""
        return self._field_selector

    @property
    def uses_watch_list(self) -> bool:
        return self._use_watch_list

    async def wait_caught_up(self, rv: str, timeout: float | None) -> bool:  # noqa: ASYNC109
        """True once the store reflects resourceVersion ``rv`` or later; False after ``timeout`` seconds
        of the informer's clock (None: no limit).

        Kubernetes calls resourceVersions opaque, but etcd's are revisions, compared as integers here
        (as the watch cache itself does); an RV that is not an integer never counts as caught up. A
        quiet resource's RV moves only with bookmarks (about once a minute), so a caller that cannot
        wait that long relists instead (``request_consistent_relist``).
        """
        try:
            target = int(rv)
        except ValueError:
            return False

        async def reached() -> None:
            while True:
                self._rv_advanced.clear()
                if not self._need_list and self._synced.is_set():
                    with contextlib.suppress(ValueError):
                        if int(self._last_rv) >= target:
                            return
                await self._rv_advanced.wait()

        if timeout is None:
            await reached()
            return True
        waiter = asyncio.ensure_future(reached())
        timer = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not waiter.done():
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)
        return waiter.done() and not waiter.cancelled()

    def consistent_as_of(self) -> int | None:
        """The ``time.monotonic_ns()`` at which the newest consistent read (resourceVersion "") that the
        store has fully taken in was requested: the store reflects every write committed before then
        (later events and NotOlderThan relists only move it forward). None before such a read and while
        a (re)list is in progress.

        Real time, not the injected clock: it orders this process's own actions (a write answered,
        then a read sent), which linearizable reads respect.
        """
        if self._need_list or not self._synced.is_set():
            return None
        return self._consistent_as_of

    def request_consistent_relist(self) -> None:
        """Make the next ``run`` start with a consistent (quorum) list. It takes effect when the caller
        cancels the running ``run`` task and starts a new one (a watch that went silent is not waited out)."""
        self._last_rv_unavailable = True
        self._need_list = True

    async def run(self) -> None:
        """List and watch until cancelled."""
        while True:
            try:
                if self._need_list and self._use_watch_list:
                    quick = await self._watch(initial=True)
                else:
                    if self._need_list:
                        await self._list()
                    quick = await self._watch(initial=False)
                self._restarted("closed")
                if not quick:
                    continue
                # A watch that ends at once and empty, again and again, would spin: slow it down.
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                if self._on_expired():
                    continue
            except InitialEventsIncomplete as exc:
                log.info("%s: %s", self.resource.plural, exc)
                self._restarted("error")
            except WatchFailed as exc:
                log.warning("%s watch failed: %s; relisting", self.resource.plural, exc)
                self._need_list = True
                self._restarted("error")
            except ListTimeout as exc:
                log.warning("%s: %s; retrying with backoff", self.resource.plural, exc)
                self._restarted("list_timeout")
            except ApiError as exc:
                if self._refused_option(exc):
                    continue
                if _expired(exc):
                    if self._on_expired():
                        continue
                elif exc.status == 429:
                    self._restarted("throttled")
                elif exc.status >= 500:
                    self._restarted("server_error")
                elif exc.status == 404 and self._optional:
                    self._not_served(exc)
                else:
                    log.warning("%s list/watch: %s%s", self.resource.plural, exc, _hint(self.resource, exc))
                    self._need_list = True
                    self._restarted("error")
            except (TimeoutError, aiohttp.ServerTimeoutError):
                # Read timeout: the connection went silent. Resume from the last resourceVersion.
                log.info(
                    "%s watch went silent for %.0fs; restarting", self.resource.plural, self._read_timeout
                )
                self._restarted("timeout")
                if self._need_list:
                    await self._backoff.sleep()
                continue
            except (aiohttp.ClientError, ConnectionError, orjson.JSONDecodeError) as exc:
                # ClientPayloadError (cut stream) lands here too: an ordinary disconnect.
                log.info("%s watch disconnected: %r", self.resource.plural, exc)
                self._restarted("disconnect")
            finally:
                self._listing = None
            await self._backoff.sleep()

    # -- internals ----------------------------------------------------------------------------

    def _not_served(self, exc: ApiError) -> None:
        """An optional resource the API server does not serve: empty (what was cached is deleted) and
        synced, so nothing waits on it; listed again after the backoff."""
        if not self.absent:
            log.warning(
                "%s are not served (%s): treated as none until they are; retrying%s",
                self.resource.plural, exc, _hint(self.resource, exc),
            )
        self.absent = True
        self._need_list = True
        for key in self.store:
            gone = self.store.delete(key)
            if gone is not None:
                self._emit_delete(gone)
        self._synced.set()
        self._restarted("not_served")

    def _restarted(self, reason: str) -> None:
        if self._on_restart is not None:
            try:
                self._on_restart(reason)
            except Exception:
                log.exception("on_restart hook failed")

    def _on_expired(self) -> bool:
        """Our resourceVersion is gone; True when the next attempt should follow at once."""
        self._restarted("expired")
        if self._need_list:
            # Even a (re)list at our last resourceVersion was refused: read consistently, right away.
            retry_now = not self._last_rv_unavailable
            self._last_rv_unavailable = True
            return retry_now
        # A watch expired: relist, first at the last resourceVersion we saw (client-go does the same).
        self._need_list = True
        return False

    def _refused_option(self, exc: ApiError) -> bool:
        """The server does not support the field selector or watch-list: drop it and retry at once."""
        if self._field_selector is not None and _field_selector_refused(exc):
            log.warning(
                "%s: the API server does not support the field selector %r (%s); watching all and "
                "filtering in the controller",
                self.resource.plural, self._field_selector, exc.message,
            )  # fmt: skip
            self._field_selector = None
            self._need_list = True
            return True
        if self._need_list and self._use_watch_list and _watch_list_refused(exc):
            log.info("%s: watch-list refused (%s); using LIST pages", self.resource.plural, exc)
            self._use_watch_list = False
            return True
        return False

    def _path(self) -> str:
        return self.resource.path(namespace=self._namespace)

    def _selectors(self) -> dict[str, QueryValue]:
        return {"labelSelector": self._label_selector, "fieldSelector": self._field_selector}

    def _relist_rv(self) -> str:
        """resourceVersion for a LIST: the last seen (NotOlderThan), else "" (consistent).

        Never "0" (client-go's first choice): kube-apiserver 1.36 answers resourceVersion=0 from its watch
        cache ignoring ``limit``, i.e. the whole collection as one response, where "" and NotOlderThan page
        (checked on 1.36.3, with and without the watch cache).
        """
        if self._last_rv_unavailable:
            return ""
        return self._last_rv

    def _set_rv(self, rv: str) -> None:
        """Every advance of the resourceVersion goes through here."""
        if rv:
            self._last_rv = rv
            self._rv_advanced.set()

    async def _list(self) -> None:
        """LIST in pages, applying each page to the store as it arrives."""
        rv = self._relist_rv()
        self._listing = set()
        cont: str | None = None
        while True:
            query: dict[str, QueryValue] = {"limit": self._settings.page_size, **self._selectors()}
            if cont:
                query["continue"] = cont
            else:
                query["resourceVersion"] = rv or None
                if rv:
                    query["resourceVersionMatch"] = "NotOlderThan"
                self._consistent_requested = None if rv else time.monotonic_ns()
            try:
                page = await self._get_list(query, self._settings.page_timeout)
            except ApiError as exc:
                if not (cont and exc.status == 410):
                    raise
                # The continue token expired mid-list (compaction): like client-go's pager, one
                # unpaginated consistent LIST. It is held whole; it only happens when etcd compacts
                # during a paged list.
                log.info("%s: continue token expired; listing unpaginated", self.resource.plural)
                self._listing = set()
                page = await self._get_list(self._selectors(), self._settings.full_list_timeout)
                cont = None
            for raw in page.get("items") or []:
                raw.setdefault("kind", self.resource.kind)
                raw.setdefault("apiVersion", self.resource.api_version)
                self._apply_listed(raw)
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                self._finish_list(str(meta.get("resourceVersion") or ""))
                return

    async def _get_list(self, query: dict[str, QueryValue], timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        try:
            return await self.client.request("GET", self._path(), query=query, timeout=timeout)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise ListTimeout(f"LIST did not answer within {timeout:g}s") from exc

    def _apply_listed(self, raw: Obj) -> None:
        """One object of a (re)list or of a watch-list's initial events."""
        assert self._listing is not None
        if self._keep is not None and not self._keep(raw):
            return  # not ours: if it was cached, it is deleted when the list ends
        obj = self._transform(raw)
        key = object_key(obj)
        self._listing.add(key)
        old = self.store.get(key)
        if old is not None and _rv(old) == _rv(obj):
            return
        self.store.put(obj)
        if old is None:
            self._emit_add(obj)
        else:
            self._emit_update(old, obj)

    def _finish_list(self, rv: str) -> None:
        seen, self._listing = self._listing or set(), None
        for key in self.store:
            if key not in seen:
                gone = self.store.delete(key)
                if gone is not None:
                    self._emit_delete(gone)
        self._set_rv(rv)
        if self._consistent_requested is not None:
            self._consistent_as_of = max(self._consistent_as_of or 0, self._consistent_requested)
            self._consistent_requested = None
        self._last_rv_unavailable = False
        self._need_list = False
        if self.absent:
            log.info("%s are served now", self.resource.plural)
            self.absent = False
        self._synced.set()
        log.debug("%s listed %d objects at rv %s", self.resource.plural, len(seen), rv)

    async def _watch(self, *, initial: bool) -> bool:
        """Watch until the server ends the stream; True when it ended suspiciously fast.

        With ``initial``, a watch-list: the server first sends the current state, ended by a bookmark.
        """
        timeout = self._rng.randrange(WATCH_TIMEOUT_MIN, WATCH_TIMEOUT_MAX)
        query: dict[str, QueryValue] = {
            "watch": True,
            "allowWatchBookmarks": True,
            "resourceVersion": self._last_rv,
            "timeoutSeconds": timeout,
            **self._selectors(),
        }
        if initial:
            query["sendInitialEvents"] = True
            query["resourceVersionMatch"] = "NotOlderThan"
            query["resourceVersion"] = "" if self._last_rv_unavailable else self._last_rv
            self._listing = set()
            self._consistent_requested = None if query["resourceVersion"] else time.monotonic_ns()
        lines = self.client.stream_lines(self._path(), query=query, read_timeout=self._read_timeout)
        events = 0
        started = self._clock.monotonic()
        async with contextlib.aclosing(lines):
            async for line in lines:
                self._handle_event(orjson.loads(line))
                events += 1
        if initial and self._need_list:
            if events:
                # Objects but no end bookmark: the server ignores sendInitialEvents. List instead, for good.
                self._use_watch_list = False
            raise InitialEventsIncomplete("watch-list stream ended before the initial-events-end bookmark")
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
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if self._listing is not None and annotations.get(INITIAL_EVENTS_END) == "true":
                self._finish_list(rv)
            else:
                self._set_rv(rv)
            return
        if self._listing is not None:
            # The initial events of a watch-list: the current state, as ADDED events.
            if kind in ("ADDED", "MODIFIED"):
                self._apply_listed(obj)
            return
        if kind in ("ADDED", "MODIFIED"):
            if self._keep is not None and not self._keep(obj):
                self._drop(object_key(obj))
            else:
                obj = self._transform(obj)
                old = self.store.put(obj)
                if old is None:
                    self._emit_add(obj)
                else:
                    self._emit_update(old, obj)
        elif kind == "DELETED":
            self._drop(object_key(obj))
        else:
            log.warning("%s watch: unknown event type %r", self.resource.plural, kind)
        self._set_rv(rv)

    def _drop(self, key: str) -> None:
        gone = self.store.delete(key)
        if gone is not None:
            self._emit_delete(gone)

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
