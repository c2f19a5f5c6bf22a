"""The raw request layer (controller.kube.client): bodies, queries, error mapping, the 401 retry and the
request metrics, against the real kube-apiserver; a scripted aiohttp server only for what the real one will
not do on demand (reject a token once, answer a non-JSON error)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp import web

from controller.kube.client import ApiError, KubeClient
from controller.kube.resources import NAMESPACES, SERVICES


class Recorded:
    """A RequestMetrics that keeps every (verb, resource, code) it is told about."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def api_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append((verb, resource, code))


def service(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels,
                     "annotations": {"note": "naïve ☃ \"quoted\""}},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


@pytest.mark.cluster
async def test_bodies_queries_and_errors_against_the_api_server(admin: KubeClient) -> None:
    metrics = Recorded()
    admin.metrics = metrics
    ns = f"raw-{uuid.uuid4().hex[:8]}"
    await admin.request("POST", NAMESPACES.path(), body={"metadata": {"name": ns}})
    created = await admin.request("POST", SERVICES.path(namespace=ns), body=service("a", ns, tier="web"))
    await admin.request("POST", SERVICES.path(namespace=ns), body=service("b", ns, tier="db"))
    # Non-ASCII text and quotes survive the orjson round trip.
    assert created["metadata"]["annotations"]["note"] == "naïve ☃ \"quoted\""

    # Selector values carry '=', ',' and '!': they must reach the server as one query value each.
    picked = await admin.request(
        "GET", SERVICES.path(namespace=ns), query={"labelSelector": "tier!=db,tier", "limit": 10, "x": None}
    )
    assert [s["metadata"]["name"] for s in picked["items"]] == ["a"]
    by_field = await admin.request(
        "GET", SERVICES.path(namespace=ns), query={"fieldSelector": "metadata.name=b"}
    )
    assert [s["metadata"]["name"] for s in by_field["items"]] == ["b"]

    patched = await admin.request(
        "PATCH", SERVICES.path(namespace=ns, name="a"), body={"metadata": {"labels": {"tier": "edge"}}},
        content_type="application/merge-patch+json",
    )
    assert patched["metadata"]["labels"] == {"tier": "edge"}

    with pytest.raises(ApiError) as missing:
        await admin.request("GET", SERVICES.path(namespace=ns, name="nope"))
    assert (missing.value.status, missing.value.reason) == (404, "NotFound")
    assert "nope" in missing.value.message and missing.value.body["kind"] == "Status"
    with pytest.raises(ApiError) as twice:
        await admin.request("POST", SERVICES.path(namespace=ns), body=service("a", ns))
    assert (twice.value.status, twice.value.reason) == (409, "AlreadyExists")
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {}}
    with pytest.raises(ApiError) as conflict:
        await admin.request("PATCH", SERVICES.path(namespace=ns, name="a"), body=stale,
                            content_type="application/merge-patch+json")
    assert (conflict.value.status, conflict.value.reason) == (409, "Conflict")

    await admin.request("DELETE", NAMESPACES.path(name=ns))
    assert metrics.calls == [
        ("create", "namespaces", "201"),
        ("create", "services", "201"),
        ("create", "services", "201"),
        ("list", "services", "200"),
        ("list", "services", "200"),
        ("patch", "services", "200"),
        ("get", "services", "404"),
        ("create", "services", "409"),
        ("patch", "services", "409"),
        ("delete", "namespaces", "200"),
    ]


class RotatingToken:
    """A refreshable credential: ``t1`` until the server rejects it, then ``t2``."""

    def __init__(self) -> None:
        self.token = "t1"

    async def header(self) -> str | None:
        return f"Bearer {self.token}"

    def invalidate(self, header: str) -> bool:
        if header == f"Bearer {self.token}" and self.token == "t1":
            self.token = "t2"
            return True
        return False


class Scripted:
    """Answers each request with the next scripted (status, body bytes, content type); records requests."""

    def __init__(self, answers: list[tuple[int, bytes, str]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, str | None, bytes]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization"),
                          await request.read()))
        status, body, content_type = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return web.Response(status=status, body=body, content_type=content_type)

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


UNAUTHORIZED = (401, b'{"kind":"Status","code":401,"reason":"Unauthorized","message":"Unauthorized"}',
                "application/json")


async def failed_get(client: KubeClient) -> ApiError:
    """The ApiError a GET of /api/v1/services raises (the client is closed afterwards)."""
    try:
        with pytest.raises(ApiError) as err:
            await client.request("GET", "/api/v1/services")
    finally:
        await client.close()
    return err.value


async def test_a_401_is_retried_once_with_the_refreshed_token_and_the_same_body() -> None:
    async with Scripted([UNAUTHORIZED, (200, b'{"ok": true}', "application/json")]) as server:
        metrics = Recorded()
        client = KubeClient(server.url, credentials=RotatingToken(), metrics=metrics)
        try:
            got = await client.request("PATCH", "/api/v1/namespaces/a/services/b/status",
                                       query={"fieldManager": "m"}, body={"status": {"x": 1}})
        finally:
            await client.close()
    assert got == {"ok": True}
    path = "/api/v1/namespaces/a/services/b/status?fieldManager=m"
    assert server.seen == [
        ("PATCH", path, "Bearer t1", b'{"status":{"x":1}}'),
        ("PATCH", path, "Bearer t2", b'{"status":{"x":1}}'),
    ]
    # Both attempts are counted, each with its own answer.
    assert metrics.calls == [("patch", "services/status", "401"), ("patch", "services/status", "200")]


async def test_a_second_401_is_an_error_not_a_loop() -> None:
    async with Scripted([UNAUTHORIZED]) as server:
        error = await failed_get(KubeClient(server.url, credentials=RotatingToken()))
    assert (error.status, error.reason) == (401, "Unauthorized")
    assert [auth for _, _, auth, _ in server.seen] == ["Bearer t1", "Bearer t2"]


async def test_an_error_without_a_status_body_keeps_the_text() -> None:
    async with Scripted([(502, b"upstream <b>gone</b>", "text/html")]) as server:
        error = await failed_get(KubeClient(server.url))
    assert (error.status, error.reason) == (502, "Bad Gateway")
    assert error.message == "upstream <b>gone</b>"
    assert server.seen[0][2] is None  # no credentials: no Authorization header


async def test_a_refused_connection_is_counted_as_an_error() -> None:
    metrics = Recorded()
    client = KubeClient("http://127.0.0.1:1", metrics=metrics)
    try:
        with pytest.raises(OSError):
            await client.request("GET", "/api/v1/namespaces/a/services/b", timeout=5)
    finally:
        await client.close()
    assert metrics.calls == [("get", "services", "<error>")]
