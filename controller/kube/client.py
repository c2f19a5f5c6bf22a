"""A thin async Kubernetes client: kubernetes_asyncio's ApiClient as transport, orjson for bodies.

The generated model classes are never used: responses are plain dicts, watch streams raw lines.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient, Configuration

from controller.kube.credentials import Credentials, NoCredentials, StaticCredentials
from controller.kube.kubeconfig import Connection, in_cluster, load_kubeconfig
from controller.kube.proxy import proxy_for
from controller.kube.tls import pem_paths

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
# Connecting to a loopback or in-cluster API server never legitimately takes long; a stuck
# connect must fail fast so the caller's backoff takes over.
CONNECT_TIMEOUT = 10.0


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


def _read_environment_once(api_client: ApiClient) -> None:
    """Resolve proxy settings from the environment once, not on every request.

    kubernetes_asyncio opens its session with trust_env=True, so aiohttp looks up proxies and ~/.netrc
    (through the thread pool) on each request: about a fifth of the controller's CPU in the scale
    benchmark. The result cannot change during the process, so it is computed here once, with client-go's
    NO_PROXY rules (CIDR ranges included; see proxy.py). A kubeconfig proxy-url, already set, wins.
    """
    rest = api_client.rest_client
    if rest.proxy is None:
        rest.proxy = proxy_for(str(api_client.configuration.host), os.environ)
    # aiohttp has no public setter; the attribute has been stable across aiohttp 3.x.
    rest.pool_manager._trust_env = False


class KubeClient:
    def __init__(
        self,
        api_client: ApiClient,
        *,
        credentials: Credentials | None = None,
        metrics: RequestMetrics | None = None,
        user_agent: str = "stablelb-controller",
    ) -> None:
        self._api = api_client
        self._api.user_agent = user_agent
        self.credentials: Credentials = credentials or NoCredentials()
        # Set once the process's Metrics exist; every request is then counted and timed.
        self.metrics = metrics
        _read_environment_once(api_client)

    @classmethod
    async def from_kubeconfig(cls, path: str | None, *, metrics: RequestMetrics | None = None) -> KubeClient:
        """Load a kubeconfig file, or the in-cluster service account when ``path`` is None."""
        conn = in_cluster() if path is None else load_kubeconfig(path)
        return cls.from_connection(conn, metrics=metrics)

    @classmethod
    def from_connection(cls, conn: Connection, *, metrics: RequestMetrics | None = None) -> KubeClient:
        cfg = Configuration(host=conn.server)
        cfg.verify_ssl = not conn.insecure_skip_tls_verify
        cfg.tls_server_name = conn.tls_server_name
        cfg.proxy = conn.proxy_url
        # The SSL context is built inside ApiClient(): the PEM paths need to live only that long.
        with pem_paths([conn.ca_pem, conn.client_cert_pem, conn.client_key_pem]) as (ca, cert, key):
            cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file = ca, cert, key
            api = ApiClient(configuration=cfg)
        cfg.ssl_ca_cert = cfg.cert_file = cfg.key_file = None
        return cls(api, credentials=conn.credentials, metrics=metrics)

    @classmethod
    def for_host(cls, host: str, *, token: str | None = None, verify_ssl: bool = True) -> KubeClient:
        cfg = Configuration(host=host)
        cfg.verify_ssl = verify_ssl
        credentials = StaticCredentials(f"Bearer {token}") if token is not None else None
        return cls(ApiClient(configuration=cfg), credentials=credentials)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

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
        auth = await self.credentials.header()
        resp = await self._send_once(method, path, query, body, content_type, client_timeout, auth, watch)
        if resp.status == 401 and auth is not None and self.credentials.invalidate(auth):
            fresh = await self.credentials.header()
            if fresh != auth:
                log.info("the API server rejected our token (401); retrying with a fresh one")
                resp.release()
                resp = await self._send_once(
                    method, path, query, body, content_type, client_timeout, fresh, watch
                )
        return resp

    async def _send_once(
        self,
        method: str,
        path: str,
        query: Mapping[str, QueryValue] | None,
        body: Any,
        content_type: str,
        client_timeout: aiohttp.ClientTimeout,
        auth: str | None,
        watch: bool,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if auth is not None:
            headers["Authorization"] = auth
        started = time.perf_counter()
        code = "<error>"
        try:
            resp: aiohttp.ClientResponse = await self._api.call_api(
                path,
                method,
                query_params=_query_tuples(query),
                header_params=headers,
                body=body,
                auth_settings=[],
                _preload_content=False,
                _request_timeout=client_timeout,
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
        await self._api.close()
