from __future__ import annotations

import pytest

from controller.kube.client import KubeClient


async def test_proxy_from_environment_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = KubeClient.for_host("https://10.0.0.1:6443", token="t")
    try:
        assert client.proxy == "http://127.0.0.1:3128"
        assert client.session().trust_env is False  # no per-request proxy/.netrc lookups
    finally:
        await client.close()


async def test_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = KubeClient.for_host("https://127.0.0.1:6443", token="t")
    try:
        assert client.proxy is None
    finally:
        await client.close()
