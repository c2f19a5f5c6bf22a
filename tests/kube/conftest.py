from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from controller.kube.backoff import Backoff
from controller.kube.client import KubeClient
from e2e.harness.cluster import LocalCluster

from .fakeapi import FakeApiServer


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def fake_client(fake_api: FakeApiServer) -> AsyncIterator[KubeClient]:
    client = KubeClient.for_host(fake_api.url)
    yield client
    await client.close()


@pytest.fixture
def fast_backoff() -> Backoff:
    return Backoff(initial=0.01, cap=0.05)


@pytest.fixture
async def admin(cluster: LocalCluster) -> AsyncIterator[KubeClient]:
    """A client with the cluster admin's kubeconfig (the real local API server)."""
    client = await KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield client
    await client.close()
