"""A tiny scriptable API server for faults a real kube-apiserver cannot produce on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

WatchScript = Callable[[web.Request, web.StreamResponse], Awaitable[None]]
# An int in place of a script answers the watch request with that HTTP status instead of a stream.
ListScript = Callable[[web.Request], dict[str, Any]]


def service(name: str, rv: int, namespace: str = "ns", **extra: Any) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "resourceVersion": str(rv),
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    }
    spec = {"type": "LoadBalancer", **extra}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def event_line(type_: str, obj: dict[str, Any]) -> bytes:
    return orjson.dumps({"type": type_, "object": obj}) + b"\n"


def bookmark(rv: int, *, initial_events_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_events_end:  # ends a watch-list's initial events
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return event_line("BOOKMARK", {"kind": "Service", "apiVersion": "v1", "metadata": meta})


def expired() -> bytes:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
              "message": "too old resource version"}
    return event_line("ERROR", status)


class FakeApiServer:
    """Serves /api/v1/services: LIST answers come from ``lists``, WATCH sessions from ``watches``.

    Each is consumed in order; when a queue is exhausted, lists repeat the last answer and
    watches hang (like an idle healthy watch).
    """

    def __init__(self) -> None:
        self.lists: list[ListScript] = []
        self.watches: list[WatchScript | int] = []
        self.list_queries: list[dict[str, str]] = []
        self.watch_queries: list[dict[str, str]] = []
        self.watch_started = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/services", self._services)
        # Watch handlers sleep for an hour; do not wait for them at shutdown.
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _services(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if query.get("watch") == "true":
            self.watch_queries.append(query)
            self.watch_started.set()
            index = len(self.watch_queries) - 1
            script = self.watches[index] if index < len(self.watches) else None
            if isinstance(script, int):
                status = {"kind": "Status", "code": script, "reason": "TooManyRequests",
                          "message": "slow down"}
                return web.json_response(status, status=script)
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            if script is not None:
                await script(request, resp)
            else:
                await asyncio.sleep(3600)
            return resp
        self.list_queries.append(query)
        index = min(len(self.list_queries) - 1, len(self.lists) - 1)
        return web.json_response(self.lists[index](request))


def list_of(rv: int, *items: dict[str, Any], cont: str | None = None) -> ListScript:
    def answer(request: web.Request) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
        return {"kind": "ServiceList", "apiVersion": "v1", "metadata": meta, "items": list(items)}

    return answer


def cut_connection(request: web.Request) -> None:
    """Drop the TCP connection without finishing the chunked body: the client sees a broken payload."""
    transport = request.transport
    assert transport is not None
    transport.close()
