"""A thin async Kubernetes client: raw requests over one aiohttp session, orjson for bodies.

Responses are plain dicts and watch streams raw lines. kubernetes_asyncio's generated ApiClient is not used:
its per-request serialisation walk (``sanitize_for_serialization``, ``json.dumps``) cost about a quarter of
the controller's CPU at scale, and importing ``kubernetes_asyncio.client`` alone took half the process start.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import orjson

from controller.kube.credentials import Credentials, NoCredentials, StaticCredentials
from controller.kube.kubeconfig import Connection, in_cluster, load_kubeconfig
from controller.kube.proxy import proxy_for
from controller.kube.tls import pem_paths

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Connecting to a loopback or in-cluster API server never legitimately takes long; a stuck
# connect must fail fast so the caller's backoff takes over.
CONNECT_TIMEOUT = 10.0
# Concurrent connections to the API server (kubernetes_asyncio's default pool size, kept).
MAX_CONNECTIONS = 100


class ApiError(Exception):
    """A non-2xx answer from the API server, with its decoded Status body when there is one."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body


QueryValue = str | int | float | bool | None


class RequestMetrics(Protocol):
    def api_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        """One API call: verb (get, list, watch, create, ...), resource[/subresource], code or <error>."""


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_labels(method: str, path: str, query: Mapping[str, QueryValue] | None, *, watch: bool) -> tuple[
    str, str
]:
    """(verb, resource) of a request as the API server names them: /api/v1/namespaces/a/services/b/status
    with PUT is (update, services/status); a GET without a name is a list, or a watch."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return method.lower(), "<nonresource>"
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # namespaced: drop namespaces/<ns>
    if not rest:
        return method.lower(), "<discovery>"
    resource = rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"
    named = len(rest) >= 2
    if method == "GET":
        if watch or (query or {}).get("watch") in (True, "true", "1"):
            verb = "watch"
        else:
            verb = "get" if named else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS.get(method, method.lower())
    return verb, resource


def _query_tuples(query: Mapping[str, QueryValue] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in (query or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return out


def _decode(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {"message": data[:1000].decode("utf-8", "replace")}
    return decoded if isinstance(decoded, dict) else {"value": decoded}


def _api_error(status: int, http_reason: str | None, data: bytes) -> ApiError:
    body = _decode(data)
    reason = str(body.get("reason") or http_reason or "")
    message = str(body.get("message") or "")
    return ApiError(status, reason, message, body)


def ssl_context(
    ca_path: str | None, cert_path: str | None, key_path: str | None, *, verify: bool
) -> ssl.SSLContext:
    """The TLS settings client-go uses: the given CA (else the system's), an optional client certificate,
    and, only when the kubeconfig says insecure-skip-tls-verify, no verification at all."""
    context = ssl.create_default_context(cafile=ca_path)
    if cert_path:
        context.load_cert_chain(cert_path, keyfile=key_path)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeClient:
    """Requests to one API server over one aiohttp session (keep-alive, up to ``MAX_CONNECTIONS``).

    The session is opened on the first request, inside the running event loop. Proxy settings are
    resolved once, from the kubeconfig's proxy-url or else the environment with client-go's NO_PROXY
    rules (proxy.py); the session itself never reads the environment (``trust_env=False``): aiohttp would
    otherwise look up proxies and ~/.netrc through the thread pool on every request.
    """

    def __init__(
        self,
        host: str,
        *,
        tls: ssl.SSLContext | None = None,
        tls_server_name: str | None = None,
        proxy: str | None = None,
        credentials: Credentials | None = None,
        metrics: RequestMetrics | None = None,
        user_agent: str = "stablelb-controller",
    ) -> None:
        self._host = host.rstrip("/")
        self._tls = tls if tls is not None else ssl.create_default_context()
        self._server_hostname = tls_server_name
        self.proxy = proxy if proxy is not None else proxy_for(self._host, os.environ)
        self.user_agent = user_agent
        self.credentials: Credentials = credentials or NoCredentials()
        # Set once the process's Metrics exist; every request is then counted and timed.
        self.metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def from_kubeconfig(cls, path: str | None, *, metrics: RequestMetrics | None = None) -> KubeClient:
        """Load a kubeconfig file, or the in-cluster service account when ``path`` is None."""
        conn = in_cluster() if path is None else load_kubeconfig(path)
        return cls.from_connection(conn, metrics=metrics)

    @classmethod
    def from_connection(cls, conn: Connection, *, metrics: RequestMetrics | None = None) -> KubeClient:
        # ssl loads certificates only by path: the PEM paths need to live only while the context is built.
        with pem_paths([conn.ca_pem, conn.client_cert_pem, conn.client_key_pem]) as (ca, cert, key):
            tls = ssl_context(ca, cert, key, verify=not conn.insecure_skip_tls_verify)
        return cls(
            conn.server, tls=tls, tls_server_name=conn.tls_server_name, proxy=conn.proxy_url,
            credentials=conn.credentials, metrics=metrics,
        )

    @classmethod
    def for_host(cls, host: str, *, token: str | None = None, verify_ssl: bool = True) -> KubeClient:
        credentials = StaticCredentials(f"Bearer {token}") if token is not None else None
        return cls(host, tls=ssl_context(None, None, None, verify=verify_ssl), credentials=credentials)

    @property
    def host(self) -> str:
        return self._host

    def session(self) -> aiohttp.ClientSession:
        """The shared session, opened on first use (it must be created inside the event loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=self._tls),
                trust_env=False,
                # One watch line holds a whole object: a large one must not overflow the read buffer.
                read_bufsize=2**21,
                # Uncompressed: the API server gzips watch streams and large lists for clients that accept
                # it, which costs CPU on both ends for every event, while a controller that caches only
                # LoadBalancer Services moves little data.
                headers={
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                    "User-Agent": self.user_agent,
                },
            )
        return self._session

    def _url(self, path: str, query: Mapping[str, QueryValue] | None) -> str:
        if not query:
            return self._host + path
        return f"{self._host}{path}?{urlencode(_query_tuples(query))}"

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, QueryValue] | None,
        body: Any,
        content_type: str,
        client_timeout: aiohttp.ClientTimeout,
        watch: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send one request; a 401 to a token that can be refreshed is retried once with a fresh one."""
        data = None if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        url = self._url(path, query)
        auth = await self.credentials.header()
        resp = await self._send_once(
            method, path, url, query, data, content_type, client_timeout, auth, watch
        )
        if resp.status == 401 and auth is not None and self.credentials.invalidate(auth):
            fresh = await self.credentials.header()
            if fresh != auth:
                log.info("the API server rejected our token (401); retrying with a fresh one")
                resp.release()
                resp = await self._send_once(
                    method, path, url, query, data, content_type, client_timeout, fresh, watch
                )
        return resp

    async def _send_once(
        self,
        method: str,
        path: str,
        url: str,
        query: Mapping[str, QueryValue] | None,
        data: bytes | None,
        content_type: str,
        client_timeout: aiohttp.ClientTimeout,
        auth: str | None,
        watch: bool,
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": content_type}
        if auth is not None:
            headers["Authorization"] = auth
        started = time.perf_counter()
        code = "<error>"
        try:
            resp = await self.session().request(
                method, url, data=data, headers=headers, timeout=client_timeout, proxy=self.proxy,
                server_hostname=self._server_hostname,
            )
            code = str(resp.status)
            return resp
        finally:
            if self.metrics is not None:
                verb, resource = request_labels(method, path, query, watch=watch)
                self.metrics.api_request(verb, resource, code, time.perf_counter() - started)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, QueryValue] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        # A per-call bound is part of the contract (leader election passes its renew deadline).
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """One request; returns the decoded JSON body or raises ``ApiError``.

        Transport failures surface as ``aiohttp.ClientError`` or ``TimeoutError``.
        """
        client_timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, CONNECT_TIMEOUT))
        resp = await self._send(
            method, path, query=query, body=body, content_type=content_type, client_timeout=client_timeout
        )
        async with resp:
            data = await resp.read()
            if not 200 <= resp.status <= 299:
                raise _api_error(resp.status, resp.reason, data)
        return _decode(data)

    async def stream_lines(
        self,
        path: str,
        *,
        query: Mapping[str, QueryValue] | None = None,
        read_timeout: float,
    ) -> AsyncGenerator[bytes, None]:
        """Yield the newline-separated lines of a long-lived GET (a watch).

        ``read_timeout`` bounds the silence between two reads: without it a connection that
        silently died would hang forever. A trailing partial line (the connection dropped in the
        middle of an event) is never yielded; the iterator ends or raises instead.
        """
        client_timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=read_timeout
        )
        resp = await self._send(
            "GET", path, query=query, body=None, content_type="application/json",
            client_timeout=client_timeout, watch=True,
        )
        async with resp:
            if resp.status != 200:
                raise _api_error(resp.status, resp.reason, await resp.read())
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                if b"\n" not in buf:
                    continue
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
            if buf.strip():
                log.debug("watch stream ended inside a line (%d bytes dropped)", len(buf))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
