"""NO_PROXY as client-go reads it (Go's http.ProxyFromEnvironment), CIDR ranges included."""

from __future__ import annotations

import asyncio

import pytest

from controller.kube.client import KubeClient
from controller.kube.proxy import proxy_for
from e2e.harness import LocalCluster

PROXY = "http://127.0.0.1:3128"


@pytest.mark.parametrize(
    ("url", "no_proxy", "proxied"),
    [
        # The Service network as operators write it: the in-cluster API address is inside.
        ("https://10.96.0.1:443", "10.96.0.0/12", False),
        ("https://10.111.255.254", "10.96.0.0/12", False),
        ("https://10.112.0.1", "10.96.0.0/12", True),  # just past the /12
        ("https://[fd00:10:96::1]:6443", "fd00:10:96::/112", False),
        ("https://10.0.0.7:6443", "10.0.0.7", False),
        ("https://10.0.0.7:6443", "10.0.0.7:6443", False),
        ("https://10.0.0.7:6443", "10.0.0.7:443", True),
        ("https://api.example.com", "example.com", False),  # a domain matches itself and its subdomains
        ("https://example.com", "example.com", False),
        ("https://example.com", ".example.com", True),  # a leading dot: subdomains only
        ("https://api.example.com", "*.example.com", False),
        ("https://notexample.com", "example.com", True),
        ("https://anything:6443", "*", False),
        ("https://127.0.0.1:6443", "", False),  # loopback is never proxied
        ("https://localhost:6443", "", False),
        ("https://[::1]:6443", "", False),
        ("https://10.0.0.1", " 192.168.0.0/16 , 10.0.0.0/8 ", False),
        ("https://10.0.0.1", "not-a-cidr/99", True),
    ],
)
def test_no_proxy_rules(url: str, no_proxy: str, proxied: bool) -> None:
    env = {"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy}
    assert proxy_for(url, env) == (PROXY if proxied else None)


def test_scheme_picks_the_variable_and_lower_case_works() -> None:
    assert proxy_for("http://10.0.0.1", {"HTTPS_PROXY": PROXY}) is None
    assert proxy_for("http://10.0.0.1", {"http_proxy": "proxy:8080"}) == "http://proxy:8080"
    assert proxy_for("https://10.0.0.1", {"https_proxy": PROXY, "no_proxy": "10.0.0.0/8"}) is None
    assert proxy_for("https://10.0.0.1", {}) is None


async def test_client_bypasses_the_proxy_for_a_cidr_in_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", "10.96.0.0/12")
    monkeypatch.delenv("no_proxy", raising=False)
    inside = KubeClient.for_host("https://10.96.0.1:443", token="t")
    outside = KubeClient.for_host("https://10.112.0.1:443", token="t")
    try:
        assert inside.proxy is None
        assert outside.proxy == PROXY
    finally:
        await inside.close()
        await outside.close()


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that tunnels every CONNECT to one fixed target (the local API server)
    and records what it was asked for, standing in for a corporate proxy in front of a remote cluster."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head.split(b"\r\n", 1)[0].decode())
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.mark.cluster
async def test_requests_outside_no_proxy_really_go_through_the_proxy(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = cluster.server.removeprefix("https://").rsplit(":", 1)
    proxy = ConnectProxy(host, int(port))
    monkeypatch.setenv("HTTPS_PROXY", await proxy.start())
    monkeypatch.setenv("NO_PROXY", "10.96.0.0/12")
    monkeypatch.delenv("no_proxy", raising=False)
    # 10.112.0.1 is just outside the /12: only the proxy can reach "it" (it tunnels to the local API server).
    client = KubeClient.for_host("https://10.112.0.1:6443", token=cluster.token, verify_ssl=False)
    try:
        namespaces = await client.request("GET", "/api/v1/namespaces")
        assert namespaces["kind"] == "NamespaceList"
        assert proxy.requests == ["CONNECT 10.112.0.1:6443 HTTP/1.1"]
    finally:
        await client.close()
        await proxy.stop()
