"""A thin async Kubernetes client: kubernetes_asyncio's ApiClient as transport, orjson for bodies.

The generated model classes are never used: responses are plain dicts, watch streams raw lines.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

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
    benchmark. The result cannot change during the process, so it is computed here once.
    """
    rest = api_client.rest_client
    if rest.proxy is None:
        target = urlsplit(str(api_client.configuration.host))
        proxy = urllib.request.getproxies().get(target.scheme)
        if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
            rest.proxy = proxy
    # aiohttp has no public setter; the attribute has been stable across aiohttp 3.x.
    rest.pool_manager._trust_env = False


class KubeClient:
    def __init__(self, api_client: ApiClient, *, user_agent: str = "stablelb-controller") -> None:
        self._api = api_client
        self._api.user_agent = user_agent
        _read_environment_once(api_client)

    @classmethod
    async def from_kubeconfig(cls, path: str | None) -> KubeClient:
        """Load a kubeconfig file, or the in-cluster service account when ``path`` is None."""
        cfg = Configuration()
        if path is None:
            kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            await kube_config.load_kube_config(
                config_file=path, client_configuration=cfg, persist_config=False
            )
        return cls(ApiClient(configuration=cfg))

    @classmethod
    def for_host(cls, host: str, *, token: str | None = None, verify_ssl: bool = True) -> KubeClient:
        cfg = Configuration(host=host)
        cfg.verify_ssl = verify_ssl
        if token is not None:
            cfg.api_key = {"BearerToken": token}
            cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return cls(ApiClient(configuration=cfg))

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
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        resp: aiohttp.ClientResponse = await self._api.call_api(
            path,
            method,
            query_params=_query_tuples(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=client_timeout,
        )
        return resp

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
            client_timeout=client_timeout,
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
