"""A fault-injecting HTTPS proxy between one controller replica and the API server (loopback only).

The replica's kubeconfig points at the proxy, which terminates TLS with its own self-signed certificate
(the harness's kubeconfigs skip verification) and opens a fresh TLS connection upstream for every request.
Every request is sent upstream with `Connection: close`, so one client connection carries one request:
that keeps the proxy HTTP-aware with little parsing, and lets it act per request — tell a watch from a
PATCH, hold one, stall another — without touching the rest.

Faults (each returns a `Fault`; `clear()` it, or `clear_all()`):
- `stall(match)`: the response bytes of matching exchanges, open ones included, stop flowing. Nothing more
  reaches the client, not even the end of the stream, until the fault is cleared (the held bytes are
  then delivered) or the client gives up. This is a silently dead watch: no FIN, no bytes.
- `hold_requests(match, seconds)`: a matching request waits before it is sent upstream. If its client
  gives up meanwhile, it is never sent: the proxy models a slow path in which the client's abort still
  wins. (A write already on the wire cannot be recalled by any client; the fencing this proxy tests
  assumes the network delivers a request within the margin between renew deadline and lease duration.)
- `hold_responses(match, seconds)`: the request goes upstream at once (the write lands), the answer
  reaches the client late, or never if the client gives up first.
- `refuse(match)`: matching requests get their connection closed without an answer.
- `drop(match)`: closes matching open exchanges now (both sides), once.

Every exchange is recorded (`exchanges()`): the request, when it went upstream, the status, and for
answers that are JSON objects their `metadata.resourceVersion`: for a write, the revision at which it
landed, so a test can order the writes of this replica against everything else the API server holds.

The proxy runs its own event loop in a daemon thread, so a test that blocks its own loop (the harness's
synchronous REST client) never slows the replica's traffic; the control methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

T = TypeVar("T")

HEAD_LIMIT = 64 * 1024
CHUNK = 64 * 1024
CONTROL_TIMEOUT = 10.0
# Hop-by-hop headers, and Accept-Encoding: an uncompressed answer is one the proxy can read.
_DROPPED_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
    "accept-encoding",
}
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Request:
    """One HTTP request as the proxy saw it; the properties read a Kubernetes API path."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query))

    @property
    def watch(self) -> bool:
        return self.method == "GET" and self.query.get("watch", "").lower() in ("true", "1")

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS

    def _parts(self) -> list[str]:
        # /api/v1/<rest> or /apis/<group>/<version>/<rest>
        parts = [p for p in self.path.split("/") if p]
        if parts[:1] == ["api"]:
            return parts[2:]
        if parts[:1] == ["apis"]:
            return parts[3:]
        return []

    def _split(self) -> tuple[str, str, str, str]:
        """(namespace, resource, name, subresource), "" where absent."""
        rest = self._parts()
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        rest = [*rest, "", "", ""]
        return namespace, rest[0], rest[1], rest[2]

    @property
    def namespace(self) -> str:
        return self._split()[0]

    @property
    def resource(self) -> str:
        """The plural resource name ("services", "namespaces", "leases", "ippools", "events")."""
        return self._split()[1]

    @property
    def name(self) -> str:
        return self._split()[2]

    @property
    def subresource(self) -> str:
        return self._split()[3]

    def __str__(self) -> str:
        return f"{self.method} {self.target}"


Match = Callable[[Request], bool]


def watches(*resources: str) -> Match:
    """Watch requests on these resources (any resource when none are named)."""
    return lambda r: r.watch and (not resources or r.resource in resources)


def writes(*resources: str, subresource: str | None = None) -> Match:
    """POST/PUT/PATCH/DELETE on these resources (any when none are named), optionally one subresource."""
    return lambda r: (
        r.write
        and (not resources or r.resource in resources)
        and (subresource is None or r.subresource == subresource)
    )


def any_of(*matches: Match) -> Match:
    return lambda r: any(m(r) for m in matches)


@dataclass
class Exchange:
    """One request and its answer through the proxy. Snapshots returned to callers are copies."""

    id: int
    request: Request
    received: float
    forwarded: float | None = None
    status: int | None = None
    resource_version: str | None = None
    finished: float | None = None
    # open | done | abandoned (client left before it was sent) | unanswered (client left before the
    # answer reached it) | refused | dropped | failed (upstream unreachable)
    outcome: str = "open"
    faults: list[str] = field(default_factory=list)

    @property
    def landed(self) -> bool:
        """A write the API server accepted (whether or not the client ever heard of it)."""
        return self.request.write and self.status is not None and 200 <= self.status < 300


@dataclass
class Fault:
    kind: str
    match: Match
    seconds: float | None
    label: str
    hits: int = 0
    # Only these exchanges (those open when the fault began), or every matching one when None.
    only: frozenset[int] | None = None
    _proxy: FaultProxy | None = field(default=None, repr=False)

    def clear(self) -> None:
        if self._proxy is not None:
            self._proxy.clear(self)


class _Live:
    """Loop-side state of one open exchange."""

    def __init__(self, record: Exchange, client: asyncio.StreamWriter) -> None:
        self.record = record
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dropped = False

    def abort(self) -> None:
        self.dropped = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "proxy.crt", directory / "proxy.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _decode_chunked(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return bytes(out)
        size = int(data[pos:end].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def _parse_response(raw: bytes) -> tuple[int | None, str | None]:
    """(status, metadata.resourceVersion of a JSON object body) of a complete HTTP/1.1 answer."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None, None
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None, None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _decode_chunked(body)
    try:
        decoded = json.loads(body)
    except ValueError:
        return status, None
    rv = (decoded.get("metadata") or {}).get("resourceVersion") if isinstance(decoded, dict) else None
    return status, str(rv) if rv else None


async def _until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while await reader.read(CHUNK):
            pass


class FaultProxy:
    """Start with `FaultProxy.start(upstream_url)`; point a kubeconfig at `.url`; always `stop()`."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        if target.scheme != "https" or not target.hostname or not target.port:
            raise ValueError(f"upstream must be https://host:port, got {upstream!r}")
        self.upstream = upstream
        self._target = (target.hostname, target.port)
        self._workdir = Path(tempfile.mkdtemp(prefix="stablelb-faultproxy-"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self._faults: list[Fault] = []
        self._live: dict[int, _Live] = {}
        self._records: list[Exchange] = []
        self._changed: asyncio.Event | None = None
        self.port = 0

    # ----------------------------------------------------------------------------------- lifecycle

    @classmethod
    def start(cls, upstream: str) -> FaultProxy:
        proxy = cls(upstream)
        proxy._thread.start()
        try:
            proxy._call(proxy._serve())
        except BaseException:
            proxy.stop()
            raise
        return proxy

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CONTROL_TIMEOUT)
        if not self._loop.is_running():
            self._loop.close()
        for p in self._workdir.iterdir():
            p.unlink()
        self._workdir.rmdir()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Awaitable[T]) -> T:
        async def run() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=CONTROL_TIMEOUT)

    async def _serve(self) -> None:
        cert, key = _self_signed(self._workdir)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        self._upstream_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._upstream_ctx.check_hostname = False
        self._upstream_ctx.verify_mode = ssl.CERT_NONE  # loopback, the API server's self-signed cert
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=server_ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self._faults.clear()
        for live in list(self._live.values()):
            live.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # ------------------------------------------------------------------------------------ controls

    def stall(self, match: Match, label: str = "stall", *, open_only: bool = False) -> Fault:
        """`open_only`: only the matching exchanges open right now (a connection that silently died; new
        connections work), else every matching one, new ones included."""
        return self._add(Fault("stall", match, None, label), open_only=open_only)

    def hold_requests(self, match: Match, seconds: float | None = None, label: str = "hold-request") -> Fault:
        return self._add(Fault("hold_request", match, seconds, label))

    def hold_responses(
        self, match: Match, seconds: float | None = None, label: str = "hold-response"
    ) -> Fault:
        return self._add(Fault("hold_response", match, seconds, label))

    def refuse(self, match: Match, label: str = "refuse") -> Fault:
        return self._add(Fault("refuse", match, None, label))

    def drop(self, match: Match) -> int:
        """Closes every open exchange that matches; returns how many."""

        async def go() -> int:
            hit = [live for live in self._live.values() if match(live.record.request)]
            for live in hit:
                live.record.faults.append("drop")
                live.abort()
            return len(hit)

        return self._call(go())

    def clear(self, fault: Fault) -> None:
        async def go() -> None:
            if fault in self._faults:
                self._faults.remove(fault)
            self._notify()

        self._call(go())

    def clear_all(self) -> None:
        async def go() -> None:
            self._faults.clear()
            self._notify()

        self._call(go())

    def exchanges(self, match: Match | None = None) -> list[Exchange]:
        """Copies of every exchange so far (oldest first), optionally only those matching."""

        async def go() -> list[Exchange]:
            return [
                replace(r, faults=list(r.faults))
                for r in self._records
                if match is None or match(r.request)
            ]

        return self._call(go())

    def open_exchanges(self, match: Match | None = None) -> list[Exchange]:
        return [e for e in self.exchanges(match) if e.outcome == "open"]

    def _add(self, fault: Fault, *, open_only: bool = False) -> Fault:
        fault._proxy = self

        async def go() -> Fault:
            if open_only:
                fault.only = frozenset(i for i, x in self._live.items() if fault.match(x.record.request))
            self._faults.append(fault)
            self._notify()
            return fault

        return self._call(go())

    # ------------------------------------------------------------------------------ loop-side work

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    def _active(self, kind: str, live: _Live) -> list[Fault]:
        return [
            f
            for f in self._faults
            if f.kind == kind
            and f.match(live.record.request)
            and (f.only is None or live.record.id in f.only)
        ]

    def _hit(self, live: _Live, faults: list[Fault]) -> None:
        for fault in faults:
            if fault.label not in live.record.faults:
                live.record.faults.append(fault.label)
                fault.hits += 1

    async def _wait_while(
        self, live: _Live, kind: str, since: float, client_gone: asyncio.Future[Any] | None
    ) -> bool:
        """Waits while a fault of `kind` holds this exchange; False if the client left meanwhile."""
        while True:
            faults = self._active(kind, live)
            if not faults:
                return True
            self._hit(live, faults)
            bounds = [f.seconds for f in faults]
            timeout = None
            if all(b is not None for b in bounds):
                timeout = since + max(b for b in bounds if b is not None) - time.monotonic()
                if timeout <= 0:
                    return True
            assert self._changed is not None
            changed = asyncio.ensure_future(self._changed.wait())
            waiting: set[asyncio.Future[Any]] = {changed}
            if client_gone is not None:
                waiting.add(client_gone)
            try:
                await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if client_gone is not None and client_gone.done():
                return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ssl.SSLError):
            writer.transport.abort()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        headers = tuple(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)
        )
        request = Request(method, target, headers)
        record = Exchange(next(self._ids), request, time.monotonic())
        self._records.append(record)
        live = _Live(record, writer)
        self._live[record.id] = live
        try:
            await self._exchange(live, reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            if record.outcome == "open":
                record.outcome = "dropped" if live.dropped else "failed"
            log.debug("exchange %s %s ended: %r", record.id, request, exc)
        finally:
            self._live.pop(record.id, None)
            if record.outcome == "open":
                record.outcome = "dropped" if live.dropped else "done"
            record.finished = time.monotonic()
            for w in (writer, live.upstream):
                if w is None:
                    continue
                if live.dropped:
                    w.transport.abort()
                else:
                    w.close()

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return bytes(body)
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(headers.get("content-length") or 0)
        return await reader.readexactly(length) if length else b""

    async def _exchange(
        self, live: _Live, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        record, request = live.record, live.record.request
        lower = {k.lower(): v for k, v in request.headers}
        body = await self._read_body(reader, lower)
        refusing = self._active("refuse", live)
        if refusing:
            self._hit(live, refusing)
            record.outcome = "refused"
            return
        # With Connection: close the client sends nothing more: a read that ends means it gave up.
        client_gone = asyncio.ensure_future(_until_eof(reader))
        try:
            if not await self._wait_while(live, "hold_request", record.received, client_gone):
                record.outcome = "dropped" if live.dropped else "abandoned"
                return
            if live.dropped:
                return
            up_reader, up_writer = await asyncio.open_connection(
                *self._target, ssl=self._upstream_ctx, server_hostname=self._target[0]
            )
            live.upstream = up_writer
            out = [f"{request.method} {request.target} HTTP/1.1"]
            out += [f"{k}: {v}" for k, v in request.headers if k.lower() not in _DROPPED_HEADERS]
            if body or request.method in WRITE_METHODS:
                out.append(f"Content-Length: {len(body)}")
            out.append("Connection: close")
            up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
            await up_writer.drain()
            record.forwarded = time.monotonic()
            if request.watch:
                await self._stream(live, up_reader, writer, client_gone)
            else:
                await self._answer(live, up_reader, writer, client_gone)
        finally:
            client_gone.cancel()

    async def _answer(
        self,
        live: _Live,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_gone: asyncio.Future[Any],
    ) -> None:
        # Read the whole answer even if the client has left: a write that landed must be on record.
        raw = await up_reader.read()
        live.record.status, live.record.resource_version = _parse_response(raw)
        answered_at = time.monotonic()
        for kind in ("hold_response", "stall"):
            if not await self._wait_while(live, kind, answered_at, client_gone):
                live.record.outcome = "unanswered"
                return
        if live.dropped:
            return
        writer.write(raw)
        await writer.drain()

    async def _stream(
        self,
        live: _Live,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_gone: asyncio.Future[Any],
    ) -> None:
        first = True
        since = time.monotonic()
        while True:
            read = asyncio.ensure_future(up_reader.read(CHUNK))
            await asyncio.wait({read, client_gone}, return_when=asyncio.FIRST_COMPLETED)
            if client_gone.done() and not read.done():
                read.cancel()
                live.record.outcome = "unanswered" if first else "done"
                return
            data = read.result()
            if first and data:
                with contextlib.suppress(IndexError, ValueError):
                    live.record.status = int(data.split(b"\r\n", 1)[0].split()[1])
                first = False
            # A stall holds the data and the end of the stream alike: the client sees silence.
            for kind in ("hold_response", "stall"):
                if not await self._wait_while(live, kind, since, client_gone):
                    live.record.outcome = "unanswered"
                    return
            if live.dropped:
                return
            if not data:
                return
            writer.write(data)
            await writer.drain()
